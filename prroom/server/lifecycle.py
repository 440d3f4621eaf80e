"""A connection's life on the server side: CONNECT (identify, cap, restore), disconnect
(leave every room, keep what recovery may restore) and the goodbye at shutdown.

:class:`ConnectionLifecycle` is the part of :class:`~prroom.server.events.RoomEvents` that
handles python-socketio's ``connect`` and ``disconnect`` events; the client events are in
:mod:`prroom.server.events`.  :class:`Caps` are the per-connection bounds both apply.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

from socketio.exceptions import ConnectionRefusedError

from prroom.core import protocol
from prroom.core.config import DEFAULTS, Settings
from prroom.core.identity import Identity, IdentityPolicy
from prroom.core.limits import SocketLimiter
from prroom.core.presence import Presence
from prroom.core.protocol import ErrorCode, ProtocolError
from prroom.core.rooms import RoomRegistry
from prroom.internals import socketio_hooks
from prroom.internals.types import SocketIOServer
from prroom.server.broadcaster import Broadcaster
from prroom.server.identities import IdentityControl
from prroom.server.metrics import Metrics
from prroom.server.recovery import SHUTDOWN_REASON, SessionRecovery

logger = logging.getLogger("prroom")


class Caps(NamedTuple):
    """Per-connection caps (see the ``PRROOM_MAX_*`` settings; defaults are theirs)."""

    max_rooms_per_socket: int = DEFAULTS["PRROOM_MAX_ROOMS_PER_SOCKET"]
    max_connections_per_identity: int = DEFAULTS["PRROOM_MAX_CONNECTIONS_PER_IDENTITY"]
    max_queued_packets: int = DEFAULTS["PRROOM_MAX_QUEUED_PACKETS"]
    max_attachments: int = DEFAULTS["PRROOM_MAX_ATTACHMENTS"]
    connect_timeout: float = DEFAULTS["PRROOM_CONNECT_TIMEOUT"]
    max_queued_bytes: int = DEFAULTS["PRROOM_MAX_QUEUED_BYTES"]
    max_sessions_per_address: int = DEFAULTS["PRROOM_MAX_SESSIONS_PER_ADDRESS"]
    trusted_proxies: Tuple[str, ...] = DEFAULTS["PRROOM_TRUSTED_PROXIES"]

    @classmethod
    def of(cls, settings: Settings) -> "Caps":
        """The caps a server with ``settings`` applies."""
        return cls(settings.max_rooms_per_socket, settings.max_connections_per_identity,
                   settings.max_queued_packets, settings.max_attachments,
                   settings.connect_timeout, settings.max_queued_bytes,
                   settings.max_sessions_per_address, settings.trusted_proxies)


class ConnectionLifecycle:
    """The connect and disconnect handlers of :class:`~prroom.server.events.RoomEvents`."""

    server: SocketIOServer
    namespace: str
    registry: RoomRegistry
    identity: IdentityPolicy
    limiter: SocketLimiter
    caps: Caps
    presence: Presence
    metrics: Metrics
    broadcaster: Broadcaster
    identities: IdentityControl
    resume: Optional[SessionRecovery]
    on_connected: Optional[Callable[[], None]]
    #: the identity of each connection that has one (sid -> identity)
    identified: Dict[str, Identity]
    _connections_of: Dict[str, int]  # identity name -> open connections
    connected: int
    stopping: bool

    def on_connect(self, sid: str, environ: Dict[str, Any], auth: Any = None) -> None:
        """Identify the connection; refuse it (``connect_error``) if it may not connect."""
        address = environ.get("HTTP_X_FORWARDED_FOR") or environ.get("REMOTE_ADDR")
        try:
            identity = self._authenticate(sid, environ, auth)
            if self.resume is not None:  # its own session still open here: replace it
                self.resume.take_over(identity, auth)
            if identity is not None:
                self._count_connection(identity)
        except ProtocolError as err:
            self.metrics.record_connection(err.code)
            logger.info("refused connection sid=%s addr=%s code=%s", sid, address, err.code)
            # the client sees err.message as the connect_error's message, the dict as .data
            raise ConnectionRefusedError(err.message, err.to_dict()) from None
        if identity is not None:
            self.identified[sid] = identity
            self.identities.connected(sid, identity)
        self.connected += 1
        self.metrics.record_connection("accepted")
        if self.on_connected is not None:
            self.on_connected()
        recovered = self.resume.restore(sid, identity, auth) if self.resume else None
        logger.info("connect sid=%s addr=%s identity=%s%s", sid, address,
                    identity.name if identity else "-",
                    "" if recovered is None else f" recovered={str(recovered).lower()}")

    def _count_connection(self, identity: Identity) -> None:
        count = self._connections_of.get(identity.name, 0)
        if count < self.caps.max_connections_per_identity:
            count = self.identities.connection_opened(identity.name, count)
        if count >= self.caps.max_connections_per_identity:
            raise ProtocolError(ErrorCode.TOO_MANY_CONNECTIONS,
                                f"{identity.name!r} already has {count} connections; close "
                                "one first", limit=self.caps.max_connections_per_identity)
        self._connections_of[identity.name] = self._connections_of.get(identity.name, 0) + 1

    def on_disconnect(self, sid: str, reason: Any = None) -> None:
        """Leave every room; members stop seeing the socket as typing at once."""
        identity = self.identified.pop(sid, None)
        if identity is not None:
            self.identities.disconnected(sid, identity.name)
            remaining = self._connections_of[identity.name] - 1
            if remaining:
                self._connections_of[identity.name] = remaining
            else:
                del self._connections_of[identity.name]
        self.connected -= 1
        if self.stopping:  # closed by shutdown(): its client reconnects elsewhere
            reason = SHUTDOWN_REASON
        kept = self.resume.keep(sid, identity, reason, self.registry.rooms_of(sid)) \
            if self.resume else None
        if kept is None:
            self.limiter.forget(sid)
        departures = self.registry.disconnect(sid)
        for departure in departures:
            if departure.was_typing:
                self.broadcaster.announce(protocol.STOP_TYPING, departure.pull_request_id,
                              departure.username, skip_sid=sid)
        held = kept is not None and self.resume is not None and \
            self.resume.hold_departures(kept, departures)
        if not held:
            for departure in departures:
                self.broadcaster.presence_left(departure.pull_request_id, departure.username,
                                   skip_sid=sid)
        logger.info("disconnect sid=%s identity=%s reason=%s rooms=%s", sid,
                    identity.name if identity else "-", reason or "-",
                    ",".join(str(d.pull_request_id) for d in departures) or "-")

    def _authenticate(self, sid: str, environ: Dict[str, Any], auth: Any) -> Any:
        """The identity policy's answer; an exception from it (the host's authenticator)
        is the host's error: logged with its traceback, and this CONNECT refused with
        ``authentication-error``, which the client hears once (no reconnect loop)."""
        try:
            return self.identity.authenticate(environ, auth)
        except ProtocolError:
            raise
        except Exception:
            logger.exception("the authenticator raised; refusing connection sid=%s", sid)
            raise ProtocolError(ErrorCode.AUTHENTICATION_ERROR,
                                "authentication failed on the server") from None

    def shutdown(self) -> int:
        """Say goodbye to every client of this process; return how many there were.

        Each gets ``pr-room-server-shutdown``, then its transport is closed (not a Socket.IO
        disconnect), which socket.io-client treats as a lost connection and reconnects —
        to another instance behind the load balancer.  Their disconnects run the usual
        cleanup, so the rest of the cluster hears who left at once.

        Only the first call does this (later ones return 0): a SIGTERM to the process group,
        as systemd and Kubernetes send it, reaches the worker twice (directly and from
        gunicorn's master), and clients must hear goodbye once.
        """
        if self.stopping:
            return 0
        self.stopping = True
        socketio_hooks.refuse_new_connections(self.server)  # reconnects must find another instance
        self.server.emit(protocol.SHUTDOWN, {"reconnect": True,
                                             "message": "this server is shutting down"},
                         namespace=self.namespace, ignore_queue=True)
        eio_sids = socketio_hooks.connected_eio_sids(self.server)
        for eio_sid in eio_sids:
            socketio_hooks.close_transport(self.server, eio_sid)  # runs on_disconnect
        if self.resume:
            self.resume.hand_off()
        forget = getattr(self.presence, "forget_self", None)
        if forget is not None:
            try:
                forget()
            except Exception as exc:
                logger.error("presence: could not deregister on shutdown: %s", exc)
        logger.info("shutdown: closed %d connections", len(eio_sids))
        return len(eio_sids)
