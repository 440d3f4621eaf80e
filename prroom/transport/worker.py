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

A request body announced by ``Content-Length`` (a long-polling POST, an API post) is read
before the application sees the request, within ``PRROOM_BODY_TIMEOUT`` seconds of the end
of its headers (pywsgi would let the application wait on it for as long as the client
dribbles); a body not all there by then is answered ``408`` and the connection closed,
and the application (so the Engine.IO session) never hears of it.  Request headers are
bounded in total (``PRROOM_MAX_HEADER_BYTES``, like Node's 16 KB): past it, ``431``.  Bodies
larger than the frame limit are left to the application, which refuses them by their
``Content-Length`` before reading (python-engineio and prroom's posting endpoint do).

The access log never shows a session id: the ``sid`` query parameter of a long-polling
request is a bearer secret for its session, logged as a short hash of it, in the access log
and in the error log (:mod:`prroom.transport.session_ids`, re-exported here).
"""
import io
import logging
import os
import sys
import time
from http import client
from typing import Any, Dict, List, Optional, Set, Tuple

import gevent
from gevent.pywsgi import Input, OldMessage
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler
from gunicorn.workers.ggevent import PyWSGIHandler

from prroom.core.config import SETTINGS_BY_KEY, ConfigError, server_settings
from prroom.internals import gevent_io, seams
from prroom.transport import frames as websocket_frames
from prroom.transport import idle, served_app
from prroom.transport.headers import HeadersTooLarge, RequestHeaders, parse_request_headers
from prroom.transport.session_ids import SessionIdFilter as SessionIdFilter
from prroom.transport.session_ids import filter_session_ids as filter_session_ids
from prroom.transport.session_ids import redact_session_ids as redact_session_ids
from prroom.transport.session_ids import session_tag as session_tag

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


#: Bodies up to this size are read before the application when no frame limit is known.
_DEFAULT_BODY_BYTES = 1_000_000
_HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
                      b"Content-Length: 0\r\n\r\n")
class _UndrainedInput(Input):
    """pywsgi's request body, not read to its end after the response (see get_environ)."""

    __slots__ = ()

    def _discard(self) -> None:
        return None


#: ids of the handlers whose connection is detached (their access-log line waits for its end).
_detached: Set[int] = set()
#: handler id -> the timer of the request whose line and headers it is reading.
_header_timers: Dict[int, gevent.Timeout] = {}
#: handler id -> its WebSocket upgrade's 101 reply, not sent yet, with its WebSocket and that
#: WebSocket's own ``raw_write`` (see AccessLoggingWebSocketHandler.hold_upgrade_reply).
_held_replies: Dict[int, Tuple[bytes, Any, Any]] = {}


class HeaderTimeout(BaseException):
    """A request line and headers not read in time.

    A BaseException, like gevent.Timeout itself, so that pywsgi's own ``except socket.error``
    and ``except Exception`` around the reads let it through to the handler.
    """


class _DetachedWebSocket:
    """What a detached connection's handler shows gevent-websocket's cleanup: closed already,
    so that the cleanup leaves the real WebSocket open (:mod:`prroom.transport.idle`)."""

    closed = True


def _request_timeout(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
    """The application for a request whose body did not arrive in time."""
    start_response("408 Request Timeout", [("Content-Length", "0"), ("Connection", "close")])
    return []


class AccessLoggingWebSocketHandler(WebSocketHandler, PyWSGIHandler):
    """gevent-websocket's handler with gunicorn's ``log_request`` (and WSGI environ).

    Also the header-read, body-read and keep-alive timeouts and the header size cap (the
    module's docstring); the worker sets the class attributes from its settings.
    """

    #: Seconds for a request line and its headers (PRROOM_HEADER_TIMEOUT).
    header_timeout = 10.0
    #: Seconds for a request's body, from the end of its headers (PRROOM_BODY_TIMEOUT).
    body_timeout = 10.0
    #: Most bytes of request headers, all lines together (PRROOM_MAX_HEADER_BYTES).
    max_header_bytes = 16384
    #: Seconds a kept-alive connection may stay silent before its next request.
    keepalive_timeout = 5.0
    #: Whether this request's body failed to arrive in time (answered 408).
    body_missing = False
    #: Whether an idle WebSocket connection may leave this handler's greenlet
    #: (:mod:`prroom.transport.idle`).
    can_detach = True
    #: Whether a WebSocket upgrade's 101 reply waits for the connection's first frame (at
    #: most until the event loop comes round), to leave with it in one ``send``.
    hold_upgrade_reply = True
    # pywsgi's, set per request (declared for the type checker only)
    environ: Any
    wsgi_input: Any
    response_headers: Any

    def __init__(self, sock: Any, address: Any, server: Any, *args: Any, **kwargs: Any) -> None:
        # pywsgi's own would be an 8 KB buffer, made and dropped for every connection
        kwargs.setdefault("rfile", gevent_io.counted_reader(sock, READ_BUFFER_BYTES))
        super().__init__(sock, address, server, *args, **kwargs)

    def MessageClass(self, fp: Any, *args: Any) -> Any:  # noqa: N802 - pywsgi's name
        """pywsgi's request-header parsing (``headers_factory``), without the ``email``
        parser for plain header lines."""
        try:
            return parse_request_headers(fp, self.max_header_bytes)
        except client.LineTooLong:  # as pywsgi's headers_factory answers it
            message = OldMessage()
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

    def _sendall(self, data: Any) -> None:
        """pywsgi's write of response bytes; a WebSocket upgrade's 101 reply is held.

        Engine.IO's first packet (OPEN) follows the reply at once, from the same greenlet:
        the connection's writer (:func:`prroom.transport.writes.DirectWriter`) takes the held
        reply as its first frame (:meth:`take_upgrade_reply`), and both leave in one
        ``send`` instead of two.  Whatever else comes first sends the reply before it: a
        frame written by the WebSocket itself (gevent-websocket's ``raw_write``, its close
        frame too), the end of the session, or the event loop coming round (a read that
        waits, for one), so a client never waits for it.
        """
        websocket = self.__dict__.get("websocket")
        if self.code != 101 or not self.hold_upgrade_reply or websocket is None \
                or self.response_length or id(self) in _held_replies:
            super()._sendall(data)
            return
        raw_write = websocket.raw_write

        def write_after_reply(frame: bytes) -> None:
            self.release_upgrade_reply()
            raw_write(frame)

        _held_replies[id(self)] = (bytes(data), websocket, raw_write)
        websocket.raw_write = write_after_reply
        self.response_length += len(data)
        gevent.get_hub().loop.run_callback(self.release_upgrade_reply)

    def take_upgrade_reply(self) -> Optional[bytes]:
        """The held 101 reply, now the caller's to send first; None if none is held."""
        held = _held_replies.pop(id(self), None)
        if held is None:
            return None
        reply, websocket, raw_write = held
        websocket.raw_write = raw_write
        return reply

    def release_upgrade_reply(self) -> None:
        """Send the held 101 reply now, if one is still held."""
        reply = self.take_upgrade_reply()
        sock = getattr(self, "socket", None)  # pywsgi drops it when the connection ends
        if reply is not None and sock is not None:
            try:
                sock.sendall(reply)
            except OSError:  # gone: the session's reads and writes find out
                pass

    def _handle_client_error(self, ex: Exception) -> Any:
        """pywsgi's answer to a bad request; 431 for headers over the size cap."""
        if isinstance(ex, HeadersTooLarge):
            self.close_connection = True
            return ("431", _HEADERS_TOO_LARGE)
        return super()._handle_client_error(ex)

    def get_environ(self) -> Dict[str, Any]:
        """The WSGI environ, its body already read; the headers are then kept as plain pairs."""
        self._stop_header_timer()  # the request is read: no deadline for the application
        environ: Dict[str, Any] = super().get_environ()
        self.headers = RequestHeaders(environ)
        self.body_missing = False
        wsgi_input = self.wsgi_input
        # Any, not the dict lookup's Optional: past the identity test, mypy would otherwise
        # take wsgi_input for possibly None
        environ_input: Any = environ.get("wsgi.input")
        if environ_input is not wsgi_input:
            return environ  # an upgrade: no body
        length = int(self.content_length or 0)
        if length and not wsgi_input.chunked_input \
                and length <= (websocket_frames.frame_limit() or _DEFAULT_BODY_BYTES):
            body = self._read_body(length)
            if body is None:
                self.body_missing = True
                body = b""
            self.wsgi_input = environ["wsgi.input"] = Input(io.BytesIO(body), len(body))
        elif length or wsgi_input.chunked_input:
            # Larger than any body prroom reads, or chunked: the application reads what it
            # wants (prroom's refuse such bodies by their headers); what it leaves is not
            # read to the end after the response, as pywsgi would for the next request on
            # the connection, for as long as the client dribbles it: the connection closes.
            self.close_connection = True
            self.wsgi_input = environ["wsgi.input"] = _UndrainedInput(
                wsgi_input.rfile, wsgi_input.content_length, socket=wsgi_input.socket,
                chunked_input=wsgi_input.chunked_input)
        return environ

    def _read_body(self, length: int) -> Optional[bytes]:
        """The body's ``length`` bytes, or None if the client did not send them in time."""
        body: Optional[bytes] = None  # still None if the deadline ends the block
        with gevent.Timeout(self.body_timeout, False):
            try:
                body = self.wsgi_input.read(length)
            except OSError:  # gone, or closed early (pywsgi: "unexpected end of file")
                pass
        return body

    def handle_one_response(self) -> Any:
        """pywsgi's response; ``408`` and close instead when the body did not arrive."""
        if self.body_missing:
            self.application = _request_timeout
            self.close_connection = True
        return super().handle_one_response()

    def detach(self, environ: Dict[str, Any]) -> None:
        """Let this greenlet return without closing the connection: it lives on detached.

        gevent-websocket's and pywsgi's cleanups then find a WebSocket already closed and no
        socket; :class:`prroom.transport.idle.IdleConnection` does the rest at the end
        (:meth:`log_detached_end`).  ``environ`` is the copy of this request's environ that
        the application kept (Flask-SocketIO's): the access log reads it instead, and the
        original is not kept for the connection's life beside it.
        """
        _detached.add(id(self))  # not an attribute: a new key would grow the instance dict
        kept = self.__dict__.get("websocket")
        if environ is not self.environ and environ.get("wsgi.websocket") is kept \
                and kept is not None:
            kept.environ = environ
            self.environ = environ
            self.headers = RequestHeaders(environ)
        self.websocket = _DetachedWebSocket()
        self.socket = None

    def log_detached_end(self) -> None:
        """The end of a detached connection: its access-log line, with its duration."""
        _detached.discard(id(self))
        self.log_request()

    def run_websocket(self) -> None:
        """gevent-websocket's WebSocket session, which may end by detaching its connection."""
        try:
            super().run_websocket()
        except idle.Detached:
            pass
        finally:
            self.release_upgrade_reply()  # nothing was written: the reply, at least

    def log_request(self) -> None:
        """Write the gunicorn access-log line, WebSocket upgrades included, no session id."""
        if _detached and id(self) in _detached:
            return  # written when the connection ends (its real duration)
        if not _access_logged(self.server):
            return  # the line would go nowhere (PRROOM_ACCESS_LOG off): not built at all
        environ = self.environ
        if environ is None:  # refused before an environ was made (431): the line still tells
            method, _, rest = (self.requestline or "- -").partition(" ")
            path, _, version = rest.rpartition(" ")
            environ = {"REQUEST_METHOD": method, "RAW_URI": path or rest,
                       "SERVER_PROTOCOL": version or "-", "REMOTE_ADDR": self.client_address[0]
                       if isinstance(self.client_address, tuple) else "-"}
            if getattr(self, "response_headers", None) is None:
                self.response_headers = []  # none were made: gunicorn's atoms iterate them
        if "sid=" in environ.get("QUERY_STRING", "") or "sid=" in environ.get("RAW_URI", ""):
            environ = dict(environ)
            for key in ("QUERY_STRING", "RAW_URI", "REQUEST_URI"):
                if key in environ:
                    environ[key] = redact_session_ids(environ[key])
        if environ is self.environ:
            PyWSGIHandler.log_request(self)
            return
        kept = self.environ
        self.environ = environ
        try:
            PyWSGIHandler.log_request(self)
        finally:
            self.environ = kept


def _access_logged(server: Any) -> bool:
    """Whether gunicorn's access-log line would reach a handler; with an access log off,
    its logger has none, and gunicorn would still build every line (and its atoms)."""
    access = getattr(getattr(server, "log", None), "access_log", None)
    return not isinstance(access, logging.Logger) or (
        access.isEnabledFor(logging.INFO) and access.hasHandlers())


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
        settings = server_settings()
        filter_session_ids()
        self.wsgi_handler = type("AccessLoggingWebSocketHandler", (self.wsgi_handler,), {
            "header_timeout": settings["header_timeout"],
            "body_timeout": settings["body_timeout"],
            "max_header_bytes": settings["max_header_bytes"],
            "keepalive_timeout": float(self.cfg.keepalive)})
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the application as gunicorn does, then serve it as :mod:`served_app` says."""
        super().load_wsgi()
        self.wsgi: Any = served_app.served_app(self.wsgi)

    def handle_exit(self, sig: int, frame: Any) -> None:
        """SIGTERM: stop as gunicorn does, and have prroom close its connections now."""
        extension = getattr(served_app.unwrapped(self.wsgi), "extensions", {}).get("prroom")
        if extension is not None:
            # out of the signal handler: shutdown does I/O
            gevent.spawn(extension.shutdown)
        super().handle_exit(sig, frame)
