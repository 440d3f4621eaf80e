"""prroom's gunicorn worker: request headers for the access log, header and keep-alive timeouts.

The timeout tests serve a real gevent pywsgi server with the worker's handler on loopback.
"""
from __future__ import annotations

import inspect
import time
from typing import Callable, Iterator, List, Tuple

import gevent
import gevent.socket
import pytest
from gevent import pywsgi
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from prroom.internals.gunicorn_worker import (
    AccessLoggingWebSocketHandler,
    HeaderTimeout,
    RequestHeaders,
)


def test_request_headers_come_back_from_the_environ_as_gunicorn_reads_them():
    headers = RequestHeaders({"HTTP_USER_AGENT": "node", "HTTP_X_REQUEST_ID": "abc",
                              "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": "",
                              "PATH_INFO": "/socket.io/", "wsgi.input": object()})
    assert sorted(headers.items()) == [("Content-Type", "application/json"),
                                       ("User-Agent", "node"), ("X-Request-Id", "abc")]
    assert headers.get("x-request-id") == "abc"
    assert headers.get("Upgrade", "none") == "none"


# -- the header-read and keep-alive timeouts ------------------------------------------------

HEADER_TIMEOUT = 0.3
KEEPALIVE_TIMEOUT = 0.3
REQUEST = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"


class QuietHandler(AccessLoggingWebSocketHandler):
    """The worker's handler with short timeouts and no gunicorn access log to write to."""

    header_timeout = HEADER_TIMEOUT
    keepalive_timeout = KEEPALIVE_TIMEOUT

    def log_request(self) -> None:
        pass


def slow_app(environ: dict, start_response: Callable) -> List[bytes]:
    gevent.sleep(HEADER_TIMEOUT * 2)  # longer than the header timeout: it must not apply
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture
def served() -> Iterator[Tuple[str, int]]:
    server = WSGIServer(("127.0.0.1", 0), slow_app, handler_class=QuietHandler, log=None)
    server.start()
    yield server.address
    server.stop(timeout=1)


def read_until_closed(conn: gevent.socket.socket, timeout: float = 5.0) -> Tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    started, received = time.monotonic(), b""
    conn.settimeout(timeout)
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


@pytest.mark.stress  # asserts the deadline, within a bound
def test_a_stalled_request_line_is_cut_silently(served: Tuple[str, int]) -> None:
    conn = gevent.socket.create_connection(served)
    conn.sendall(b"GET /slow HTT")
    received, elapsed = read_until_closed(conn)
    assert received == b"" and HEADER_TIMEOUT * 0.8 < elapsed < HEADER_TIMEOUT + 1


@pytest.mark.stress  # asserts the deadline, within a bound
def test_headers_trickled_byte_by_byte_are_cut_at_the_deadline(served: Tuple[str, int]) -> None:
    conn = gevent.socket.create_connection(served)
    started = time.monotonic()
    try:
        for byte in REQUEST[:-2]:  # one byte every 50 ms: never idle, never done
            conn.sendall(bytes([byte]))
            gevent.sleep(0.05)
    except OSError:  # cut while still sending: what the timeout is for
        pass
    received, _ = read_until_closed(conn)
    assert received == b"" and time.monotonic() - started < HEADER_TIMEOUT + 1


def test_a_complete_request_is_served_however_long_the_app_takes(
        served: Tuple[str, int]) -> None:
    conn = gevent.socket.create_connection(served)
    conn.sendall(REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    received, _ = read_until_closed(conn)
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"ok")
    # it says it closes, so that a client does not send its next request on this socket
    assert b"\r\nConnection: close\r\n" in received


def test_pywsgi_itself_closes_without_saying_so() -> None:
    server = WSGIServer(("127.0.0.1", 0), lambda environ, start_response: (
        start_response("200 OK", [("Content-Length", "0")]) and []), log=None)
    server.start()
    try:
        conn = gevent.socket.create_connection(server.address)
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received, _ = read_until_closed(conn)
    finally:
        server.stop(timeout=1)
    assert received.startswith(b"HTTP/1.1 200") and b"Connection" not in received


def test_a_kept_alive_connection_serves_the_next_request_then_idles_out(
        served: Tuple[str, int]) -> None:
    conn = gevent.socket.create_connection(served)
    conn.settimeout(5)
    for _ in range(2):  # the second request comes within the keep-alive timeout
        conn.sendall(REQUEST)
        response = b""
        while not response.endswith(b"ok"):
            response += conn.recv(4096)
        assert response.startswith(b"HTTP/1.1 200")
    received, idle = read_until_closed(conn)
    assert received == b"" and KEEPALIVE_TIMEOUT * 0.8 < idle < KEEPALIVE_TIMEOUT + 1


def test_pywsgi_still_reads_the_request_as_the_timeouts_assume() -> None:
    source = inspect.getsource(pywsgi.WSGIHandler.handle_one_request)
    # the request line, then the headers, then the environ, then the application
    order = [source.index(step) for step in ("self.read_requestline()", "if not self.read_request(",
                                             "self.environ = self.get_environ()",
                                             "self.handle_one_response()")]
    assert order == sorted(order)
    # only socket errors and Exceptions are caught on the way: gevent.Timeout gets through
    assert "except socket.error" in source and "except Exception" in source
    assert not issubclass(HeaderTimeout, Exception)
    assert "while self.socket is not None:" in inspect.getsource(pywsgi.WSGIHandler.handle)
    assert "handle_one_request" not in vars(WebSocketHandler)


def test_the_worker_freezes_what_loading_made_and_collects_the_young_less_often():
    import gc

    from prroom import gunicorn_config

    before = gc.get_threshold()
    try:
        gunicorn_config.post_worker_init(None)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (gunicorn_config.GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
