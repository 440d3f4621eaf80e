"""One Socket.IO packet to one connection (an event's ack), straight to its direct writer.

python-socketio sends every event's ack through ``Server._send_packet``: the packet is
encoded, then handed to python-engineio's ``Server.send``, which wraps it in an Engine.IO
packet, finds the socket (``send_packet``, ``_get_socket``) and calls ``Socket.send``, which
checks the ping timeout, queues the packet and logs it (an ``info`` call whose arguments are
built whatever the level).  For a connection written through prroom's
:class:`~prroom.transport.writes.DirectWriter`, the encoded text goes to the writer at once,
as each member's copy of a room broadcast already does (``fan_out`` in
:mod:`prroom.transport.writes`; the ping sweep checks ping timeouts for every socket): framed
at once, since only that connection gets it (no Engine.IO packet object to build and cache
the frame on).

Any other connection (long-polling, mid-upgrade, closed, or with a ``send`` of its own while
its connect handlers run, see :mod:`connects`), and any binary packet, takes the library's
path unchanged.  The reach is the ``ack-writes`` seam (:mod:`prroom.internals.seams`),
checked by ``tests/internals/test_packet_writes.py``.
"""
from __future__ import annotations

from typing import Any, List

from engineio import packet as eio_packet
from socketio import packet as sio_packet

from prroom.internals import packet_codec
from prroom.transport import framing

_BINARY = frozenset({sio_packet.BINARY_EVENT, sio_packet.BINARY_ACK})
#: An Engine.IO MESSAGE packet's type, as its text starts (what a frame of one starts with).
ENGINEIO_MESSAGE = str(eio_packet.MESSAGE)


def install(server: Any) -> bool:
    """Send ``server``'s single-connection packets through direct writers; False if unsure."""
    original = getattr(server, "_send_packet", None)
    sockets = getattr(getattr(server, "eio", None), "sockets", None)
    if original is None or not isinstance(sockets, dict):
        return False
    if getattr(original, "_prroom_wrapped", False):
        return True
    def send_packet(eio_sid: str, pkt: Any) -> Any:
        writer = direct_writer(sockets, eio_sid)
        if writer is None or pkt.packet_type in _BINARY:
            return original(eio_sid, pkt)
        put_frame = getattr(writer, "put_frame", None)
        if put_frame is None:  # a writer that takes Engine.IO packets only
            writer.put(eio_packet.Packet(eio_packet.MESSAGE, pkt.encode()))
        else:  # the Engine.IO packet's text, framed: what encoding that packet would write
            put_frame(framing.websocket_frame(ENGINEIO_MESSAGE + pkt.encode()))
        return None

    vars(send_packet)["_prroom_wrapped"] = True
    server._send_packet = send_packet
    return True


def send_event(server: Any, sid: str, namespace: str, event: str, data: Any) -> bool:
    """Event ``event`` to the one connection ``sid`` of this process, by the path acks take.

    What ``server.emit(event, data, to=sid, ignore_queue=True)`` sends (``data`` a tuple:
    several arguments), without python-socketio's emit, its log call and the room lookup.
    False, nothing sent, when :func:`install` did not take ``server``'s ``_send_packet``
    (the caller emits instead) or ``sid`` is not connected here.
    """
    send: Any = getattr(server, "_send_packet", None)
    if not getattr(send, "_prroom_wrapped", False):
        return False
    eio_sid = server.manager.eio_sid_from_sid(sid, namespace)
    if eio_sid is None:
        return False
    args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
    send(eio_sid, server.packet_class(sio_packet.EVENT, namespace=namespace,
                                      data=[event, *args]))
    return True


def write_ack(server: Any, eio_sid: str, ack_id: int, data: List[Any]) -> bool:
    """The ACK of event ``ack_id`` on ``/`` with arguments ``data``, straight to the direct
    writer of connection ``eio_sid``: the frame :func:`install`'s ``send_packet`` would write
    for ``packet_class(ACK, namespace="/", id=ack_id, data=data)``, without the packet.

    False, nothing sent, where that path would not take it (another packet class, a
    connection without a frame-taking direct writer, ``data`` that is binary or not JSON):
    the caller sends the packet through ``server._send_packet``.
    """
    send: Any = getattr(server, "_send_packet", None)
    if not getattr(send, "_prroom_wrapped", False) \
            or server.packet_class is not packet_codec.Packet:
        return False
    put_frame = getattr(direct_writer(server.eio.sockets, eio_sid), "put_frame", None)
    if put_frame is None:
        return False
    text = packet_codec.plain_text(sio_packet.ACK, data, ack_id)
    if text is None:
        return False
    put_frame(framing.websocket_frame(ENGINEIO_MESSAGE + text))
    return True


def direct_writer(sockets: Any, eio_sid: str) -> Any:
    """The direct writer of connection ``eio_sid`` (``sockets``: python-engineio's
    ``Server.sockets``), or None where a packet must take the library's path: no such
    connection, one without a direct writer, closed, or with a ``send`` of its own while its
    connect handlers run (:mod:`connects`)."""
    sock: Any = sockets.get(eio_sid)
    writer = getattr(getattr(sock, "queue", None), "writer", None)
    if writer is None or sock.closed or "send" in vars(sock):
        return None
    return writer
