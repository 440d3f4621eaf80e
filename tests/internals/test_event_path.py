"""prroom.transport.event_path: the direct path for prroom's own events, and what it needs.

The first tests fail loudly when python-engineio or python-socketio change what the direct
path stands in for; ``tests/integration/test_adversarial.py`` sends every malformed and
edge-case frame to a server with the direct path and one without, and expects the same.
"""
import inspect
import logging
import socket as stdlib_socket
from typing import Any, List, Optional

import engineio
import gevent
import gevent.event
import gevent.socket
import pytest
import socketio
from engineio.async_drivers import gevent as engineio_gevent
from geventwebsocket.websocket import Stream, WebSocket

from prroom.internals import gevent_io, packet_codec
from prroom.transport import event_path

# -- what the direct path stands in for -----------------------------------------------------


def test_engineio_reads_each_frame_through_the_drivers_wait():
    assert engineio_gevent.SimpleWebSocketWSGI is None  # gevent-websocket's flavour
    source = inspect.getsource(engineio.socket.Socket._websocket_handler)
    assert "data = ws.wait()" in source
    assert "pkt = packet.Packet(encoded_packet=p)" in source
    assert "self.receive(pkt)" in source
    assert "max_http_buffer_size" in source
    # the driver hands the engine.io socket's bound handler over as ``app``
    ws = engineio_gevent.WebSocketWSGI(engineio.socket.Socket._websocket_handler, None)
    assert ws.app is engineio.socket.Socket._websocket_handler


def test_engineio_hands_a_message_to_its_message_handler_and_nothing_else():
    source = inspect.getsource(engineio.socket.Socket.receive)
    assert "self.server._trigger_event('message', self.sid, pkt.data," in source
    assert "run_async=self.server.async_handlers" in source


@pytest.mark.parametrize("text", ["40", '40{"token":"t"}', "40/chat,", "41", "43[1]", "42[\"x\"]",
                                  "4" + "0" * 30, "40.5", "4٣x"])
def test_engineio_decodes_a_message_holding_a_socketio_packet_to_the_text_after_its_type(text):
    # the idle connections' reader hands ``text[1:]`` to the message handler itself for
    # these (a digit after the type: python-engineio never tries them as JSON)
    pkt = engineio.packet.Packet(encoded_packet=text)
    assert pkt.packet_type == engineio.packet.MESSAGE and pkt.data == text[1:]
    source = inspect.getsource(engineio.server.Server._trigger_event)
    assert "return self.handlers[event](*args)" in source
    assert "self.logger.exception(event + ' handler error')" in source


def test_socketio_dispatches_a_plain_event_to_handle_event_internal():
    source = inspect.getsource(socketio.Server._handle_event)
    assert "sid = self.manager.sid_from_eio_sid(eio_sid, namespace)" in source
    assert "if not self.manager.is_connected(sid, namespace):" in source
    assert ("self._handle_event_internal(self, sid, eio_sid, data, namespace,"
            in source.replace("\n", "").replace("  ", ""))
    decode = inspect.getsource(socketio.packet.Packet.decode)
    assert "ep[i].isdigit()" in decode and "self.id = int(ep[:i])" in decode


# -- decoding ----------------------------------------------------------------------------

LOADS = packet_codec.Packet.json.loads


@pytest.mark.parametrize("text, expected", [
    ('2["join-pr-room",{"pullRequestId":1}]', (None, ["join-pr-room", {"pullRequestId": 1}])),
    ('212["typing",{}]', (12, ["typing", {}])),
    ('20["x"]', (0, ["x"])),
    ('2["x",1,"two"]', (None, ["x", 1, "two"])),
])
def test_plain_events_are_decoded_as_python_socketio_decodes_them(text, expected):
    assert event_path.plain_event(text, LOADS) == expected
    pkt = packet_codec.Packet(encoded_packet=text)
    assert (pkt.id, pkt.data, pkt.namespace) == (*expected, None)


@pytest.mark.parametrize("text", [
    "", "2", "3[1]", "0", "1", "21", "2/ns,[\"x\"]", "2/,[\"x\"]", "21-[\"x\"]",
    "2{}", "2[]", "2[1]", "2[null]", '2 ["x"]', '2["x"', '2\u0663["x"]', '2\u00b2["x"]',
    "2" + "1" * 16 + '["x"]', '2["x",' + "[" * 20000 + "]" * 20000 + "]",
    '2["x",' + "9" * 5000 + "]", '2"x"',
])
def test_every_other_shape_is_left_to_the_library(text):
    assert event_path.plain_event(text, LOADS) is None


# -- the reading side ------------------------------------------------------------------------

class _Frames:
    """gevent-websocket's WebSocket as the driver uses it: ``receive()`` per frame."""

    def __init__(self, frames: List[Any]) -> None:
        self.frames = list(frames)

    def receive(self) -> Any:
        return self.frames.pop(0) if self.frames else None


class _Socket:
    """An engine.io socket, as far as the driver's ``app`` reaches it."""

    def __init__(self, eio: Any) -> None:
        self.server, self.sid, self.closed = eio, "eio-sid", False

    def _websocket_handler(self, ws: Any) -> None:  # pragma: no cover - never called
        raise AssertionError


class _Server:
    """A python-socketio server as far as install() reaches it."""

    def __init__(self, taken: Optional[List[str]], limit: int = 100) -> None:
        self.eio = engineio.Server(async_mode="gevent", max_http_buffer_size=limit,
                                   async_handlers=False)  # as python-socketio makes it
        self.taken = taken

        def message(eio_sid: str, data: Any) -> None:  # pragma: no cover - not reached
            raise AssertionError

        def direct(eio_sid: str, text: str) -> bool:
            assert eio_sid == "eio-sid"
            if taken is None or "decline" in text:
                return False
            taken.append(text)
            return True

        if taken is not None:
            vars(message)[event_path.DIRECT_ATTRIBUTE] = direct
        self.eio.handlers["message"] = message


def _reader(server: _Server, frames: List[Any]) -> Any:
    ws = engineio_gevent.WebSocketWSGI(_Socket(server.eio)._websocket_handler, None)
    ws._sock = _Frames(frames)
    return ws


def test_plain_event_frames_go_to_the_direct_dispatch_and_the_rest_to_engineio():
    taken: List[str] = []
    server = _Server(taken)
    assert event_path.install(server) is True
    ws = _reader(server, ['42["a"]', '421["b"]', "3", '42["decline"]', "40", b"\x04x",
                          "42" + "x" * 200, '42["c"]'])
    assert [ws.wait(), ws.wait(), ws.wait(), ws.wait(), ws.wait(), ws.wait()] == [
        "3", '42["decline"]', "40", b"\x04x", "42" + "x" * 200, None]
    assert taken == ['2["a"]', '21["b"]', '2["c"]']


def test_a_closed_socket_and_an_unguarded_server_keep_the_library_path():
    taken: List[str] = []
    guarded = _Server(taken)
    event_path.install(guarded)
    ws = _reader(guarded, ['42["a"]'])
    ws.app.__self__.closed = True
    assert ws.wait() == '42["a"]'
    unguarded = _Server(None)  # no prroom packet guard: nothing to hand frames to
    event_path.install(unguarded)
    assert _reader(unguarded, ['42["a"]']).wait() == '42["a"]'
    not_installed = _Server(taken)  # never passed to install()
    assert _reader(not_installed, ['42["a"]']).wait() == '42["a"]'
    assert taken == []


def test_a_failing_dispatch_costs_that_frame_only(caplog):
    server = _Server([])

    def broken(eio_sid: str, text: str) -> bool:
        raise RuntimeError("bug")

    vars(server.eio.handlers["message"])[event_path.DIRECT_ATTRIBUTE] = broken
    event_path.install(server)
    assert _reader(server, ['42["a"]', "3"]).wait() == "3"
    assert "message handler error" in caplog.text


@pytest.mark.parametrize("setting, direct", [("direct", True), ("library", False)])
def test_prroom_event_path_chooses_the_path(setting, direct):
    from prroom.app import create_app

    app = create_app({"PRROOM_ASYNC_MODE": "gevent", "PRROOM_EVENT_PATH": setting})
    server = app.extensions["prroom"].socketio.server
    assert (server.eio in event_path._servers) is direct
    # the packet guard offers the direct dispatch either way; only the setting uses it
    assert callable(getattr(server.eio.handlers["message"], event_path.DIRECT_ATTRIBUTE))


def test_idle_connections_is_a_setting_of_each_app():
    from prroom.app import create_app
    from prroom.transport import idle

    def eio(config):
        return create_app({"PRROOM_ASYNC_MODE": "gevent", **config}).extensions[
            "prroom"].socketio.server.eio

    loop = eio({})
    greenlet = eio({"PRROOM_IDLE_CONNECTIONS": "greenlet"})  # built last: must not turn off
    assert idle.enabled(loop) and not idle.enabled(greenlet)


# -- reading frames --------------------------------------------------------------------------

def _client_frame(payload: bytes, first: int = 0x81, mask: bytes = b"\x37\xfa\x21\x3d",
                  masked: bool = True) -> bytes:
    """A client's WebSocket frame (RFC 6455), masked unless ``masked`` is False."""
    length = len(payload)
    if length < 126:
        head = bytes([first, length | (0x80 if masked else 0)])
    elif length < 65536:
        head = bytes([first, 126 | (0x80 if masked else 0)]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, 127 | (0x80 if masked else 0)]) + length.to_bytes(8, "big")
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _Handler:
    """What gevent-websocket's WebSocket reaches of its pywsgi handler."""

    def __init__(self, sock: Any) -> None:
        self.socket = sock
        self.rfile = sock.makefile("rb", 1024)  # prroom's worker's read buffer
        self.server = type("Server", (), {"application": None})()
        self.logger = logging.getLogger("test")


def _read_all(stream: bytes, fast: bool, limit: Optional[int] = None,
              shut: bool = True) -> List[Any]:
    """What each receive() returns for ``stream`` until the WebSocket closes (prroom's reader
    with ``fast``, held to ``limit``; else gevent-websocket's), and what the server wrote back;
    with ``shut``, the client has finished sending."""
    server_end, client_end = gevent.socket.socketpair()
    client_end.sendall(stream)
    if shut:
        client_end.shutdown(stdlib_socket.SHUT_WR)
    handler = _Handler(server_end)
    ws = WebSocket({}, Stream(handler), handler)
    reader = event_path.text_frame_reader(ws) if limit is None \
        else event_path.text_frame_reader(ws, limit)
    receive = reader if fast else ws.receive
    assert receive is not None
    results: List[Any] = []
    with gevent.Timeout(5):  # a reader waiting for an announced payload would hang here
        while not ws.closed and len(results) < 20:
            results.append(receive())
    server_end.shutdown(stdlib_socket.SHUT_WR)
    written = b"".join(iter(lambda: client_end.recv(65536), b""))
    server_end.close()
    client_end.close()
    return [results, written]


_PING = _client_frame(b"hi", first=0x89)
STREAMS = {
    "small texts": _client_frame(b'42["typing",{}]') + _client_frame("h\u00e9llo".encode()),
    "16-bit length": _client_frame(b"4" + b"x" * 300) + _client_frame(b"3"),
    "64-bit length": _client_frame(b"4" + b"y" * 70000),
    "larger than the buffer": _client_frame(b"4" + b"z" * 2000) + _client_frame(b"3"),
    "binary": _client_frame(b"\x04bin", first=0x82) + _client_frame(b"3"),
    "ping between texts": _client_frame(b"3") + _PING + _client_frame(b"40"),
    "fragmented": _client_frame(b"42[", first=0x01) + _client_frame(b'"x"]', first=0x80),
    "invalid utf-8": _client_frame(b"4\xff\xfe") + _client_frame(b"3"),
    "unmasked": _client_frame(b"3", masked=False) + _client_frame(b"3"),
    "extension bit": _client_frame(b"3", first=0xC1),
    "close": _client_frame(b"\x03\xe8", first=0x88),
    "truncated": _client_frame(b"4" + b"x" * 50)[:30],
    "empty text": _client_frame(b"") + _client_frame(b"3"),
}


@pytest.mark.parametrize("stream", list(STREAMS.values()), ids=list(STREAMS))
def test_frames_read_alike_by_both_readers(stream):
    assert _read_all(stream, fast=True) == _read_all(stream, fast=False)


def test_small_whole_text_frames_never_reach_the_library_reader():
    class LibraryReaderRefused(WebSocket):
        def receive(self) -> Any:
            raise AssertionError("took gevent-websocket's reader")

    server_end, client_end = gevent.socket.socketpair()
    client_end.sendall(STREAMS["small texts"] + STREAMS["16-bit length"])
    handler = _Handler(server_end)
    receive = event_path.text_frame_reader(
        LibraryReaderRefused({}, Stream(handler), handler))
    assert receive is not None
    assert [receive() for _ in range(4)] == ['42["typing",{}]', "h\u00e9llo",
                                             "4" + "x" * 300, "3"]
    server_end.close()
    client_end.close()


def test_gevent_sockets_wait_on_their_read_watcher_after_eagain():
    source = inspect.getsource(gevent.socket.socket.recv_into)
    assert "self._wait(self._read_event)" in source
    server_end, client_end = gevent.socket.socketpair()
    assert server_end._read_event is not None
    assert gevent_io.read_watcher(server_end) is server_end._read_event
    assert gevent_io.read_watchers_available()
    server_end.close()
    client_end.close()


def test_a_counted_reader_knows_what_its_buffer_holds_without_reading():
    server_end, client_end = gevent.socket.socketpair()
    rfile = gevent_io.counted_reader(server_end, 64)
    assert gevent_io.buffered_bytes(rfile) == 0
    client_end.sendall(b"abcdef")
    assert rfile.readline(2) == b"ab" and gevent_io.buffered_bytes(rfile) == 4
    assert rfile.peek(1)[:4] == b"cdef" and gevent_io.buffered_bytes(rfile) == 4
    assert rfile.read(4) == b"cdef" and gevent_io.buffered_bytes(rfile) == 0
    assert gevent_io.buffered_bytes(server_end.makefile("rb")) is None  # not counted
    rfile.close()
    assert gevent_io.buffered_bytes(rfile) is None
    server_end.close()  # the counted reader was one of its files: now it closes
    assert server_end.fileno() == -1
    client_end.close()


def test_a_read_watcher_started_after_input_arrived_fires_at_once():
    # a connection detaches once its buffer is empty, whatever its socket holds: the
    # watcher is level-triggered, so input that came first still wakes it
    server_end, client_end = gevent.socket.socketpair()
    client_end.sendall(b"early")
    gevent.sleep(0.05)
    fired = gevent.event.Event()
    watcher = gevent_io.read_watcher(server_end)
    watcher.start(fired.set)
    try:
        assert fired.wait(2)
    finally:
        watcher.stop()
        server_end.close()
        client_end.close()


@pytest.mark.parametrize("fast", [True, False], ids=["prroom's reader", "library reader"])
def test_a_silent_client_times_out_and_a_shut_socket_wakes_the_reader(fast):
    server_end, client_end = gevent.socket.socketpair()
    server_end.settimeout(0.2)
    client_end.sendall(_client_frame(b"3"))
    handler = _Handler(server_end)
    ws = WebSocket({}, Stream(handler), handler)
    receive = event_path.text_frame_reader(ws) if fast else ws.receive
    assert receive is not None
    assert receive() == "3"
    assert receive() is None and ws.closed  # nothing came within the socket's timeout

    server_end, client_end = gevent.socket.socketpair()
    client_end.sendall(_client_frame(b"3"))
    handler = _Handler(server_end)
    ws = WebSocket({}, Stream(handler), handler)
    receive = event_path.text_frame_reader(ws) if fast else ws.receive
    assert receive is not None
    assert receive() == "3"
    gevent.spawn_later(0.1, server_end.shutdown, stdlib_socket.SHUT_RDWR)
    with gevent.Timeout(5):
        assert receive() is None
    server_end.close()
    client_end.close()
