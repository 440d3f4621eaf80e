"""What happens to a connection after CONNECT because of who it is: its identity expires,
or an operator disconnects that identity everywhere.

- **Expiry.** A connection whose :class:`~prroom.core.identity.Identity` carries
  ``expires_at`` (every ``token``-mode connection: signing time + ``PRROOM_TOKEN_MAX_AGE``;
  a ``custom`` authenticator's if it sets one) gets ``pr-room-error`` ``token-expired``
  and its transport is closed as a lost connection: socket.io-client reconnects by itself,
  calling its ``auth`` callback for a fresh token, and connection state recovery (when on)
  restores its rooms and what it missed.  One heap and one sweep per process
  (:class:`~prroom.core.expiry.ExpiryQueue`, :func:`prroom.server.sweepers.start`), not a
  timer per connection.
- **Disconnect an identity.** :meth:`IdentityControl.disconnect_identity` runs on this
  process and is published to every other one through the cluster manager
  (:meth:`~prroom.cluster.managers.ClusterManager.broadcast_command`); each sends
  ``pr-room-error`` ``identity-revoked`` then a Socket.IO DISCONNECT to that identity's
  connections (socket.io-client does not reconnect after it), and in ``token`` mode refuses
  the tokens signed until then.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional, Tuple

from prroom.core import protocol
from prroom.core.expiry import ExpiryQueue
from prroom.core.identity import Identity, IdentityPolicy
from prroom.core.protocol import ErrorCode, ProtocolError
from prroom.internals import socketio_hooks
from prroom.server.broadcaster import Broadcaster

logger = logging.getLogger("prroom")

#: The cluster-wide command's name (see the manager's ``commands``).
DISCONNECT_IDENTITY = "disconnect-identity"

#: The disconnect reason of an expired connection: a lost transport's, which recovery keeps.
LOST = "transport close"

#: Seconds between two expiry sweeps: how late a connection may outlive its identity.
SWEEP_INTERVAL = 1.0


class IdentityControl:
    """Expiry and cluster-wide disconnects of one server's authenticated connections."""

    def __init__(self, broadcaster: Broadcaster, policy: IdentityPolicy,
                 identified: Dict[str, Identity], max_connections: int) -> None:
        self.broadcaster = broadcaster
        self.server = broadcaster.server
        self.namespace = broadcaster.namespace
        self.presence = broadcaster.presence
        self.policy = policy
        #: the handlers' table of authenticated connections (sid -> identity), read only
        self.identified = identified
        self.max_connections = max_connections
        self.expiries = ExpiryQueue()

    def install(self) -> None:
        """Answer the cluster-wide command on this process."""
        manager = self.server.manager
        commands = getattr(manager, "commands", None)
        if commands is not None:
            commands[DISCONNECT_IDENTITY] = self._on_command

    # -- expiry -------------------------------------------------------------------------

    def connected(self, sid: str, identity: Identity) -> None:
        """Track ``sid``'s deadline, if its identity has one."""
        if identity.expires_at is not None:
            self.expiries.add(sid, identity.expires_at)

    def disconnected(self, sid: str, name: str) -> None:
        """``sid`` (of identity ``name``) is gone: nothing to expire, one connection fewer."""
        self.expiries.discard(sid)
        count = getattr(self.presence, "count_connection", None)
        if count is not None:
            try:
                count(name, -1)
            except Exception as exc:  # the next heartbeat rewrites this process's counts
                logger.error("connection count: Redis unreachable (%s)", exc)

    # -- the cluster-wide connection cap ----------------------------------------------

    def connection_opened(self, name: str, local: int) -> int:
        """Count a new connection of ``name`` cluster-wide; return how many it had before.

        Clustered, the count lives in Redis with presence (per process, reaped with a dead
        process, rewritten after an outage); over the cap, the increment is taken back and
        the caller refuses.  With one process, or Redis unreachable (logged), the answer is
        ``local``, this process's own count: the cap then holds per process.
        """
        count = getattr(self.presence, "count_connection", None)
        if count is None:
            return local
        try:
            total: int = count(name, 1)
            if total > self.max_connections:
                count(name, -1)
        except Exception as exc:
            logger.error("connection count: Redis unreachable (%s); the cap holds per "
                         "process meanwhile", exc)
            return local
        return max(local, total - 1)

    def expire_due(self, now: Optional[float] = None) -> int:
        """Close the connections whose identity expired by ``now``; return how many."""
        closed = 0
        for sid in self.expiries.due(time.time() if now is None else now):
            identity = self.identified.get(sid)
            if identity is None:
                continue
            logger.info("closing sid=%s identity=%s: its token expired", sid, identity.name)
            self.broadcaster.to_socket(sid, protocol.ERROR, protocol.closing_event(ProtocolError(
                ErrorCode.TOKEN_EXPIRED, "this connection's token expired; reconnect with a "
                "fresh one", reconnect=True)))
            # a lost transport, not a Socket.IO disconnect: the client reconnects (with a
            # fresh token from its auth callback) and recovery, when on, keeps its session
            eio_sid = self.server.manager.eio_sid_from_sid(sid, self.namespace)
            if eio_sid is not None:
                socketio_hooks.close_transport(self.server, eio_sid, reason=LOST)
                closed += 1
        return closed

    # -- disconnecting an identity --------------------------------------------------------

    def disconnect_identity(self, name: str) -> Tuple[int, bool]:
        """Disconnect ``name`` on every process; return (connections closed on this
        process, whether the other processes were told: False with one process).

        Raises :class:`~prroom.cluster.managers.QueueUnavailable` if the publish did not
        reach the message queue (this process's connections are closed all the same).
        """
        at = time.time()
        args = {"name": name, "at": at}
        manager = self.server.manager
        broadcast = getattr(manager, "broadcast_command", None)
        if broadcast is None:  # a manager that is not prroom's: this process only
            return self.disconnect_local(name, at), False
        closed, ticket = broadcast(DISCONNECT_IDENTITY, args)
        if ticket is not None:
            ticket.wait()
        return int(closed or 0), ticket is not None

    def _on_command(self, args: Dict[str, Any]) -> int:
        name, at = args.get("name"), args.get("at")
        if not isinstance(name, str) or not isinstance(at, (int, float)):
            logger.warning("ignored a malformed %s command", DISCONNECT_IDENTITY)
            return 0
        return self.disconnect_local(name, float(at))

    def disconnect_local(self, name: str, at: float) -> int:
        """Close this process's connections of ``name``; refuse its tokens signed by ``at``."""
        revoke: Any = getattr(self.policy, "revoke", None)
        if revoke is not None:
            revoke(name, at)
        sids = [sid for sid, identity in self.identified.items() if identity.name == name]
        for sid in sids:
            self.broadcaster.to_socket(sid, protocol.ERROR, protocol.closing_event(
                ProtocolError(ErrorCode.IDENTITY_REVOKED,
                              "an operator disconnected this identity")))
            self.server.disconnect(sid, namespace=self.namespace, ignore_queue=True)
        logger.warning("disconnected identity=%s: %d connections on this process", name,
                       len(sids))
        return len(sids)


def publish_disconnect(message_queue: str, channel: str, pubsub: str, name: str) -> None:
    """From any process (``prroom disconnect-identity``): tell every process of the
    deployment on ``message_queue`` to disconnect ``name``.  Raises QueueUnavailable."""
    from prroom.cluster.managers import ClusterManager

    manager = ClusterManager.of_deployment(message_queue, channel, pubsub=pubsub,
                                           write_only=True)
    _, ticket = manager.broadcast_command(DISCONNECT_IDENTITY,
                                          {"name": name, "at": time.time()})
    if ticket is not None:
        ticket.wait()
