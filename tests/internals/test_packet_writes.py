"""prroom.internals.packet_writes: an ack straight to the connection's direct writer, and what
it stands in for in python-socketio and python-engineio (these fail loudly if that changes)."""
import inspect
from typing import Any, List, Tuple

import engineio
import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from prroom.internals import packet_writes
from prroom.transport import framing
from tests.support.wsgi import Postponed


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


def codec_server_with(sock: Any):
    """A server with prroom's packet class, its ack path installed, and connection e1."""
    from prroom.internals import packet_codec

    server, library = server_with(sock)
    assert packet_codec.install(server)
    return server, library


def test_an_ack_written_from_its_body_is_the_frame_the_packet_would_have_made():
    sock = Sock()
    sock.queue.writer = FrameWriter()
    server, library = codec_server_with(sock)
    for body in ({"ok": True, "text": "é" * 100}, {"ok": False, "error": {"code": "x"}}):
        assert packet_writes.write_ack(server, "e1", 7, [body])
        server._send_packet("e1", ack(body))  # the packet's way, for comparison
    written = sock.queue.writer.packets
    assert library == [] and len(written) == 4
    assert written[0] == written[1] and written[2] == written[3]


def test_an_ack_that_cannot_be_written_directly_is_left_to_the_caller():
    from prroom.internals import packet_codec

    closed, shadowed, unframed = Sock(), Sock(), Sock()
    closed.closed = True
    shadowed.send = lambda pkt: None  # type: ignore[attr-defined]
    for sock in (closed, shadowed):
        sock.queue.writer = FrameWriter()
    cases: List[Tuple[Any, List[Any]]] = [(closed, [1]), (shadowed, [1]), (unframed, [1]),
                                          (object(), [1])]
    framed = Sock()
    framed.queue.writer = FrameWriter()
    cases += [(framed, [b"\x00"]), (framed, [object()])]  # binary; not JSON at all
    for sock, body in cases:
        server, library = codec_server_with(sock)
        assert packet_writes.write_ack(server, "e1", 7, body) is False
        assert getattr(getattr(sock, "queue", None), "writer", Writer()).packets == []
    # nothing written either for a server with the library's packets, or an uninstalled path
    server, _ = server_with(framed)
    assert server.packet_class is not packet_codec.Packet
    assert packet_writes.write_ack(server, "e1", 7, [1]) is False
    bare = socketio.Server(async_mode="threading")
    packet_codec.install(bare)
    bare.eio.sockets["e1"] = framed
    assert packet_writes.write_ack(bare, "e1", 7, [1]) is False
    assert framed.queue.writer.packets == []


def test_an_ack_answered_later_is_written_directly_too():
    from prroom.internals import acks

    sock = Sock()
    sock.queue.writer = FrameWriter()
    server, library = codec_server_with(sock)
    acks.send_ack(server, "e1", "/", 7, {"ok": True})
    server._send_packet("e1", ack({"ok": True}))
    written = sock.queue.writer.packets
    assert library == [] and len(written) == 2 and written[0] == written[1]
    acks.send_ack(server, "e1", "/other", 7, {"ok": True})  # another namespace: the packet's way
    assert len(library) == 0 and len(written) == 3


class _Closable:
    def close(self) -> None:
        pass


class _Recording:
    """A socket that takes every send whole (one call = one system call)."""

    def __init__(self) -> None:
        self.calls: List[bytes] = []

    def send(self, data: Any, flags: int = 0, timeout: Any = None) -> int:
        self.calls.append(bytes(data))
        return len(data)


def test_an_ack_answered_later_holds_the_connection_and_is_then_written_straight_to_it():
    import gevent

    from prroom.internals import acks
    from prroom.transport.writes import DirectWriter

    for body, direct in (({"ok": True, "n": 1}, True), (b"\x00", False)):
        sock, wire = Sock(), _Recording()
        writer = DirectWriter(_Closable(), wire)
        sock.queue.writer = writer  # type: ignore[assignment]
        server, library = codec_server_with(sock)
        sends: List[Any] = []
        acks.start_answer(Postponed(sends), server, "e1", "/", 7)
        writer.put_frame(b"own copy")  # the sender's copy of its broadcast
        gevent.sleep(0)
        assert wire.calls == [] and len(sends) == 1  # held for the answer
        sends[0](body)
        gevent.sleep(0)
        if direct:  # the frame write_ack makes, after what waited for it, in one send
            assert library == [] and wire.calls == [
                b"own copy" + framing.websocket_frame("4" + ack(body).encode())]
        else:  # binary: the packet's way, and the hold let go all the same
            assert len(library) == 1 and library[0][1].data == [body]
            assert wire.calls == [b"own copy"]
