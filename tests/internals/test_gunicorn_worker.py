"""prroom's gunicorn worker: request headers for the access log, header and keep-alive timeouts.

The timeout tests serve a real gevent pywsgi server with the worker's handler on loopback.
"""
from __future__ import annotations

import email.parser
import inspect
import logging
import time
from http import client as http_client
from typing import Any, Callable, Iterator, List, Tuple

import gevent
import gevent.socket
import pytest
from gevent import pywsgi
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

from prroom.transport import headers as request_headers
from prroom.transport import worker as gunicorn_worker
from prroom.transport.headers import RequestHeaders
from prroom.transport.worker import AccessLoggingWebSocketHandler, HeaderTimeout


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


# -- request headers -------------------------------------------------------------------------

def test_pywsgi_still_parses_headers_through_message_class_and_takes_an_rfile():
    assert "self.headers = self.MessageClass(self.rfile, 0)" in inspect.getsource(
        pywsgi.WSGIHandler.read_request)
    assert "rfile" in inspect.signature(pywsgi.WSGIHandler.__init__).parameters
    factory = inspect.getsource(pywsgi.headers_factory)
    assert "client.parse_headers(fp, _class=OldMessage)" in factory
    assert "ret.status = 'Line too long'" in factory
    assert http_client._MAXLINE == request_headers._MAX_LINE  # type: ignore[attr-defined]
    assert http_client._MAXHEADERS == request_headers._MAX_HEADERS  # type: ignore[attr-defined]


HEADER_BLOCKS = {
    "socket.io-client": b"Host: 127.0.0.1:5000\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n"
                        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
                        b"\r\n\r\nleft for the body",
    "no headers": b"\r\n",
    "bare newlines": b"Host: a\nX-Trailing:  spaced out  \n\n",
    "duplicates": b"Cookie: a=1\r\ncookie: b=2\r\nCOOKIE: c=3\r\n\r\n",
    "empty value": b"X-Empty:\r\nX-Tab:\t\tv\t\r\n\r\n",
    "eof without blank line": b"Host: a\r\nAccept: */*\r\n",
    "folded": b"X-Long: one\r\n two\r\n\tthree\r\nHost: a\r\n\r\n",
    "non-ascii": b"X-Name: caf\xe9\r\nX-Nel: a\x85b\r\n\r\n",
    "no name": b": value\r\nHost: a\r\n\r\n",
    "no colon": b"Host a\r\nAccept: */*\r\n\r\n",
    "space before colon": b"Host : a\r\n\r\n",
    "unix from": b"From someone\r\nHost: a\r\n\r\n",
    "bare cr": b"X-A: b\rc\r\n\r\n",
    "form feed": b"X-A: b\x0cc\r\n\r\n",
    "too many": b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
    "line too long": b"X-Big: " + b"v" * 70000 + b"\r\n\r\n",
}


def _parsed(block: bytes, parse: Callable) -> Any:
    server_end, client_end = gevent.socket.socketpair()
    try:
        client_end.sendall(block)
        client_end.shutdown(2)
        rfile = server_end.makefile("rb", 1024)
        try:
            message = parse(rfile)
        except Exception as exc:
            return type(exc), str(exc)
        return (message.items(), message.get_payload(), [type(d) for d in message.defects],
                message.get_unixfrom(), message.get("host"), message.get("cookie"),
                list(message.headers), message.typeheader, rfile.read())
    finally:
        server_end.close()
        client_end.close()


@pytest.mark.parametrize("block", list(HEADER_BLOCKS.values()), ids=list(HEADER_BLOCKS))
def test_request_headers_parse_as_http_client_parses_them(block):
    def library(fp):
        return http_client.parse_headers(fp, _class=pywsgi.OldMessage)

    def ours(fp):  # with no total cap in the way (it is checked below)
        return request_headers.parse_request_headers(fp, max_bytes=1 << 30)

    assert _parsed(block, ours) == _parsed(block, library)


def test_request_headers_are_capped_in_total_across_lines():
    block = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 40) for i in range(10)) + b"\r\n"
    exact = len(block)

    def capped(limit: int) -> Callable:
        return lambda fp: request_headers.parse_request_headers(fp, max_bytes=limit)

    assert _parsed(block, capped(exact))[0][0] == ("X-0", "v" * 40)
    assert _parsed(block, capped(exact - 1)) == (
        request_headers.HeadersTooLarge, f"request headers over {exact - 1} bytes")
    # one long line is refused by the same cap, before it is read whole
    assert _parsed(HEADER_BLOCKS["line too long"], capped(16384))[0] is \
        request_headers.HeadersTooLarge


def test_the_handler_answers_an_overlong_header_line_as_pywsgi_does():
    server_end, client_end = gevent.socket.socketpair()
    client_end.sendall(HEADER_BLOCKS["line too long"])
    rfile = server_end.makefile("rb", 1024)
    handler = type("Handler", (), {"max_header_bytes": 1 << 20})()  # a cap past the line
    ours = AccessLoggingWebSocketHandler.MessageClass(handler, rfile)
    assert ours.status == "Line too long" and not ours.items()
    server_end.close()
    client_end.close()


@pytest.mark.parametrize("name", ["socket.io-client", "no headers", "bare newlines",
                                  "duplicates", "empty value", "eof without blank line"])
def test_plain_header_blocks_do_not_reach_the_email_parser(name, monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError("took the email parser")

    monkeypatch.setattr(email.parser, "Parser", refused)
    parsed = _parsed(HEADER_BLOCKS[name], request_headers.parse_request_headers)
    assert isinstance(parsed[0], list), parsed  # not an error caught by _parsed


# -- body deadline, header cap, session ids (issue #24) ----------------------------------------

def test_pywsgi_reaches_of_the_body_deadline_and_the_header_cap():
    one_request = inspect.getsource(pywsgi.WSGIHandler.handle_one_request)
    # the body is read in get_environ, and a 408 swaps the application just after
    assert one_request.index("self.environ = self.get_environ()") < one_request.index(
        "self.application = self.server.application") < one_request.index(
        "self.handle_one_response()")
    assert "return self._handle_client_error(ex)" in one_request  # 431 comes back this way
    one_response = inspect.getsource(pywsgi.WSGIHandler.handle_one_response)
    assert "self.wsgi_input._discard()" in one_response  # reads what is left: none, here
    assert list(inspect.signature(pywsgi.Input).parameters) == [
        "rfile", "content_length", "socket", "chunked_input"]
    assert {"rfile", "content_length", "socket", "chunked_input"} <= set(pywsgi.Input.__slots__)
    assert "def _discard(self):" in inspect.getsource(pywsgi.Input)
    environ = inspect.getsource(pywsgi.WSGIHandler.get_environ)
    assert "self.wsgi_input = Input(self.rfile, self.content_length" in environ
    assert "env['wsgi.input'] = self.wsgi_input if handling_reads else self.rfile" in environ


@pytest.mark.parametrize("text, expected", [
    ("/socket.io/?EIO=4&transport=polling&sid=abcDEF_-12",
     "/socket.io/?EIO=4&transport=polling&sid={tag}"),
    ("sid=abcDEF_-12&t=1", "sid={tag}&t=1"),
    ("GET /x?eio_sid=1&sid=abcDEF_-12 HTTP/1.1", "GET /x?eio_sid=1&sid={tag} HTTP/1.1"),
    ("/x?consid=1", "/x?consid=1"),
])
def test_session_ids_are_tagged_in_request_lines(text, expected):
    tag = gunicorn_worker.session_tag("abcDEF_-12")
    assert tag.startswith("~") and len(tag) == 11 and "abc" not in tag
    assert gunicorn_worker.redact_session_ids(text) == expected.format(tag=tag)


@pytest.mark.parametrize("message, args", [
    ("closing eio_sid=%s: too slow", ("Q2xvc2luZ0FCQ0RFRkdI",)),
    ("Invalid session Q2xvc2luZ0FCQ0RFRkdI", ()),
    ("Socket for session %s is not connected", ("Q2xvc2luZ0FCQ0RFRkdI",)),
    ("Cannot send to sid %s", ("Q2xvc2luZ0FCQ0RFRkdI",)),
])
def test_the_error_log_shows_no_engineio_session_id(message, args):
    record = logging.LogRecord("engineio.server", logging.ERROR, __file__, 1, message, args, None)
    assert gunicorn_worker.SessionIdFilter().filter(record)
    assert "Q2xvc2luZ0FCQ0RFRkdI" not in record.getMessage()
    assert gunicorn_worker.session_tag("Q2xvc2luZ0FCQ0RFRkdI") in record.getMessage()
    kept = logging.LogRecord("prroom", logging.INFO, __file__, 1, "connect sid=%s", ("abc",), None)
    gunicorn_worker.SessionIdFilter().filter(kept)
    assert kept.getMessage() == "connect sid=abc"  # a Socket.IO id stays


# -- a WebSocket upgrade's 101 reply, held for the first frame --------------------------------

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_pywsgi_writes_the_response_head_through_sendall_and_the_upgrade_replies_first():
    # the held reply rests on pywsgi sending the head with self._sendall, and on
    # gevent-websocket sending the 101 before the application runs, writing frames through
    # the WebSocket's raw_write
    assert "self._sendall(towrite)" in inspect.getsource(
        pywsgi.WSGIHandler._write_with_headers)
    run_application = inspect.getsource(WebSocketHandler.run_application)
    assert run_application.index("self.write(") < run_application.index("self.run_websocket()")
    from geventwebsocket.websocket import WebSocket
    assert "self.raw_write(" in inspect.getsource(WebSocket.send_frame)


def serve_websocket(app: Callable) -> Tuple[WSGIServer, gevent.socket.socket]:
    server = WSGIServer(("127.0.0.1", 0), app, handler_class=QuietHandler, log=None)
    server.start()
    conn = gevent.socket.create_connection(server.address)
    conn.settimeout(5)
    conn.sendall(UPGRADE)
    return server, conn


def received_until(conn: gevent.socket.socket, end: bytes) -> bytes:
    received = b""
    while end not in received:
        chunk = conn.recv(4096)
        assert chunk, f"closed after {received!r}"
        received += chunk
    return received


def test_a_frame_written_at_once_comes_after_the_whole_101_reply():
    def app(environ: dict, start_response: Callable) -> List[bytes]:
        environ["wsgi.websocket"].send("hello")
        return []

    server, conn = serve_websocket(app)
    try:
        received = received_until(conn, b"hello")
    finally:
        server.stop(timeout=1)
    head, _, frame = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ") and frame.startswith(b"\x81\x05hello")


def test_an_application_that_reads_first_still_gets_its_101_out():
    def app(environ: dict, start_response: Callable) -> List[bytes]:
        websocket = environ["wsgi.websocket"]
        websocket.send("echo: " + websocket.receive())
        return []

    server, conn = serve_websocket(app)
    try:
        assert received_until(conn, b"\r\n\r\n").startswith(b"HTTP/1.1 101 ")
        conn.sendall(b"\x81\x82abcd" + bytes(a ^ b for a, b in zip(b"hi", b"abcd")))
        assert b"\x81\x08echo: hi" in received_until(conn, b"echo: hi")
    finally:
        server.stop(timeout=1)


def test_an_application_that_writes_nothing_still_sends_the_101_then_closes():
    server, conn = serve_websocket(lambda environ, start_response: [])
    try:
        received, _ = read_until_closed(conn)
    finally:
        server.stop(timeout=1)
    # the reply, then the close frame gevent-websocket sends at the session's end
    assert received.startswith(b"HTTP/1.1 101 ") and received.endswith(b"\r\n\r\n\x88\x00")


# -- the access log, off ------------------------------------------------------------------

def test_gunicorn_writes_its_access_line_through_its_access_log_logger():
    from gunicorn import glogging

    assert "self.access_log.info(" in inspect.getsource(glogging.Logger.access)
    assert "self.access_log = logging.getLogger(\"gunicorn.access\")" in \
        inspect.getsource(glogging.Logger.__init__)


def test_an_access_line_is_built_only_when_a_handler_would_write_it():
    class Server:
        def __init__(self, access_log: Any) -> None:
            self.log = type("GunicornLog", (), {"access_log": access_log})()

    off = logging.getLogger("prroom-test.access-off")  # as prroom's config leaves it when off
    off.handlers, off.propagate = [], False
    on = logging.getLogger("prroom-test.access-on")
    on.propagate = False
    on.setLevel(logging.INFO)
    on.addHandler(logging.NullHandler())
    quiet = logging.getLogger("prroom-test.access-quiet")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    quiet.setLevel(logging.WARNING)
    assert gunicorn_worker._access_logged(Server(off)) is False
    assert gunicorn_worker._access_logged(Server(quiet)) is False
    assert gunicorn_worker._access_logged(Server(on)) is True
    assert gunicorn_worker._access_logged(object()) is True  # not gunicorn's: left to it


# -- the application as the worker serves it (the websocket-close seam) ----------------------

def _websocket_of(application: Any) -> Any:
    from geventwebsocket.websocket import WebSocket

    class Stream:
        def write(self, data: bytes) -> None:
            pass

        def read(self, count: int) -> bytes:
            return b""

    class Server:
        pass

    class Handler:
        logger = logging.getLogger("test")
        server = Server()  # gevent-websocket reads handler.server.application
    vars(Handler.server)["application"] = application
    return WebSocket({}, Stream(), Handler())


def test_gevent_websocket_takes_the_served_applications_close_listener() -> None:
    from prroom.transport.served_app import ServedApp

    def app(environ: Any, start_response: Any) -> List[bytes]:
        return [b"ok"]
    plain, served = _websocket_of(app), _websocket_of(ServedApp(app))
    # without one, each close builds a class of its own: what the seam saves
    assert type(plain.current_app) is not type(plain.current_app)
    assert served.current_app is served.current_app is ServedApp.current_app
    served.close()
    served.close()  # closed already: told to the listener, which does nothing
    assert served.closed


def test_the_served_application_is_the_app_to_its_callers() -> None:
    from flask import Flask

    from prroom.internals import seams
    from prroom.transport.served_app import ServedApp, served_app, unwrapped

    app = Flask("served")
    app.extensions["marker"] = 1

    @app.route("/")
    def index() -> str:
        return "hello"
    served = served_app(app)
    assert isinstance(served, ServedApp) and unwrapped(served) is app and unwrapped(app) is app
    replies: List[str] = []
    body = b"".join(served({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "x",
                            "SERVER_PORT": "80", "wsgi.url_scheme": "http"},
                           lambda status, headers, exc_info=None: replies.append(status)))
    assert (replies, body) == (["200 OK"], b"hello")
    assert {o.seam.name: o.status for o in seams.report()}["websocket-close"] == seams.INSTALLED

    class OwnListener:
        current_app = object()

        def __call__(self, environ: Any, start_response: Any) -> List[bytes]:
            return []
    own = OwnListener()
    assert served_app(own) is own


def test_loading_the_worker_brings_no_library_that_holds_ssl() -> None:
    # gunicorn imports the worker class before the worker's gevent patches ssl: whatever
    # the worker's modules import then keeps the unpatched ssl (a "gevent trap" at start,
    # and blocking TLS); python-engineio brings requests and urllib3 with it
    import subprocess
    import sys

    code = ("import sys, prroom.transport.worker, prroom.transport.idle; "
            "print(sorted(m for m in ('engineio', 'socketio', 'requests', 'urllib3') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
