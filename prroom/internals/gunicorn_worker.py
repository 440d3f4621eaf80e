"""gevent-websocket's gunicorn worker, with gunicorn's access log and a graceful goodbye.

``geventwebsocket.gunicorn.workers.GeventWebSocketWorker`` swaps gunicorn's request handler
for ``WebSocketHandler``, which logs through its own logger and so bypasses gunicorn's access
log: polling requests and WebSocket sessions became invisible to operators.  This worker is
the same worker with a handler that is both: WebSocket-capable, logging like gunicorn (a
WebSocket session is logged as ``101`` when it ends, with its duration).

On SIGTERM it also asks prroom to say goodbye (:meth:`prroom.PRRoom.shutdown`) instead of
letting open WebSockets hang until gunicorn's graceful timeout kills them.

pywsgi waits for a request line and headers as long as a client cares to take (a
"slowloris" holds a connection slot with a few bytes every now and then), and waits for the
next request on a kept-alive connection forever.  The handler gives a client
``PRROOM_HEADER_TIMEOUT`` seconds for the request line and headers, and a kept-alive
connection gunicorn's ``keepalive`` seconds of silence before its next request; then the
connection is closed, without a response and without a log line.  Neither applies once a
request is being served: long polls and WebSocket sessions keep their own (ping) timeouts.
"""
import email.parser
import os
import re
import sys
import time
from http import client
from typing import Any, Dict, List, Optional, Tuple

import gevent
from gevent import pywsgi
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler
from gunicorn.workers.ggevent import PyWSGIHandler

from prroom.core.config import SETTINGS_BY_KEY, ConfigError, server_settings
from prroom.internals import seams

#: gunicorn's exit status for a worker that cannot boot (Arbiter.WORKER_BOOT_ERROR): the
#: master then stops instead of starting the worker again and again.
WORKER_BOOT_ERROR = 3

#: Read buffer per connection.  pywsgi's default (8 KB) is sized for HTTP bodies; a chat
#: connection mostly waits, holding it for hours.  Frames larger than this are still read
#: whole, in more reads.
READ_BUFFER_BYTES = 1024

# gevent records, for every greenlet, the stack and greenlet that spawned it (a debugging
# aid).  With three greenlets per connection that was 4.3 KB of every idle connection's
# 54 KB (measured with 2,000 sockets); production does not need it.
gevent.config.track_greenlet_tree = False


class RequestHeaders:
    """A request's headers read back from its WSGI environ, instead of the parsed message.

    pywsgi's parsed ``http.client`` message (about 3 KB of objects, header strings
    included) would stay with a WebSocket connection for its whole life, beside the environ
    that holds the same values.  Only gunicorn's access log reads the headers again, as
    ``items()``.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Dict[str, Any]) -> None:
        self._environ = environ

    def items(self) -> List[Tuple[str, str]]:
        """(Name, value) pairs: ``HTTP_X_REQUEST_ID`` is ``X-Request-Id``, as WSGI folds them."""
        pairs = [(key[5:].replace("_", "-").title(), value)
                 for key, value in self._environ.items() if key.startswith("HTTP_")]
        for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
            if self._environ.get(key):
                pairs.append((name, self._environ[key]))
        return pairs

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of header ``name`` (any case), else ``default``."""
        name = name.lower()
        return next((value for key, value in self.items() if key.lower() == name), default)


#: http.client's limits on one header line and on their number (its private names).
_MAX_LINE: int = getattr(client, "_MAXLINE", 65536)
_MAX_HEADERS: int = getattr(client, "_MAXHEADERS", 100)
#: A header line as most clients send it: a token, a colon, printable ASCII (or tabs).
_PLAIN_HEADER = re.compile(rb"([!-9;-~]+):[ \t]*([\t -~]*?)\r?\n")


def parse_request_headers(fp: Any) -> Any:
    """The message ``http.client.parse_headers(fp, _class=OldMessage)`` returns, quicker.

    The lines are read as ``http.client`` reads them (same line and count limits); when
    every one is a plain ``Name: value`` line, the message is filled in directly, with the
    pairs the ``email`` parser would have made.  Any other line (folded, non-ASCII, no
    name, ...) and the whole block goes to the ``email`` parser, as pywsgi would have it.
    """
    lines: List[bytes] = []
    while True:
        line = fp.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAX_HEADERS:
            raise client.HTTPException("got more than %d headers" % _MAX_HEADERS)
        if line in (b"\r\n", b"\n", b""):
            break
    pairs = []
    for line in lines[:-1]:
        plain = _PLAIN_HEADER.fullmatch(line)
        if plain is None:
            text = b"".join(lines).decode("iso-8859-1")
            return email.parser.Parser(_class=pywsgi.OldMessage).parsestr(text)
        pairs.append((plain[1].decode("ascii"), plain[2].decode("ascii")))
    message = pywsgi.OldMessage()
    message._headers = pairs
    message.set_payload("")  # what the parser leaves: an empty body
    return message


#: handler id -> the timer of the request whose line and headers it is reading.
_header_timers: Dict[int, gevent.Timeout] = {}


class HeaderTimeout(BaseException):
    """A request line and headers not read in time.

    A BaseException, like gevent.Timeout itself, so that pywsgi's own ``except socket.error``
    and ``except Exception`` around the reads let it through to the handler.
    """


class AccessLoggingWebSocketHandler(WebSocketHandler, PyWSGIHandler):
    """gevent-websocket's handler with gunicorn's ``log_request`` (and WSGI environ).

    Also the header-read and keep-alive timeouts (the module's docstring); the worker sets
    both class attributes from its settings.
    """

    #: Seconds for a request line and its headers (PRROOM_HEADER_TIMEOUT).
    header_timeout = 10.0
    #: Seconds a kept-alive connection may stay silent before its next request.
    keepalive_timeout = 5.0

    def __init__(self, sock: Any, address: Any, server: Any, *args: Any, **kwargs: Any) -> None:
        # pywsgi's own would be an 8 KB buffer, made and dropped for every connection
        kwargs.setdefault("rfile", sock.makefile("rb", READ_BUFFER_BYTES))
        super().__init__(sock, address, server, *args, **kwargs)

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 - pywsgi's name
        """pywsgi's request-header parsing (``headers_factory``), without the ``email``
        parser for plain header lines."""
        try:
            return parse_request_headers(fp)
        except client.LineTooLong:  # as pywsgi's headers_factory answers it
            message = pywsgi.OldMessage()
            message.status = "Line too long"
            return message

    def handle_one_request(self) -> Any:
        """pywsgi's request cycle, with a deadline on everything before the application."""
        # pywsgi's requestline is None until a first request was read: a kept-alive one now
        if self.requestline is not None and not self._next_request_arrives():
            return None  # silent past the keep-alive timeout, or gone: close
        # One timer for the request line and every header, closed in get_environ when the
        # application takes over.  Kept outside the handler and this frame, which live as
        # long as a WebSocket session: nothing of it stays with an idle connection.
        _header_timers[id(self)] = gevent.Timeout(self.header_timeout, HeaderTimeout)
        _header_timers[id(self)].start()
        try:
            return super().handle_one_request()
        except HeaderTimeout:
            return None
        finally:
            self._stop_header_timer()

    def _stop_header_timer(self) -> None:
        timer = _header_timers.pop(id(self), None)
        if timer is not None:
            timer.close()

    def _next_request_arrives(self) -> bool:
        if self.rfile.closed:
            return False
        arrived = False
        with gevent.Timeout(self.keepalive_timeout, False):
            try:
                arrived = bool(self.rfile.peek(1))  # b"" when the client has gone
            except OSError:
                return False
        self.time_start = time.time()  # the access log times the request, not the idle wait
        return arrived

    def finalize_headers(self) -> None:
        """pywsgi's response headers, plus ``Connection: close`` when it will close.

        pywsgi honours a request's ``Connection: close`` without saying so in the response
        (HTTP/1.1 asks that it does); a client that keeps its connections alive by default
        (Node 19+'s HTTP agent) then sends its next request on a socket about to close.
        """
        super().finalize_headers()
        if self.close_connection and self.request_version == "HTTP/1.1" and self.code != 101 \
                and not any(name.lower() == b"connection" for name, _ in self.response_headers):
            self.response_headers.append((b"Connection", b"close"))

    def get_environ(self) -> Dict[str, Any]:
        """The WSGI environ; the parsed headers are then kept as plain pairs."""
        self._stop_header_timer()  # the request is read: no deadline for the application
        environ = super().get_environ()
        self.headers = RequestHeaders(environ)
        return environ

    def log_request(self) -> None:
        """Write the gunicorn access-log line, WebSocket upgrades included."""
        PyWSGIHandler.log_request(self)


class WebSocketWorker(GeventWebSocketWorker):
    """``GeventWebSocketWorker`` with :class:`AccessLoggingWebSocketHandler`."""

    wsgi_handler: type = AccessLoggingWebSocketHandler

    def init_process(self) -> None:
        """Give this worker's handler its timeouts, then start as gunicorn does.

        The handler's protections rest on pywsgi's and gunicorn's internals (the
        ``gunicorn-worker`` seam): if they are gone, the worker refuses to boot with one line.
        """
        try:
            accepted = SETTINGS_BY_KEY["PRROOM_ACCEPT_MISSING"].coerce(
                os.environ.get("PRROOM_ACCEPT_MISSING"))
            seams.apply("gunicorn-worker", lambda: True,
                        accepted=seams.parse_accepted(accepted))
        except (seams.SeamRefused, ConfigError, ValueError) as refused:
            self.log.error("%s", refused)
            sys.exit(WORKER_BOOT_ERROR)  # gunicorn's master stops: "Worker failed to boot"
        self.wsgi_handler = type("AccessLoggingWebSocketHandler", (self.wsgi_handler,), {
            "header_timeout": server_settings()["header_timeout"],
            "keepalive_timeout": float(self.cfg.keepalive)})
        super().init_process()

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: stop as gunicorn does, and have prroom close its connections now."""
        extension = getattr(self.wsgi, "extensions", {}).get("prroom")
        if extension is not None:
            # out of the signal handler: shutdown does I/O
            gevent.spawn(extension.shutdown)
        super().handle_exit(sig, frame)
