"""prroom.transport.writes: the direct WebSocket write path, and the engine.io
internals it needs.

The first tests fail loudly when python-engineio, gevent or gevent-websocket change what the
transport relies on (it would then quietly fall back to engine.io's own writer).
"""
import inspect
import socket as stdlib_socket
import struct
import types

import engineio
import gevent
import gevent.socket
import pytest
import socketio
from engineio import packet
from engineio.async_drivers import gevent as engineio_gevent
from geventwebsocket.websocket import Header, WebSocket

from prroom.transport import corks, framing, waiting
from prroom.transport import writes as websocket_writes
from tests.support.waiting import wait_until

# -- what the transport relies on --------------------------------------------------------

def _nested_code(function, name):
    return next(const for const in function.__code__.co_consts
                if inspect.iscode(const) and const.co_name == name)


def test_engineio_still_starts_a_writer_closure_over_self_and_ws():
    handler = engineio.socket.Socket._websocket_handler
    writer = _nested_code(handler, "writer")
    assert handler.__qualname__ + ".<locals>.writer" == websocket_writes._WRITER_QUALNAME
    assert {"self", "ws"} <= set(writer.co_freevars)
    source = inspect.getsource(engineio.socket.Socket._websocket_handler)
    assert "self.server.start_background_task(writer)" in source


def test_engineio_sockets_take_their_queue_from_create_queue():
    server = engineio.Server(async_mode="gevent")
    assert websocket_writes.install(socketio.Server(async_mode="gevent")) is True
    server.create_queue = websocket_writes.WriterQueue
    sock = engineio.socket.Socket(server, "sid")
    assert isinstance(sock.queue, websocket_writes.WriterQueue)


def test_the_gevent_websocket_wrapper_still_exposes_the_connection():
    # with gevent-websocket installed, engine.io wraps its WebSocket (not simple-websocket)
    assert engineio_gevent.SimpleWebSocketWSGI is None
    assert "self._sock = environ['wsgi.websocket']" in inspect.getsource(engineio_gevent)
    assert "handler" in inspect.signature(WebSocket.__init__).parameters
    assert "self.handler = handler" in inspect.getsource(WebSocket.__init__)


def test_install_wraps_once_and_only_gevent_servers():
    server = socketio.Server(async_mode="gevent")
    assert websocket_writes.install(server) is True
    wrapped = server.eio.start_background_task
    assert websocket_writes.install(server) is True
    assert server.eio.start_background_task is wrapped
    assert server.eio.create_queue is websocket_writes.WriterQueue
    assert websocket_writes.install(socketio.Server(async_mode="threading")) is False


def test_other_background_tasks_still_run_as_greenlets():
    server = socketio.Server(async_mode="gevent")
    websocket_writes.install(server)
    task = server.eio.start_background_task(lambda value: results.append(value), 7)
    results: list = []
    task.join()
    assert results == [7]


# -- frames ------------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
def test_frames_match_gevent_websocket_for_every_length_class(length):
    text = "é" * (length // 2) + "x" * (length % 2)  # multi-byte UTF-8 too
    data = text.encode()
    expected = bytes(Header.encode_header(True, WebSocket.OPCODE_TEXT, b"", len(data), 0)) + data
    assert framing.websocket_frame(text) == expected
    binary = bytes(range(256)) * (length // 256) + bytes(length % 256)
    expected = bytes(Header.encode_header(True, WebSocket.OPCODE_BINARY, b"", length, 0)) \
        + binary
    assert framing.websocket_frame(binary) == expected


def test_a_packet_is_framed_once_however_many_recipients():
    pkt = packet.Packet(packet.MESSAGE, data='2["pr-room-message",{"message":"hi"}]')
    first = framing.frame_of(pkt)
    assert first == framing.websocket_frame('42["pr-room-message",{"message":"hi"}]')
    assert framing.frame_of(pkt) is first


@pytest.mark.parametrize("length", [0, 124, 125, 126, 65534, 65535, 70000])
def test_a_packet_framed_from_its_bytes_is_framed_as_from_its_text(length):
    text = '2["m","' + "é" * (length // 2) + "x" * (length % 2) + '"]'
    made = framing.message_packet(text, text.encode())
    assert made.encode() == "4" + text  # what a member not written directly gets
    assert framing.frame_of(made) == framing.frame_of(packet.Packet(packet.MESSAGE, text))


@pytest.mark.parametrize("size", [125, 126, 65535, 65536])
def test_a_packet_framed_from_its_bytes_is_python_engineios_own_packet_of_that_text(size):
    # the frame's header is packed inline for some sizes: at each boundary, the packet is
    # python-engineio's own packet of the text, with the frame it would be given
    text = '2["m","' + "x" * (size - 10) + '"]'  # framed: "4" + text, size bytes
    made = framing.message_packet(text, text.encode())
    own = packet.Packet(packet.MESSAGE, text)
    extra = set(vars(made)) - set(vars(own))
    assert len(extra) == 1 and {k: v for k, v in vars(made).items() if k not in extra} == \
        vars(own)
    assert type(made) is packet.Packet and made.encode() == own.encode() == "4" + text
    assert framing.frame_of(made) == framing.websocket_frame("4" + text)
    assert len("4" + text) == size


def test_message_packets_keeps_packets_and_makes_the_others():
    kept = packet.Packet(packet.MESSAGE, "2[]")
    made = framing.message_packets([kept, "2[1]", b"\x00"])
    assert made[0] is kept and [p.encode() for p in made[1:]] == ["42[1]", b"\x00"]


# -- the writer over a real socket pair --------------------------------------------------

class FakeWebSocket:
    """What DirectWriter needs of engine.io's wrapper: close()."""

    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1


def read_frames(sock, count, timeout=10):
    """``count`` text frames from ``sock``, decoded (server frames are unmasked)."""
    buffer = b""
    frames: list = []
    with gevent.Timeout(timeout):
        while len(frames) < count:
            while True:
                if len(buffer) >= 2:
                    length, offset = buffer[1] & 0x7F, 2
                    if length == 126 and len(buffer) >= 4:
                        length, offset = struct.unpack("!H", buffer[2:4])[0], 4
                    elif length == 127 and len(buffer) >= 10:
                        length, offset = struct.unpack("!Q", buffer[2:10])[0], 10
                    if length < 126 and len(buffer) >= offset + length:
                        frames.append(buffer[offset:offset + length].decode())
                        buffer = buffer[offset + length:]
                        break
                chunk = sock.recv(65536)
                assert chunk, "connection closed early"
                buffer += chunk
    return frames


@pytest.fixture
def socket_pair():
    """Factory ``socket_pair(small=False)``: a connected gevent socket pair, closed after."""
    opened: list = []

    def make(small=False):
        server_end, client_end = gevent.socket.socketpair()
        opened.extend((server_end, client_end))
        if small:  # fills after a few KB, so a backlog forms
            server_end.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_SNDBUF, 4096)
            client_end.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, 4096)
        return server_end, client_end

    yield make
    for sock in opened:
        sock.close()


def message(number):
    return packet.Packet(packet.MESSAGE, data=f"2[\"m\",{number}]" + "." * 100)


def test_writes_go_out_in_order_when_the_reader_is_slower_than_the_writer(socket_pair):
    server_end, client_end = socket_pair(small=True)
    ws = FakeWebSocket()
    writer = websocket_writes.DirectWriter(ws, server_end)
    for number in range(2000):  # ~230 KB: far beyond the socket buffers
        writer.put(message(number))
    assert writer.pending() > 0  # the rest waits in order, nobody blocked
    frames = read_frames(client_end, 2000)
    assert frames == [f"42[\"m\",{number}]" + "." * 100 for number in range(2000)]
    assert writer.pending() == 0
    writer.put(None)
    writer.join(timeout=5)
    assert ws.closed == 1


def test_the_end_flushes_first_then_closes_and_later_packets_are_dropped(socket_pair):
    server_end, client_end = socket_pair(small=True)
    ws = FakeWebSocket()
    writer = websocket_writes.DirectWriter(ws, server_end)
    for number in range(500):
        writer.put(message(number))
    writer.put(None)
    writer.put(message(999))  # after the end: not sent (as engine.io's writer)
    frames = read_frames(client_end, 500)
    writer.join(timeout=5)
    assert ws.closed == 1 and len(frames) == 500
    assert writer._ws is None and writer._sock is None  # nothing of the connection kept
    client_end.settimeout(0.2)
    with pytest.raises(stdlib_socket.timeout):
        client_end.recv(10)


def test_a_peer_that_went_away_ends_the_writer_without_an_error(socket_pair):
    server_end, client_end = socket_pair(small=True)
    ws = FakeWebSocket()
    writer = websocket_writes.DirectWriter(ws, server_end)
    client_end.close()
    for number in range(200):
        writer.put(message(number))
    writer.join(timeout=5)
    assert ws.closed == 1 and writer.pending() == 0


class RecordingSocket:
    """Takes every send whole and remembers each call (one call = one system call)."""

    def __init__(self):
        self.calls = []

    def send(self, data, flags=0, timeout=None):
        self.calls.append(bytes(data))
        return len(data)


def test_frames_for_one_connection_in_one_loop_iteration_leave_in_one_send():
    first, second = RecordingSocket(), RecordingSocket()
    writers = websocket_writes.DirectWriter(FakeWebSocket(), first), \
        websocket_writes.DirectWriter(FakeWebSocket(), second)
    broadcast = message(1)  # one packet to both, as python-socketio sends a room message
    for writer in writers:
        writer.put(broadcast)
    writers[0].put(message(2))  # e.g. the sender's ack, in the same handler
    gevent.sleep(0)  # the loop comes round
    frame = framing.frame_of
    assert first.calls == [frame(broadcast) + frame(message(2))]
    assert second.calls == [frame(broadcast)]
    writers[1].put(message(3))  # the next iteration: a send of its own
    gevent.sleep(0)
    assert second.calls == [frame(broadcast), frame(message(3))]


class FanOutSocket:
    """What fan_out reads of an Engine.IO socket written by a DirectWriter."""

    closed = False

    def __init__(self, writer):
        self.queue = types.SimpleNamespace(writer=writer)


def fan_out_over(count):
    """``deliver`` over ``count`` direct-written connections, and their recording sockets."""
    sockets = [RecordingSocket() for _ in range(count)]
    eio_sockets = {f"e{n}": FanOutSocket(websocket_writes.DirectWriter(FakeWebSocket(), sock))
                   for n, sock in enumerate(sockets)}
    deliver = websocket_writes.fan_out(eio_sockets, lambda eio_sid, packet: None)
    return deliver, sockets


def test_a_broadcast_to_a_big_room_reaches_every_member_and_the_first_early():
    members = websocket_writes.FLUSH_EARLY_AT * 2 + 3
    deliver, sockets = fan_out_over(members)
    broadcast = message(1)
    deliver([(f"s{n}", f"e{n}") for n in range(members)], (), [broadcast])
    frame = framing.frame_of(broadcast)
    # before the loop comes round, the first members' frames are written already
    assert sockets[0].calls == [frame]
    gevent.sleep(0)
    assert [sock.calls for sock in sockets] == [[frame]] * members  # once each, none lost


def test_in_a_big_room_the_first_copy_leaves_before_the_others_are_queued():
    # The first member reads the message while the server still queues the others' (the
    # fan-out's first copy, and so its median, come that much sooner).
    members = websocket_writes.FLUSH_EARLY_AT * 2 + 3
    deliver, sockets = fan_out_over(members)
    broadcast = message(1)
    frame = framing.frame_of(broadcast)
    written_by_the_second = []

    def room():
        for n in range(members):
            if n == 1:
                written_by_the_second.append(list(sockets[0].calls))
            yield f"s{n}", f"e{n}"
    deliver(room(), (), [broadcast], members)
    assert written_by_the_second == [[frame]]
    gevent.sleep(0)
    assert [sock.calls for sock in sockets] == [[frame]] * members


def test_a_turn_of_many_small_rooms_writes_each_connection_once():
    # Each connection is in two small rooms, and both rooms' messages come in one loop
    # turn: however many connections that turn reaches, each gets one write, not one
    # before and one after an early flush.
    count, size = websocket_writes.FLUSH_EARLY_AT * 3, 4
    deliver, sockets = fan_out_over(count)
    first, second = message(1), message(2)
    for start in range(0, count, size):
        deliver([(f"s{n}", f"e{n}") for n in range(start, start + size)], (), [first], size)
    for start in range(size // 2, count + size // 2, size):
        deliver([(f"s{n % count}", f"e{n % count}") for n in range(start, start + size)],
                (), [second], size)
    assert all(sock.calls == [] for sock in sockets)
    gevent.sleep(0)
    frame = framing.frame_of
    assert [sock.calls for sock in sockets] == [[frame(first) + frame(second)]] * count


def test_a_frame_put_alone_keeps_its_place_among_packets():
    sock = RecordingSocket()
    writer = websocket_writes.DirectWriter(FakeWebSocket(), sock)
    frame = framing.frame_of
    writer.put(message(1))
    writer.put_frame(frame(message(2)))  # an ack, framed for this connection only
    writer.put(message(3))
    gevent.sleep(0)
    assert sock.calls == [frame(message(1)) + frame(message(2)) + frame(message(3))]
    writer.put(None)
    writer.put_frame(frame(message(4)))  # after the end: not sent
    writer.join(5)
    assert sock.calls == [frame(message(1)) + frame(message(2)) + frame(message(3))]


def test_held_frames_wait_for_the_release_and_leave_in_one_send():
    sock = RecordingSocket()
    writer = websocket_writes.DirectWriter(FakeWebSocket(), sock)
    writer.put(message(1))  # e.g. the sender's own copy of its message
    writer.hold()
    gevent.sleep(0)
    gevent.sleep(0)
    assert sock.calls == [] and writer.pending() == 1  # held across loop iterations
    writer.put(message(2))  # its ack, once Redis answered
    writer.release()
    gevent.sleep(0)
    frame = framing.frame_of
    assert sock.calls == [frame(message(1)) + frame(message(2))]
    writer.put(message(3))  # nothing held any more
    gevent.sleep(0)
    assert sock.calls[-1] == frame(message(3))


def test_while_a_sender_waits_for_its_ack_the_others_frames_wait_and_leave_with_it():
    # Clustered: a sender's ack comes with its publish's reply.  Meanwhile the other
    # members' frames wait too, so that each connection gets one write per reply rather
    # than one per loop turn and one more for its ack.
    sender_sock, member_sock = RecordingSocket(), RecordingSocket()
    sender = websocket_writes.DirectWriter(FakeWebSocket(), sender_sock)
    member = websocket_writes.DirectWriter(FakeWebSocket(), member_sock)
    for writer in (sender, member):
        writer.put(message(1))  # the sender's message, to the room
    sender.hold()
    gevent.sleep(0)
    member.put(message(2))  # another member's message, a turn later
    gevent.sleep(0)
    assert sender_sock.calls == [] and member_sock.calls == []
    sender.put(message(3))  # the ack, once Redis answered
    sender.release()
    gevent.sleep(0)
    frame = framing.frame_of
    assert sender_sock.calls == [frame(message(1)) + frame(message(3))]
    assert member_sock.calls == [frame(message(1)) + frame(message(2))]
    member.put(message(4))  # nobody held: the end of the turn writes, as in one process
    gevent.sleep(0)
    assert member_sock.calls[-1] == frame(message(4))


def test_frames_wait_for_a_held_connection_only_a_moment():
    held, waiting = RecordingSocket(), RecordingSocket()
    writer = websocket_writes.DirectWriter(FakeWebSocket(), held)
    other = websocket_writes.DirectWriter(FakeWebSocket(), waiting)
    writer.hold()  # whose reply never comes (Redis stalled)
    other.put(message(1))
    gevent.sleep(0)
    assert waiting.calls == []
    # nothing announces the moment: the frames leave by the loop's timer, unasked
    assert wait_until(lambda: waiting.calls, timeout=corks.REPLY_WAIT_AT_MOST * 100,
                      interval=corks.REPLY_WAIT_AT_MOST / 5, sleep=gevent.sleep)
    assert waiting.calls == [framing.frame_of(message(1))] and held.calls == []
    writer.release()
    gevent.sleep(0)


def test_only_direct_writers_can_be_held():
    server = socketio.Server(async_mode="gevent")
    assert websocket_writes.hold_writes(server, "no-such-sid") is None


def test_packets_sent_from_another_os_thread_reach_the_connection_in_order(socket_pair):
    import threading  # not monkey-patched in unit tests: a real OS thread

    server_end, client_end = socket_pair()
    writer = websocket_writes.DirectWriter(FakeWebSocket(), server_end)
    writer.put(message(0))
    thread = threading.Thread(target=lambda: [writer.put(message(n))  # type: ignore[func-returns-value]
                                              for n in range(1, 4)])
    thread.start()
    thread.join()
    assert read_frames(client_end, 4) == [f"42[\"m\",{n}]" + "." * 100 for n in range(4)]


# -- the queue ---------------------------------------------------------------------------

def test_the_queue_is_an_ordinary_queue_until_the_writer_takes_over(socket_pair):
    server_end, client_end = socket_pair()
    queue = websocket_writes.WriterQueue()
    queue.put(message(1))
    queue.put(message(2))
    assert queue.qsize() == 2
    writer = websocket_writes.DirectWriter(FakeWebSocket(), server_end)
    queue.hand_over(writer)
    queue.put(message(3))
    assert read_frames(client_end, 3) == [f"42[\"m\",{n}]" + "." * 100 for n in (1, 2, 3)]
    assert queue.qsize() == 0
    queue.put(None)
    assert queue.join(timeout=5) is True


# -- the setting -------------------------------------------------------------------------

@pytest.mark.parametrize("writes, direct", [("direct", True), ("engineio", False)])
def test_prroom_websocket_writes_chooses_the_write_path(writes, direct):
    from prroom.app import create_app

    app = create_app({"PRROOM_ASYNC_MODE": "gevent", "PRROOM_WEBSOCKET_WRITES": writes})
    eio = app.extensions["prroom"].socketio.server.eio
    assert (eio.create_queue is websocket_writes.WriterQueue) is direct
    assert getattr(eio.start_background_task, "_prroom_wrapped", False) is direct


def test_a_connection_held_and_released_in_one_turn_is_written_once_with_everything():
    sock = RecordingSocket()
    writer = websocket_writes.DirectWriter(FakeWebSocket(), sock)
    writer.put(message(1))
    writer.hold()
    writer.put(message(2))  # its ack: the reply came in the same turn
    writer.release()
    gevent.sleep(0)
    gevent.sleep(0)
    frame = framing.frame_of
    assert sock.calls == [frame(message(1)) + frame(message(2))]


def test_a_held_connection_passed_over_by_another_release_is_written_at_its_own():
    # two senders wait for replies of different batches: the first reply writes every
    # connection but the second sender, whose frames must still leave at its own reply
    first_sock, second_sock = RecordingSocket(), RecordingSocket()
    first = websocket_writes.DirectWriter(FakeWebSocket(), first_sock)
    second = websocket_writes.DirectWriter(FakeWebSocket(), second_sock)
    for writer in (first, second):
        writer.put(message(1))
        writer.hold()
    gevent.sleep(0)
    first.put(message(2))
    first.release()
    gevent.sleep(0)
    gevent.sleep(0)
    frame = framing.frame_of
    assert first_sock.calls == [frame(message(1)) + frame(message(2))]
    assert second_sock.calls == []
    second.put(message(3))
    second.release()
    gevent.sleep(0)
    gevent.sleep(0)
    assert second_sock.calls == [frame(message(1)) + frame(message(3))]


# -- what the slow-consumer watchdog is told ------------------------------------------------

def _installed_server():
    server = socketio.Server(async_mode="gevent")
    assert websocket_writes.install(server) is True
    return server


def test_a_queue_counts_as_waiting_until_a_direct_writer_takes_it_over(socket_pair):
    # counts, not nothing_waits(): other tests' servers in this process may hold sessions
    before = waiting.Waiting.queues
    queue = websocket_writes.WriterQueue()  # a session's, polling or mid-upgrade
    assert waiting.Waiting.queues == before + 1
    server_end, _ = socket_pair()
    queue.hand_over(websocket_writes.DirectWriter(FakeWebSocket(), server_end))
    assert waiting.Waiting.queues == before
    never_upgraded = websocket_writes.WriterQueue()
    assert waiting.Waiting.queues == before + 1
    del never_upgraded  # its session ended as long-polling
    assert waiting.Waiting.queues == before
    del queue
    assert waiting.Waiting.queues == before  # counted off once, at the hand-over


def test_a_writer_with_a_backlog_counts_as_waiting_until_it_is_written(socket_pair):
    before = waiting.Waiting.flushing
    server_end, client_end = socket_pair(small=True)
    writer = websocket_writes.DirectWriter(FakeWebSocket(), server_end)
    for number in range(2000):  # far beyond the socket buffers: a backlog forms
        writer.put(message(number))
    gevent.sleep(0)  # the end of the turn writes what the kernel takes
    assert writer.pending() > 0 and waiting.Waiting.flushing == before + 1
    read_frames(client_end, 2000)
    wait_until(lambda: waiting.Waiting.flushing == before, timeout=5, sleep=gevent.sleep)
    writer.put(None)  # the end is written by a flusher too, counted while it runs
    writer.join(timeout=5)
    assert waiting.Waiting.flushing == before


def test_the_watchdog_is_told_nothing_waits_only_when_both_counts_are_zero(monkeypatch):
    server = socketio.Server(async_mode="gevent")
    assert websocket_writes.install(server) is True
    monkeypatch.setattr(waiting.Waiting, "queues", 0)
    monkeypatch.setattr(waiting.Waiting, "flushing", 0)
    assert waiting.nothing_waits(server)
    monkeypatch.setattr(waiting.Waiting, "flushing", 1)
    assert not waiting.nothing_waits(server)
    monkeypatch.setattr(waiting.Waiting, "flushing", 0)
    monkeypatch.setattr(waiting.Waiting, "queues", 1)
    assert not waiting.nothing_waits(server)
    # the library's own queues count nothing: such a server is always looked at
    monkeypatch.setattr(waiting.Waiting, "queues", 0)
    assert not waiting.nothing_waits(socketio.Server(async_mode="gevent"))
    assert not waiting.nothing_waits(socketio.Server(async_mode="threading"))
