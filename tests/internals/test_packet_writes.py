"""prroom.internals.packet_writes: an ack straight to the connection's direct writer, and what
it stands in for in python-socketio and python-engineio (these fail loudly if that changes)."""
import inspect
from typing import Any, List

import engineio
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from prroom.internals import packet_writes
from prroom.transport import framing


def test_socketio_sends_a_packet_by_encoding_it_for_engineio():
    source = inspect.getsource(socketio.Server._send_packet)
    assert "encoded_packet = pkt.encode()" in source
    assert "self.eio.send(eio_sid, encoded_packet)" in source
    assert "self.send_packet(sid, packet.Packet(packet.MESSAGE, data=data))" in \
        inspect.getsource(engineio.Server.send)
    assert "socket.send(pkt)" in inspect.getsource(engineio.Server.send_packet)
    assert "self.queue.put(pkt)" in inspect.getsource(engineio.socket.Socket.send)


class Writer:
    def __init__(self) -> None:
        self.packets: List[Any] = []

    def put(self, pkt: Any) -> None:
        self.packets.append(pkt)


class FrameWriter(Writer):
    """A writer that also takes frames, as prroom's DirectWriter does."""

    def put_frame(self, frame: bytes) -> None:
        self.packets.append(frame)


class Queue:
    def __init__(self) -> None:
        self.writer = Writer()


class Sock:
    closed = False

    def __init__(self) -> None:
        self.queue = Queue()


def server_with(sock: Any):
    server = socketio.Server(async_mode="threading")
    sent: List[Any] = []
    server._send_packet = lambda eio_sid, pkt: sent.append((eio_sid, pkt))  # the library's
    server.eio.sockets["e1"] = sock
    assert packet_writes.install(server)
    assert packet_writes.install(server)  # once
    return server, sent


def ack(data: Any) -> Any:
    return sio_packet.Packet(sio_packet.ACK, namespace="/", id=7, data=[data])


def test_an_ack_goes_to_the_direct_writer_as_engineio_would_queue_it():
    sock = Sock()
    server, library = server_with(sock)
    server._send_packet("e1", ack({"ok": True}))
    [pkt] = sock.queue.writer.packets
    assert library == []
    assert pkt.packet_type == eio_packet.MESSAGE and pkt.encode() == '437[{"ok":true}]'


def test_a_writer_that_takes_frames_gets_the_acks_frame_built_once():
    sock = Sock()
    sock.queue.writer = FrameWriter()
    server, library = server_with(sock)
    body = {"ok": True, "text": "é" * 100}  # a frame with a 16-bit length
    server._send_packet("e1", ack(body))
    [frame] = sock.queue.writer.packets
    expected = eio_packet.Packet(eio_packet.MESSAGE, ack(body).encode())
    assert library == [] and frame == framing.frame_of(expected)


def test_any_other_connection_or_packet_takes_the_library_path():
    closed, shadowed, plain = Sock(), Sock(), Sock()
    closed.closed = True
    shadowed.send = lambda pkt: None  # type: ignore[attr-defined]  # connect handlers running
    for sock, pkt in ((closed, ack(1)), (shadowed, ack(1)), (plain, ack(b"\x00")),
                      (object(), ack(1))):
        server, library = server_with(sock)
        server._send_packet("e1", pkt)
        assert len(library) == 1 and library[0][1] is pkt
        assert getattr(getattr(sock, "queue", None), "writer", Writer()).packets == []
    server, library = server_with(Sock())
    server._send_packet("unknown", ack(1))
    assert len(library) == 1


def test_no_install_without_the_library_names():
    server = socketio.Server(async_mode="threading")
    del server.eio.sockets
    assert packet_writes.install(server) is False
