"""prroom.transport.frames: gevent-websocket's reader refuses an oversized frame at
its header (close 1009), and a fragmented message past the limit the same way.

The first test fails loudly when gevent-websocket changes the reaches the bound relies on;
the others run both frame readers (prroom's direct reader and the library's) on real
socket pairs.  ``tests/integration/test_transport_bounds.py`` checks the worker's memory.
"""
import inspect
import weakref
from typing import Any, Iterator, List

import geventwebsocket.websocket
import pytest

from prroom.transport import frames as websocket_frames
from tests.internals.test_event_path import _client_frame, _read_all

LIMIT = 1000
CLOSE_1009 = b"\x88\x02\x03\xf1"  # an unmasked close frame with code 1009


def test_gevent_websocket_decodes_the_header_before_it_reads_the_payload():
    source = inspect.getsource(geventwebsocket.websocket)
    read_frame = source[source.index("    def read_frame(self):"):]
    assert read_frame.index("header = Header.decode_header(self.stream)") < read_frame.index(
        "payload = self.raw_read(header.length)")
    read_message = source[source.index("    def read_message(self):"):]
    assert "header, payload = self.read_frame()" in read_message
    assert "message += payload" in read_message
    receive = source[source.index("    def receive(self):"):]
    assert "return self.read_message()" in receive
    # what receive catches: FrameTooBig must get past all of them to be answered with 1009
    assert not issubclass(websocket_frames.FrameTooBig, (OSError, UnicodeError))
    assert "def decode_header(cls, stream):" in source and "@classmethod" in source


class _Server:
    max_http_buffer_size = LIMIT


@pytest.fixture(autouse=True)
def limit(monkeypatch) -> Iterator[_Server]:
    """Only this test's engine.io server (limit LIMIT) is installed."""
    server = _Server()
    monkeypatch.setattr(websocket_frames, "_servers", weakref.WeakSet())
    assert websocket_frames.install(server)
    yield server
    assert not websocket_frames._message_bytes  # no running total outlives its message


def _receive_until_closed(stream: bytes, fast: bool, shut: bool = True) -> List[Any]:
    """What receive() returns until the WebSocket closes, and what the server wrote back."""
    return _read_all(stream, fast, LIMIT, shut)


HUGE_HEADER = b"\x82\xff" + (256 << 20).to_bytes(8, "big") + b"\x01\x02\x03\x04"


@pytest.mark.parametrize("fast", [True, False], ids=["prroom's reader", "library reader"])
def test_a_frame_announcing_more_than_the_limit_is_refused_at_its_header(fast):
    # the client keeps its side open and has sent only the header and a few bytes: a reader
    # that waited for the payload would block
    results, written = _receive_until_closed(HUGE_HEADER + b"x" * 10, fast, shut=False)
    assert results == [None]
    assert written == CLOSE_1009


@pytest.mark.parametrize("fast", [True, False], ids=["prroom's reader", "library reader"])
@pytest.mark.parametrize("length, refused", [(LIMIT, False), (LIMIT + 1, True)])
def test_the_limit_is_the_servers_frame_limit(fast, length, refused):
    results, written = _receive_until_closed(_client_frame(b"4" * length), fast)
    if refused:
        assert (results, written) == ([None], CLOSE_1009)
    else:
        assert results[0] == "4" * length and CLOSE_1009 not in written


@pytest.mark.parametrize("fast", [True, False], ids=["prroom's reader", "library reader"])
def test_a_fragmented_message_is_bounded_by_its_running_total(fast):
    part = b"x" * 400
    within = (_client_frame(part, first=0x01) + _client_frame(b"\x89", first=0x89)  # a ping
              + _client_frame(part, first=0x00) + _client_frame(b"y" * 200, first=0x80))
    results, written = _receive_until_closed(within + _client_frame(b"3"), fast)
    assert results[:2] == ["x" * 800 + "y" * 200, "3"] and CLOSE_1009 not in written

    past = (_client_frame(part, first=0x01) + _client_frame(part, first=0x00)
            + _client_frame(part, first=0x80))
    results, written = _receive_until_closed(past + _client_frame(b"3"), fast)
    assert results == [None] and written.endswith(CLOSE_1009)
    # a new message starts a new total
    results, _ = _receive_until_closed(_client_frame(part, first=0x01)
                                       + _client_frame(part, first=0x80) + _client_frame(
                                           part, first=0x01) + _client_frame(part, first=0x80),
                                       fast)
    assert results[:2] == ["x" * 800, "x" * 800]


def test_without_a_server_nothing_is_bounded(monkeypatch):
    monkeypatch.setattr(websocket_frames, "_servers", weakref.WeakSet())
    assert websocket_frames.frame_limit() is None
    websocket_frames.check_frame(1, 0x2, True, 10 ** 9)  # no limit: no refusal
