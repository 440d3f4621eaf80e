"""prroom's reaches into python-socketio, python-engineio and Flask-SocketIO internals.

prroom answers a refused request through the Socket.IO ack when the client asked for one,
and with a ``pr-room-error`` event otherwise.  python-socketio does not tell a handler whether
an ack was requested, so the server's per-event entry point (``_handle_event_internal``,
present in python-socketio 5.0 through at least 5.18, called on the greenlet/thread that runs
the handler in both sync and async handler modes) is wrapped to record it in a context
variable.  If a future release drops that method, prroom falls back to sending both the ack
and the event, which is safe and only redundant.

prroom is a guest in the host's Socket.IO server: what it changes for everyone is only what
makes python-socketio behave as the protocol (and Node's reference server) says -- a bound on
binary attachments (:func:`guard_packets`).  Everything else it reserves, it reserves on its
own namespace only, and only for the events it handles itself.

It also reads python-engineio's per-socket send queues to find clients too slow to read
(:func:`overfull_sockets`), which no public API exposes.
"""
from __future__ import annotations

import contextvars
import logging
from typing import Any, Callable, Collection, Dict, Iterable, Optional

logger = logging.getLogger("prroom")

#: Event names a client may not send on prroom's namespace: python-socketio dispatches an
#: *event* named ``connect`` or ``disconnect`` to those lifecycle handlers (re-running
#: authentication, or dropping the socket's state while it stays connected), and one named
#: ``*`` straight to the catch-all with its arguments shifted.  ``message`` is an ordinary
#: event (the host's ``send()``), never reserved.
RESERVED_EVENT_NAMES = frozenset({"connect", "disconnect", "*"})

#: Node's socket.io-parser refuses a binary packet announcing more attachments than this
#: (its ``maxAttachments``); python-socketio would wait for (and hold) as many as claimed.
DEFAULT_MAX_ATTACHMENTS = 10

_ack_requested: contextvars.ContextVar = contextvars.ContextVar("prroom_ack_requested",
                                                               default=None)


def track_ack_requests(server: Any, namespace: str = "/") -> bool:
    """Make :func:`ack_requested` work for events of ``server``; False if unsupported.

    On ``namespace`` (prroom's) it also renames reserved and non-string event names, so they
    reach prroom's catch-all as the unknown events they are; other namespaces are the host's
    and keep python-socketio's behaviour.
    """
    original = getattr(server, "_handle_event_internal", None)
    if original is None:
        logger.warning("python-socketio has no _handle_event_internal; prroom errors will be "
                       "sent both as ack and as pr-room-error")
        return False
    if getattr(original, "_prroom_wrapped", False):
        return True

    def handle_event_internal(server_: Any, sid: str, eio_sid: str, data: list,
                              namespace_: str, id: Optional[int]) -> Any:
        if namespace_ == namespace:
            name = data[0] if data else None
            if not isinstance(name, str) or name in RESERVED_EVENT_NAMES:
                data = [f"(reserved) {str(name)[:50]}", *data[1:]]
        token = _ack_requested.set(id is not None)
        try:
            return original(server_, sid, eio_sid, data, namespace_, id)
        finally:
            _ack_requested.reset(token)

    handle_event_internal._prroom_wrapped = True
    server._handle_event_internal = handle_event_internal
    return True


def ack_requested() -> bool:
    """Whether the event being handled asked for an ack.

    False when it cannot be known, so the caller also sends the error event: the client
    then hears about a refusal twice rather than never.
    """
    return bool(_ack_requested.get())


def overfull_sockets(server, limit: int) -> list:
    """Engine.IO session ids whose outgoing queue holds more than ``limit`` packets."""
    sockets = getattr(server.eio, "sockets", {})
    return [eio_sid for eio_sid, sock in list(sockets.items())
            if getattr(sock, "queue", None) is not None and sock.queue.qsize() > limit]


def connected_eio_sids(server) -> list:
    """Engine.IO session ids of every connection of this process."""
    return list(getattr(server.eio, "sockets", {}))


def close_transport(server, eio_sid: str) -> None:
    """Close one connection's transport, as a lost connection, without waiting on it.

    Packets already queued still go out first (the writer stops at the end of the queue),
    but no Engine.IO CLOSE packet is added: after a CLOSE (or a Socket.IO DISCONNECT),
    socket.io-client and python-socketio do not reconnect; after a dropped transport they do.
    """
    sock = server.eio.sockets.get(eio_sid)
    if sock is None:
        return
    try:
        sock.close(wait=False, abort=True)
    except TypeError:  # python-engineio without the abort flag
        sock.close(wait=False)


def refuse_new_connections(server) -> None:
    """From now on, answer new Engine.IO handshakes 401, at the transport level.

    A refusal there is a failed transport, which every client retries with backoff
    (another instance, behind a load balancer); a refused Socket.IO CONNECT would instead
    make socket.io-client give up for good.
    """
    original = server.eio.handlers.get("connect")

    def refuse(*args):
        return False

    if original is not None:
        server.eio.handlers["connect"] = refuse


class BinaryPayload:
    """What a prroom handler receives instead of a payload that carried binary attachments."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<binary payload>"


#: The one :class:`BinaryPayload`: prroom's handlers test ``payload is BINARY_PAYLOAD``.
BINARY_PAYLOAD = BinaryPayload()

# python-socketio's packet types (socketio.packet), as the wire spells them.
_BINARY_EVENT = 5


def _handled_by(server: Any, namespace: str, event: Any, handlers: Collection) -> bool:
    """Whether ``event`` on ``namespace`` would be dispatched to one of ``handlers``."""
    if not isinstance(event, str) or event in RESERVED_EVENT_NAMES:
        return True  # renamed for prroom's catch-all (see track_ack_requests)
    table = server.handlers.get(namespace, {})
    handler = table.get(event)
    if handler is None:
        handler = table.get("*")
    return handler is not None and handler in handlers


def _refuse_binary(pkt: Any) -> None:
    """Have ``pkt`` reconstruct to ``[event, BINARY_PAYLOAD]`` once its attachments are in.

    The real reconstruction still runs first, so a packet whose placeholders point at no
    attachment is as malformed for prroom's events as for the host's.
    """
    reconstruct = pkt.reconstruct_binary

    def refusing_reconstruct(data: list, attachments: list) -> list:
        reconstruct(data, attachments)
        return [data[0], BINARY_PAYLOAD]

    pkt.reconstruct_binary = refusing_reconstruct


def guard_packets(server: Any, on_violation: Callable[[str, str], None], namespace: str = "/",
                  handlers: Collection = (), max_attachments: int = DEFAULT_MAX_ATTACHMENTS
                  ) -> None:
    """Close connections that send undecodable Socket.IO packets; bound binary packets.

    python-socketio would log a traceback for every malformed packet, keep collecting the
    attachments a binary packet announces (as many as it claims), take a text frame as an
    attachment, and wait forever for a binary packet that announces none.  Here, as in
    Node's socket.io-parser: a packet that cannot be decoded, more than ``max_attachments``
    attachments, or text where an attachment is due closes that connection (logged once,
    through ``on_violation(eio_sid, reason)``); a binary packet with no attachment is
    dispatched at once.  Binary events stay the host's to use; only an event on
    ``namespace`` that would reach one of ``handlers`` (prroom's own) gets
    :data:`BINARY_PAYLOAD` in place of its arguments, for prroom to refuse.
    """
    eio = getattr(server, "eio", None)
    original = eio.handlers.get("message") if eio is not None else None
    if original is None or getattr(original, "_prroom_wrapped", False):
        return
    pending = server._binary_packet  # eio_sid -> the binary packet awaiting attachments
    handlers = frozenset(handlers)

    handled = [0]

    def message(eio_sid: str, data: Any) -> Any:
        # A connection whose socket always has data never makes its reader wait, so under
        # gevent it would never let the others run: yield every 16 incoming packets.
        handled[0] += 1
        if not handled[0] & 15:
            server.sleep(0)
        header = isinstance(data, str) and data[:1] in ("5", "6")
        if eio_sid in pending:
            if isinstance(data, str):
                pending.pop(eio_sid, None)
                return on_violation(eio_sid, "text frame where a binary attachment was due")
            header = False
        try:
            result = original(eio_sid, data)
        except Exception as exc:  # a malformed packet: its sender is broken or hostile
            pending.pop(eio_sid, None)
            return on_violation(eio_sid, f"malformed packet ({type(exc).__name__})")
        if header:
            return _check_binary_header(eio_sid)
        return result

    def _check_binary_header(eio_sid: str) -> Any:
        pkt = pending.get(eio_sid)
        if pkt is None:
            return None
        if pkt.attachment_count > max_attachments:
            del pending[eio_sid]
            return on_violation(eio_sid, f"binary packet announcing {pkt.attachment_count} "
                                         f"attachments (at most {max_attachments})")
        is_event = pkt.packet_type == _BINARY_EVENT
        if not isinstance(pkt.data, list) or (is_event and not pkt.data):
            del pending[eio_sid]
            return on_violation(eio_sid, "malformed packet (binary payload is not an array)")
        ns = pkt.namespace or "/"
        if pkt.attachment_count == 0:  # nothing will follow: dispatch it now, as Node does
            del pending[eio_sid]
            if is_event:
                return server._handle_event(eio_sid, ns, pkt.id, pkt.data)
            return server._handle_ack(eio_sid, ns, pkt.id, pkt.data)
        if is_event and ns == namespace and _handled_by(server, ns, pkt.data[0], handlers):
            _refuse_binary(pkt)
        return None

    message._prroom_wrapped = True
    server.eio.handlers["message"] = message


def accelerate_gevent_websocket() -> bool:
    """Unmask incoming WebSocket frames in C (wsaccel) instead of a Python loop.

    gevent-websocket 0.10 XORs every byte of every client frame in pure Python (~600 us per
    8 KB message, a CPU cost any client can multiply) and only uses wsaccel for UTF-8
    validation.  wsaccel (a dependency of prroom) does the same XOR in ~5 us.  Returns True
    once installed; False when either library is missing (nothing changes then).
    """
    try:
        from geventwebsocket.websocket import Header
        from wsaccel.xormask import XorMaskerSimple
    except ImportError:
        return False
    if getattr(Header.mask_payload, "_prroom_wrapped", False):
        return True

    def mask_payload(self, payload):
        return XorMaskerSimple(self.mask).process(bytes(payload))

    mask_payload._prroom_wrapped = True
    Header.mask_payload = Header.unmask_payload = mask_payload
    return True


def registered_handlers(server: Any, namespace: str) -> Dict[str, Callable]:
    """The handlers already registered on ``server`` for ``namespace`` (the host app's).

    python-socketio keeps them in ``server.handlers[namespace]`` and offers no accessor;
    prroom reads them to chain a host's connect/disconnect handlers before its own and to
    leave a host's catch-all alone.
    """
    return dict(server.handlers.get(namespace, {}))


def options_set_by_host(socketio: Any) -> Iterable[str]:
    """Names of the server options a host passed to its ``SocketIO(...)`` itself.

    Flask-SocketIO keeps them in ``server_options`` until ``init_app``; prroom only fills in
    the options a host left unset.
    """
    return tuple(getattr(socketio, "server_options", {}) or {})


def served_engineio_path(socketio: Any) -> Optional[str]:
    """The path Flask-SocketIO's middleware serves Socket.IO at (``/socket.io/``), if known.

    A host's own SocketIO may use another path than ``PRROOM_SOCKETIO_PATH``; the chat page
    must connect to the one actually served, which only the middleware (``sockio_mw``) knows.
    """
    middleware = getattr(socketio, "sockio_mw", None)
    path = getattr(middleware, "engineio_path", None)
    return path or None
