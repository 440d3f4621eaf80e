"""The one place prroom reaches into python-socketio internals.

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

logger = logging.getLogger("prroom")

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
