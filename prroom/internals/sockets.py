"""prroom's reaches into python-engineio's sessions, one connection at a time.

python-engineio keeps its sockets in a dict, each with its outgoing ``queue`` and a
``close(abort=)``: prroom reads the queues to find clients too slow to read
(:func:`overfull_sockets`, which no public API exposes), closes a transport as a lost
connection so the client reconnects (:func:`close_transport`), closes a connection another
one replaced (:func:`close_replaced`) and refuses new sessions at shutdown
(:func:`refuse_new_connections`).  Declared as the ``slow-consumer-drop`` seam
(:mod:`prroom.internals.seams`).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, List, Optional, Tuple

from socketio import packet as _sio_packet

from prroom.internals.types import SocketIOServer


def can_find_slow_consumers(server: SocketIOServer) -> bool:
    """Whether :func:`overfull_sockets` and :func:`close_transport` work on ``server``:
    python-engineio keeps its sockets in a dict, each with a ``queue`` and
    ``close(abort=)``."""
    from engineio import socket as eio_socket

    sockets = getattr(getattr(server, "eio", None), "sockets", None)
    try:
        takes_abort = "abort" in inspect.signature(eio_socket.Socket.close).parameters
    except (TypeError, ValueError):
        return False
    return isinstance(sockets, dict) and takes_abort


def overfull_sockets(server: SocketIOServer, limit: int,
                     max_bytes: Optional[int] = None) -> List[str]:
    """Engine.IO session ids whose outgoing queue holds more than ``limit`` packets, or
    more than ``max_bytes`` bytes (counted for queues that know it: prroom's direct
    WebSocket writes, :meth:`websocket_writes.WriterQueue.qbytes`)."""
    sockets = getattr(server.eio, "sockets", {})
    try:
        # Walked in place: a copy of every (sid, socket) pair each second was the largest
        # cost of an idle server (the collector ran over the whole heap for those tuples).
        return _overfull(sockets.items(), limit, max_bytes)
    except RuntimeError:  # changed size: another OS thread (threading mode) connected
        return _overfull(list(sockets.items()), limit, max_bytes)


def _overfull(items: Iterable[Tuple[str, Any]], limit: int,
              max_bytes: Optional[int]) -> List[str]:
    found = []
    for eio_sid, sock in items:  # nothing here switches greenlets
        queue = getattr(sock, "queue", None)
        if queue is None:
            continue
        size = queue.qsize()
        if size > limit or (size and max_bytes is not None and hasattr(queue, "qbytes")
                            and queue.qbytes() > max_bytes):
            found.append(eio_sid)
    return found


def connected_eio_sids(server: SocketIOServer) -> List[str]:
    """Engine.IO session ids of every connection of this process."""
    return list(getattr(server.eio, "sockets", {}))


def eio_packet_sender(server: Any) -> Callable[[str, Any], None]:
    """python-socketio's own ``send(eio_sid, packet)`` to one Engine.IO session
    (``Server._send_eio_packet``): what a room broadcast falls back to for a connection
    without prroom's direct writer."""
    send: Callable[[str, Any], None] = server._send_eio_packet
    return send


def close_transport(server: SocketIOServer, eio_sid: Optional[str],
                    reason: Optional[str] = None) -> None:
    """Close one connection's transport, as a lost connection, without waiting on it.

    Packets already queued still go out first (the writer stops at the end of the queue),
    but no Engine.IO CLOSE packet is added: after a CLOSE (or a Socket.IO DISCONNECT),
    socket.io-client and python-socketio do not reconnect; after a dropped transport they do.
    ``reason``: the disconnect reason the handlers see (python-engineio's default is
    ``server disconnect``).
    """
    sock = server.eio.sockets.get(eio_sid) if eio_sid is not None else None
    if sock is None:
        return
    try:
        if reason is None:
            sock.close(wait=False, abort=True)
        else:
            sock.close(wait=False, abort=True, reason=reason)
    except TypeError:  # python-engineio without the abort flag
        sock.close(wait=False)


def close_replaced(server: Any, eio_sid: str, namespace: str, reason: str) -> None:
    """Close a connection that another one replaced, running its disconnect handlers now.

    A Socket.IO DISCONNECT goes first, so a client that is still reading stops there and
    does not reconnect; then the transport is dropped as :func:`close_transport` does, and
    python-engineio runs the disconnect handlers before returning, with ``reason``.
    """
    sock = server.eio.sockets.get(eio_sid)
    if sock is None or sock.closed or sock.closing:
        return
    server._send_packet(eio_sid, server.packet_class(_sio_packet.DISCONNECT, namespace=namespace))
    sock.close(wait=False, abort=True, reason=reason)


def refuse_new_connections(server: SocketIOServer) -> None:
    """From now on, answer new Engine.IO handshakes 401, at the transport level.

    A refusal there is a failed transport, which every client retries with backoff
    (another instance, behind a load balancer); a refused Socket.IO CONNECT would instead
    make socket.io-client give up for good.
    """
    original = server.eio.handlers.get("connect")

    def refuse(*args: Any) -> bool:
        return False

    if original is not None:
        server.eio.handlers["connect"] = refuse
