"""The Socket.IO handlers: parse with :mod:`protocol`, act on :mod:`rooms`, emit.

Read top to bottom, this module is the whole product.  The path of one message:
``guarded`` (rate-limit charge, outcome metrics, refusals turned into replies) →
``send_message`` (parse, the membership check ``registry.name_in``, the payload from
:mod:`prroom.core.messages`) → ``Broadcaster.broadcast_then`` (python-socketio's ``emit`` to
the room, on every process of a cluster).  Each handler returns its ack body.

What the handlers say goes through :class:`~prroom.server.broadcaster.Broadcaster` (which
also serves recovery, identity control and the sweepers); the sweepers are started by the
app's state (``on_connected``), not here.  CONNECT and disconnect are handled by
:class:`~prroom.server.lifecycle.ConnectionLifecycle`, which :class:`RoomEvents` is.

One seam a library leaves no way around: python-socketio does not tell a handler whether
the client asked for an ack, which decides how a refusal is answered (in the ack, or as a
``pr-room-error`` event).  :mod:`prroom.internals.socketio_hooks` records it around each
event; ``_refuse`` reads it with ``socketio_hooks.ack_requested()``.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from prroom.cluster.channels import QueueUnavailable
from prroom.cluster.recovery_store import FirstSend, RedisRecoveryStore
from prroom.core import protocol
from prroom.core.identity import Identity, IdentityPolicy
from prroom.core.limits import STRIKE_WINDOW, SocketLimiter
from prroom.core.messages import ChatMessage, MessageIds, chat_message, posted_message
from prroom.core.presence import MemoryPresence, Presence
from prroom.core.protocol import ErrorCode, Limits, ProtocolError, ok, room_name
from prroom.core.recovery import RoomBuffers
from prroom.core.rooms import RoomRegistry
from prroom.internals import connects, engineio_hooks, seams, session_bounds, socketio_hooks
from prroom.internals.types import SocketIOServer
from prroom.server.broadcaster import Broadcaster
from prroom.server.identities import IdentityControl
from prroom.server.lifecycle import Caps, ConnectionLifecycle
from prroom.server.metrics import Metrics
from prroom.server.recoverable import RecoverableBroadcasts
from prroom.server.recovery import (
    RECOVERABLE_EVENTS,
    RECOVERABLE_REASONS,
    SESSION_EVENT,
    SHUTDOWN_REASON,
    Recovery,
    SessionRecovery,
)

__all__ = ["RoomEvents", "Caps", "RATE_KIND", "RECOVERABLE_EVENTS", "RECOVERABLE_REASONS",
           "SESSION_EVENT", "SHUTDOWN_REASON", "Recovery", "SessionRecovery"]

logger = logging.getLogger("prroom")

Handler = Callable[[str, Any], Dict[str, Any]]

#: Which rate-limit bucket each client event spends.
RATE_KIND = {protocol.JOIN: "room", protocol.LEAVE: "room", protocol.SEND_MESSAGE: "message",
             protocol.TYPING: "typing", protocol.STOP_TYPING: "typing"}


class RoomEvents(ConnectionLifecycle):
    """prroom's event handlers for one python-socketio server and namespace."""

    def __init__(self, server: SocketIOServer, *, registry: RoomRegistry, identity: IdentityPolicy,
                 limiter: SocketLimiter, limits: Optional[Limits] = None,
                 caps: Optional[Caps] = None, presence: Optional[Presence] = None,
                 metrics: Optional[Metrics] = None, namespace: str = "/",
                 recovery: Optional[Recovery] = None,
                 recovery_store: Optional[RedisRecoveryStore] = None,
                 on_connected: Optional[Callable[[], None]] = None) -> None:
        self.server = server
        self.registry = registry
        self.identity = identity
        self.limits = limits or Limits()
        self.limiter = limiter
        self.caps = caps or Caps()
        self.presence = presence or MemoryPresence()
        self.metrics = metrics or Metrics()
        self.namespace = namespace
        # sid -> authenticated identity; anonymous sockets are not stored at all.
        #: the identity of each connection that has one (sid -> identity)
        self.identified: Dict[str, Identity] = {}
        self._connections_of: Dict[str, int] = {}  # identity name -> open connections
        self.connected = 0
        self.message_ids = MessageIds()
        #: called after each accepted connection (the app's state starts its sweepers there)
        self.on_connected = on_connected
        #: set by :meth:`shutdown`: the disconnects that follow are this server's, and
        #: recoverable (the clients reconnect to another instance)
        self.stopping = False
        self.recovery = recovery or Recovery()
        recoverable = RecoverableBroadcasts(
            server, namespace, RoomBuffers(self.recovery.window, self.recovery.buffer),
            recovery_store) if self.recovery.window else None
        #: what this server says, and to whom (prroom/server/broadcaster.py)
        self.broadcaster = Broadcaster(server, namespace, self.presence, recoverable)
        #: connection state recovery, or None when it is off (PRROOM_RECOVERY_WINDOW=0)
        self.resume: Optional[SessionRecovery] = None
        if recoverable is not None:
            self.resume = SessionRecovery(
                self.recovery, recoverable, self.broadcaster, registry=registry,
                identity=identity, limiter=limiter, metrics=self.metrics)
        #: identity expiry and cluster-wide disconnects (prroom/server/identities.py)
        self.identities = IdentityControl(self.broadcaster, identity, self.identified,
                                          self.caps.max_connections_per_identity)

    def register(self, accept_missing: Tuple[str, ...] = ()) -> None:
        """Install the handlers, keeping any connect/disconnect handler the host app had.

        prroom is a guest in the host's server: it takes only its own event names on its own
        namespace, and refuses binary payloads only for the events it handles; the server-
        wide protocol fixes (CONNECT order, namespaces, connect timeout, attachment bound,
        Engine.IO handshake and long-polling) change nothing a conforming client relies on.
        Each is a declared seam (:mod:`prroom.internals.seams`): a protection that cannot
        install raises :class:`~prroom.internals.seams.SeamRefused`, unless it is one of
        ``accept_missing``.
        """
        ns, server = self.namespace, self.server
        live = (server, server.eio)

        def seam(name: str, install: Callable[[], Any]) -> None:
            seams.apply(name, install, server=server, objects=live, accepted=accept_missing)

        seam("ack-tracking", lambda: socketio_hooks.track_ack_requests(
            server, ns, self._handler_failed))
        existing = socketio_hooks.registered_handlers(self.server, ns)
        mine: List[Callable[..., Any]] = []

        def on(event: str, handler: Callable[..., Any]) -> None:
            self.server.on(event, handler, ns)
            mine.append(handler)

        lifecycle: Tuple[Tuple[str, Callable[..., Any]], ...] = (
            ("connect", self.on_connect), ("disconnect", self.on_disconnect))
        for name, handler in lifecycle:
            host = existing.get(name) or socketio_hooks.host_class_handler(self.server, ns, name)
            on(name, _chain(host, handler))
        for event, handler in ((protocol.JOIN, self.join), (protocol.LEAVE, self.leave),
                               (protocol.SEND_MESSAGE, self.send_message),
                               (protocol.TYPING, self.typing),
                               (protocol.STOP_TYPING, self.stop_typing)):
            on(event, self._guarded(event, handler))
        if "*" not in existing:  # a host app's own catch-all wins
            on("*", socketio_hooks.host_class_first(self.server, ns, self.unknown_event))
        seam("packet-guard", lambda: socketio_hooks.guard_packets(
            server, self._protocol_violation, ns, mine, self.caps.max_attachments))
        seam("connect-handling", lambda: connects.fix_connects(
            server, self.caps.connect_timeout,
            self.resume.connect_reply if self.resume else None))
        seam("engineio-conformance", lambda: engineio_hooks.install(server))
        seam("slow-consumer-drop", lambda: socketio_hooks.can_find_slow_consumers(server))
        self.identities.install()
        seam("session-bounds", lambda: session_bounds.cap_sessions_per_address(
            server, self.caps.max_sessions_per_address,
            session_bounds.networks(self.caps.trusted_proxies))
            and session_bounds.limit_control_packets(server, SocketLimiter(
                {"control": self.limiter.rate("room")}, self.limiter.disconnect_after)))

    # -- client events ----------------------------------------------------------------

    def join(self, sid: str, payload: Any) -> Dict[str, Any]:
        """``join-pr-room``: enter ``pr:{id}`` under the name the identity policy allows."""
        identity = self.identified.get(sid)
        request = protocol.parse_room_request(payload, self.limits, identity is None)
        pull_request_id = request.pull_request_id
        username = self.identity.name_for_join(identity, request.username, pull_request_id)
        if not self.identity.can_join(identity, pull_request_id):
            raise ProtocolError(ErrorCode.FORBIDDEN,
                                f"you may not join pull request {pull_request_id}'s room",
                                pullRequestId=pull_request_id)
        if self.registry.room_count_of(sid) >= self.caps.max_rooms_per_socket and \
                self.registry.name_of(sid, pull_request_id) is None:
            raise ProtocolError(ErrorCode.TOO_MANY_ROOMS,
                                f"this connection is already in "
                                f"{self.caps.max_rooms_per_socket} rooms; leave one first",
                                limit=self.caps.max_rooms_per_socket)
        reply = ok(pullRequestId=pull_request_id, room=room_name(pull_request_id),
                   username=username)
        if self.registry.join(sid, pull_request_id, username):
            since = self.resume.before_join(pull_request_id) if self.resume else 0
            self.server.enter_room(sid, room_name(pull_request_id), self.namespace)
            if self.resume:
                self.resume.joined(sid, pull_request_id, since)
            logger.info("join sid=%s user=%s pr=%s", sid, username, pull_request_id)
            try:
                first, members = self.presence.join(pull_request_id, username)
            except Exception as exc:  # the queue is away: the join itself still stands
                logger.error("presence update failed for pr=%s: %s", pull_request_id, exc)
                first, members = False, [username]
                reply["warning"] = protocol.CLUSTER_UNAVAILABLE
            self.broadcaster.to_socket(sid, protocol.MEMBERS,
                                       {"pullRequestId": pull_request_id, "members": members})
            if first and not self.broadcaster.announce(protocol.USER_JOINED, pull_request_id,
                                                       username, skip_sid=sid):
                reply["warning"] = protocol.CLUSTER_UNAVAILABLE
        return reply

    def leave(self, sid: str, payload: Any) -> Dict[str, Any]:
        """``leave-pr-room``: leave one room; the socket's other rooms are untouched."""
        request = protocol.parse_room_request(payload, self.limits, sid not in self.identified)
        pull_request_id = request.pull_request_id
        self.registry.name_in(sid, pull_request_id, claimed=request.username)
        departure = self.registry.leave(sid, pull_request_id)
        self.server.leave_room(sid, room_name(pull_request_id), self.namespace)
        if self.resume:
            self.resume.left(sid, pull_request_id)
        if departure.was_typing:
            self.broadcaster.announce(protocol.STOP_TYPING, pull_request_id, departure.username)
        self.broadcaster.presence_left(pull_request_id, departure.username)
        logger.info("leave sid=%s user=%s pr=%s", sid, departure.username, pull_request_id)
        return ok(pullRequestId=pull_request_id, room=room_name(pull_request_id))

    def send_message(self, sid: str, payload: Any) -> Dict[str, Any]:
        """``send-message-to-pr-room``: everyone in the room, sender included, gets it."""
        request = protocol.parse_message_request(payload, self.limits,
                                                 sid not in self.identified)
        pull_request_id = request.pull_request_id
        username = self.registry.name_in(sid, pull_request_id, claimed=request.username)
        resume = self.resume
        client_id = resume.client_message_id(payload) if resume else None
        sender = "id:" + self._name(sid) if sid in self.identified else "user:" + username
        if client_id is not None:
            assert resume is not None
            original = resume.sent_before(sender, pull_request_id, client_id)
            if original is not None:  # a retried send: delivered once, same ack
                return original
        if self.registry.stop_typing(sid, pull_request_id):
            # a sent message ends that user's typing indicator for the others
            self.broadcaster.announce(protocol.STOP_TYPING, pull_request_id, username, skip_sid=sid)
        message = chat_message(self.message_ids, pull_request_id, username, request.message)
        reply = ok(pullRequestId=pull_request_id, id=message["id"], sentAt=message["sentAt"])
        if client_id is not None:
            assert resume is not None
            once = resume.first_send(sender, pull_request_id, client_id, reply)
            if once is not None:  # clustered: the publish itself finds a retry's first send
                return self._send_once(resume, (sender, pull_request_id, client_id),
                                       message, reply, once)
        self.metrics.record_message()

        def answer(reached: bool) -> Dict[str, Any]:
            if not reached:
                reply["warning"] = protocol.CLUSTER_UNAVAILABLE
            if client_id is not None and resume is not None:
                resume.remember_sent(sender, pull_request_id, client_id, reply)
            return reply
        body: Dict[str, Any] = self.broadcaster.broadcast_then(
            protocol.MESSAGE, dict(message), pull_request_id, answer,
            may_defer=client_id is None)
        return body

    def _send_once(self, resume: SessionRecovery, send: Tuple[str, int, str],
                   message: ChatMessage, reply: Dict[str, Any], once: FirstSend
                   ) -> Dict[str, Any]:
        """Clustered, a send with a clientMessageId: published unless a send with the same
        id was (on any process, maybe one that stopped since); then that one's ack."""
        reached, earlier = self.broadcaster.broadcast_once(protocol.MESSAGE, dict(message),
                                                           send[1], once)
        if earlier is not None:
            resume.remember_sent(*send, earlier, kept=True)
            return earlier
        self.metrics.record_message()
        if not reached:
            reply["warning"] = protocol.CLUSTER_UNAVAILABLE
        resume.remember_sent(*send, reply, kept=reached)
        return reply

    def post(self, request: Any) -> ChatMessage:
        """A message from outside any socket (bots, the HTTP API); no membership needed.

        ``request`` is ``{pullRequestId, username, message}``, validated like the event.
        """
        payload = posted_message(self.message_ids, request, self.limits)
        self.metrics.record_message()
        if not self.broadcaster.broadcast(protocol.MESSAGE, dict(payload),
                                          payload["pullRequestId"]):
            raise QueueUnavailable("delivered only on this server: the queue is unreachable")
        logger.info("post user=%s pr=%s", payload["username"], payload["pullRequestId"])
        return payload

    def typing(self, sid: str, payload: Any) -> Dict[str, Any]:
        """``typing``: the other members see the user typing until stop or expiry."""
        request = protocol.parse_room_request(payload, self.limits, sid not in self.identified)
        pull_request_id = request.pull_request_id
        username = self.registry.name_in(sid, pull_request_id, claimed=request.username)
        self.registry.start_typing(sid, pull_request_id)
        self.broadcaster.announce(protocol.TYPING, pull_request_id, username, skip_sid=sid)
        return ok(pullRequestId=pull_request_id, expiresIn=self.registry.typing_timeout)

    def stop_typing(self, sid: str, payload: Any) -> Dict[str, Any]:
        """``stop-typing``: the others are told, if they had been told the user was typing."""
        request = protocol.parse_room_request(payload, self.limits, sid not in self.identified)
        pull_request_id = request.pull_request_id
        username = self.registry.name_in(sid, pull_request_id, claimed=request.username)
        if self.registry.stop_typing(sid, pull_request_id):
            self.broadcaster.announce(protocol.STOP_TYPING, pull_request_id, username, skip_sid=sid)
        return ok(pullRequestId=pull_request_id)

    def unknown_event(self, event: str, sid: str, *args: Any) -> Optional[Dict[str, Any]]:
        """Any event prroom does not handle gets ``unknown-event`` (catch-all handler)."""
        payload = args[0] if args else None
        try:
            self._charge(sid, "message")
            err = protocol.unknown_event(event)
        except ProtocolError as refusal:
            err = refusal
        # one label value for every unknown name: clients must not grow the metrics
        self.metrics.record_event("(unknown)", err.code, 0.0)
        return self._refuse(sid, str(event), err, payload)

    # -- plumbing ---------------------------------------------------------------------

    def _guarded(self, event: str, handler: Handler) -> Callable[..., Optional[Dict[str, Any]]]:
        """Wrap a handler: refusals and bugs become error replies, never a dropped socket;
        a payload that came with binary attachments is refused (prroom's events are JSON)."""
        kind = RATE_KIND[event]

        def guarded(sid: str, payload: Any = None, *_ignored: Any) -> Optional[Dict[str, Any]]:
            started = time.perf_counter()
            outcome = "ok"
            try:
                self._charge(sid, kind)  # before parsing: invalid floods cost the same
                if payload is socketio_hooks.BINARY_PAYLOAD:
                    raise ProtocolError(ErrorCode.BINARY_PAYLOAD,
                                        "prroom's events take JSON only; send no binary data "
                                        "(Buffer, ArrayBuffer, Blob, bytes)")
                return handler(sid, payload)
            except ProtocolError as err:
                outcome = err.code
                return self._refuse(sid, event, err, payload)
            except Exception:  # a bug must cost this one request, not the connection
                logger.exception("error handling %s from sid=%s", event, sid)
                outcome = ErrorCode.INTERNAL_ERROR
                return self._refuse(sid, event, protocol.internal_error(), payload)
            finally:
                self.metrics.record_event(event, outcome, time.perf_counter() - started)
        guarded.__name__ = handler.__name__
        return guarded

    def _charge(self, sid: str, kind: str) -> None:
        try:
            self.limiter.charge(sid, kind)
        except ProtocolError:
            self.metrics.record_rate_limited(kind)
            if self.limiter.strikes(sid) == self.limiter.disconnect_after:  # once
                logger.warning("disconnecting sid=%s identity=%s: %d rate-limited events "
                               "(the last: %s) without %g s free of refusals", sid,
                               self._name(sid), self.limiter.strikes(sid), kind, STRIKE_WINDOW)
                socketio_hooks.close_transport(self.server, self.server.manager.eio_sid_from_sid(
                    sid, self.namespace))
            # A flooding connection's reader never waits for data: let the others run.
            self.server.sleep(0)
            raise

    def _handler_failed(self, eio_sid: str, event: str, error: BaseException,
                        acked: bool) -> Dict[str, Any]:
        """A handler raised (the host's: prroom's own catch their errors): log it with its
        traceback and tell the client (in the ack it asked for, else as ``pr-room-error``
        with ``internal-error``); its connection stays."""
        logger.error("error in a handler of event %r from eio_sid=%s", event, eio_sid,
                     exc_info=(type(error), error, error.__traceback__))
        body = protocol.error_event(event, protocol.internal_error())
        sid = self.server.manager.sid_from_eio_sid(eio_sid, self.namespace)
        if sid is not None and not acked:
            self.broadcaster.to_socket(sid, protocol.ERROR, body)
        return body

    def _protocol_violation(self, eio_sid: str, reason: str) -> None:
        logger.warning("closing eio_sid=%s: %s", eio_sid, reason)
        socketio_hooks.close_transport(self.server, eio_sid)

    def _name(self, sid: str) -> str:
        identity = self.identified.get(sid)
        return identity.name if identity else "-"

    def _refuse(self, sid: str, event: str, err: ProtocolError, payload: Any) -> Dict[str, Any]:
        """Answer a refused request by ack if one was asked for, else by ``pr-room-error``."""
        pull_request_id = payload.get("pullRequestId") if isinstance(payload, dict) else None
        if type(pull_request_id) is not int:
            pull_request_id = None
        # One line per refusal, except during a rate-limit streak: only its first hit.
        if err.code != ErrorCode.RATE_LIMITED or self.limiter.strikes(sid) == 1:
            logger.info("refused %s sid=%s identity=%s pr=%s code=%s", event, sid,
                        self._name(sid), pull_request_id or "-", err.code)
        if not socketio_hooks.ack_requested():
            self.broadcaster.to_socket(sid, protocol.ERROR,
                                       protocol.error_event(event, err, pull_request_id))
        return protocol.failure(err)


def _chain(first: Optional[Callable[..., Any]], then: Callable[..., Any]) -> Callable[..., Any]:
    """Run a host app's existing lifecycle handler before prroom's; a refusal stops there."""
    if first is None:
        return then

    def chained(*args: Any) -> Any:
        if first(*args) is False:
            return False
        return then(*args)
    return chained
