"""prroom's reaches into python-socketio, python-engineio and Flask-SocketIO internals.

prroom answers a refused request through the Socket.IO ack when the client asked for one,
and with a ``pr-room-error`` event otherwise.  python-socketio does not tell a handler whether
an ack was requested, so the server's per-event entry point (``_handle_event_internal``,
present in python-socketio 5.0 through at least 5.18, called on the greenlet/thread that runs
the handler in both sync and async handler modes) is wrapped to record it in a context
variable.  If a future release drops that method, prroom falls back to sending both the ack
and the event, which is safe and only redundant.

It also reads python-engineio's per-socket send queues to find clients too slow to read
(:func:`overfull_sockets`), which no public API exposes.
"""
from __future__ import annotations

import contextvars
import logging
from typing import Any, Callable, Dict, Iterable, Optional

logger = logging.getLogger("prroom")

#: Event names a client may not send: python-socketio's lifecycle events and catch-all.
RESERVED_EVENT_NAMES = frozenset({"connect", "disconnect", "connect_error", "*", "message"})

_ack_requested: contextvars.ContextVar = contextvars.ContextVar("prroom_ack_requested",
                                                               default=None)


def track_ack_requests(server) -> bool:
    """Make :func:`ack_requested` work for events of ``server``; False if unsupported."""
    original = getattr(server, "_handle_event_internal", None)
    if original is None:
        logger.warning("python-socketio has no _handle_event_internal; prroom errors will be "
                       "sent both as ack and as pr-room-error")
        return False
    if getattr(original, "_prroom_wrapped", False):
        return True

    def handle_event_internal(server_, sid, eio_sid, data, namespace, id):
        name = data[0] if data else None
        if not isinstance(name, str) or name in RESERVED_EVENT_NAMES:
            # python-socketio would dispatch a client event named "connect", "disconnect"
            # or "*" to those handlers (re-running authentication, dropping the socket's
            # state while it stays connected, or misrouting the catch-all): rename it so it
            # lands in the catch-all as the unknown event it is.
            data = [f"(reserved) {str(name)[:50]}", *data[1:]]
        token = _ack_requested.set(id is not None)
        try:
            return original(server_, sid, eio_sid, data, namespace, id)
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


def answer_unread() -> bool:
    """Whether the event being handled asked for no ack (so nobody reads its answer).

    False outside a client event (HTTP posts, background tasks) and when unknown.
    """
    return _ack_requested.get() is False


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


def guard_packets(server, on_violation) -> None:
    """Close connections that send binary or undecodable Socket.IO packets; keep it fair.

    prroom's protocol is JSON text only.  python-socketio would otherwise keep collecting
    the attachments a binary packet announces (as many as it claims) and log a traceback
    for every malformed packet; here the offender is disconnected and logged once.
    ``on_violation(eio_sid, reason)`` is called instead.
    """
    eio = getattr(server, "eio", None)
    original = eio.handlers.get("message") if eio is not None else None
    if original is None or getattr(original, "_prroom_wrapped", False):
        return

    handled = [0]

    def message(eio_sid, data):
        # A connection whose socket always has data never makes its reader wait, so under
        # gevent it would never let the others run: yield every 16 incoming packets.
        handled[0] += 1
        if not handled[0] & 15:
            server.sleep(0)
        if not isinstance(data, str) or data[:1] in ("5", "6"):  # binary event / ack
            return on_violation(eio_sid, "binary packets are not accepted")
        try:
            return original(eio_sid, data)
        except Exception as exc:  # a malformed packet: its sender is broken or hostile
            return on_violation(eio_sid, f"malformed packet ({type(exc).__name__})")

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
