"""gevent-websocket's gunicorn worker, with gunicorn's access log and a graceful goodbye.

``geventwebsocket.gunicorn.workers.GeventWebSocketWorker`` swaps gunicorn's request handler
for ``WebSocketHandler``, which logs through its own logger and so bypasses gunicorn's access
log: polling requests and WebSocket sessions became invisible to operators.  This worker is
the same worker with a handler that is both: WebSocket-capable, logging like gunicorn (a
WebSocket session is logged as ``101`` when it ends, with its duration).

On SIGTERM it also asks prroom to say goodbye (:meth:`prroom.PRRoom.shutdown`) instead of
letting open WebSockets hang until gunicorn's graceful timeout kills them.
"""
import gevent
from geventwebsocket.gunicorn.workers import GeventWebSocketWorker
from geventwebsocket.handler import WebSocketHandler
from gunicorn.workers.ggevent import PyWSGIHandler

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

    def __init__(self, environ):
        self._environ = environ

    def items(self):
        """(Name, value) pairs: ``HTTP_X_REQUEST_ID`` is ``X-Request-Id``, as WSGI folds them."""
        pairs = [(key[5:].replace("_", "-").title(), value)
                 for key, value in self._environ.items() if key.startswith("HTTP_")]
        for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
            if self._environ.get(key):
                pairs.append((name, self._environ[key]))
        return pairs

    def get(self, name, default=None):
        """The value of header ``name`` (any case), else ``default``."""
        name = name.lower()
        return next((value for key, value in self.items() if key.lower() == name), default)


class AccessLoggingWebSocketHandler(WebSocketHandler, PyWSGIHandler):
    """gevent-websocket's handler with gunicorn's ``log_request`` (and WSGI environ)."""

    def __init__(self, sock, address, server, *args, **kwargs):
        super().__init__(sock, address, server, *args, **kwargs)
        self.rfile = sock.makefile("rb", READ_BUFFER_BYTES)  # replaces an 8 KB one

    def get_environ(self):
        """The WSGI environ; the parsed headers are then kept as plain pairs."""
        environ = super().get_environ()
        self.headers = RequestHeaders(environ)
        return environ

    def log_request(self):
        """Write the gunicorn access-log line, WebSocket upgrades included."""
        PyWSGIHandler.log_request(self)


class WebSocketWorker(GeventWebSocketWorker):
    """``GeventWebSocketWorker`` with :class:`AccessLoggingWebSocketHandler`."""

    wsgi_handler = AccessLoggingWebSocketHandler

    def handle_exit(self, sig, frame):
        """SIGTERM: stop as gunicorn does, and have prroom close its connections now."""
        extension = getattr(self.wsgi, "extensions", {}).get("prroom")
        if extension is not None:
            # out of the signal handler: shutdown does I/O
            gevent.spawn(extension.shutdown)
        super().handle_exit(sig, frame)
