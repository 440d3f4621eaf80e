"""A direct path for prroom's own events, from the WebSocket frame to the handler.

Between a client's text frame and the handler, python-engineio builds a packet (whose
decoder first tries the text as JSON, and takes an exception for every Socket.IO packet),
logs it, dispatches it as a ``message`` event, and python-socketio then builds a packet of
its own, looks at its type in ``_handle_eio_message``, logs it again and checks the
connection in ``_handle_event``: generic Python work paid for every incoming event.  Nearly
everything prroom's clients send has one shape, a text frame ``42[<ack id>][...]`` on the
default namespace naming one of prroom's events; those frames are decoded once here and
handed to prroom's wrapper of the entry point python-socketio itself calls for an event,
``Server._handle_event_internal`` (:func:`socketio_hooks.track_ack_requests`), which calls
the handler it was given at once and writes its ack without a packet object; the handler,
its ack, its errors and its metrics are the same.  Every other frame -- pings and pongs,
connects, acks, binary packets, other namespaces, the host's events, anything malformed,
oversized or unusual -- takes python-engineio's and python-socketio's path unchanged.

The frame is taken where python-engineio's WebSocket loop reads it: the gevent driver's
``WebSocketWSGI.wait``, whose ``app`` is the bound ``Socket._websocket_handler`` of the
connection's engine.io socket.  What decides is the engine.io server's ``message`` handler:
only prroom's packet guard (:func:`socketio_hooks.guard_packets`) carries a
:data:`DIRECT_ATTRIBUTE`, the function that dispatches one decoded event or declines it.
``tests/internals/test_event_path.py`` checks each reach and that both paths answer alike.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, List, Optional, Tuple

try:
    from geventwebsocket.websocket import MSG_CLOSED
    from wsaccel.xormask import XorMaskerSimple
except ImportError:  # pragma: no cover - dependencies of prroom; without them, no fast frames
    XorMaskerSimple = None

from prroom.internals import gevent_io  # noqa: E402 - after the optional imports above
from prroom.transport import idle  # noqa: E402

logger = logging.getLogger("prroom")

#: The attribute of the engine.io ``message`` handler that dispatches a plain event directly.
DIRECT_ATTRIBUTE = "_prroom_direct"
#: Socket.IO packets an ack id longer than this is left to the library (which refuses >100).
_MAX_ACK_DIGITS = 15
_DIGITS = frozenset("0123456789")  # str.isdigit would take other scripts' digits too

#: Where a connection's frame reader is kept, on the driver's WebSocketWSGI object.
_READER_ATTRIBUTE = "_prroom_reader"
#: The first byte of a final, unfragmented text frame with no extension bits (RFC 6455).
_FINAL_TEXT = 0x81

#: ``direct(eio_sid, text)``: True when the Socket.IO packet ``text`` was dispatched.
Direct = Callable[[str, str], bool]

#: The engine.io servers whose connections take the direct path.
_servers: "weakref.WeakSet[Any]" = weakref.WeakSet()


def plain_event(text: str,
                loads: Callable[[str], Any]) -> Optional[Tuple[Optional[int], List[Any]]]:
    """``(ack id or None, [event, *args])`` of a Socket.IO EVENT packet on ``/``; else None.

    ``text`` is the Engine.IO message's data (``2[<ack id>][...]``).  Only the plain shape
    is taken: no namespace, no attachment count, an ack id of a few digits, then a JSON
    array whose first item is a string.  None means "not this shape": the caller leaves
    the packet to python-socketio, which decodes (or refuses) it as it always does.
    """
    if text[:1] != "2":
        return None
    start = 1
    end = len(text)
    while start < end and text[start] in _DIGITS:
        start += 1
    if start == end or text[start] != "[" or start > _MAX_ACK_DIGITS + 1:
        return None
    try:
        data = loads(text[start:])
    except (ValueError, RecursionError):  # the library's path refuses it in its own way
        return None
    if type(data) is not list or not data or type(data[0]) is not str:
        return None
    ack_id = int(text[1:start]) if start > 1 else None
    return ack_id, data


class FrameReader:
    """gevent-websocket's ``websocket.receive``, quicker for a small text frame.

    Calling it reads one message.  A final, masked text frame that its read buffer already
    holds whole (the common case: a client's event is one small frame) is taken from the
    buffer in one read, unmasked and decoded in C.  Anything else -- fragments, control
    frames, binary, a frame larger than the buffer or not yet all there, a frame longer
    than ``limit`` -- is left in the buffer for the library's ``receive``, which reads it as
    before (and refuses a frame over the limit at its header:
    :mod:`prroom.transport.frames`).  ``drained`` says that the read buffer is known to be
    empty (the last frame ended where the buffered bytes did).
    """

    # a few attributes, no bound methods or closures: an idle connection keeps its reader
    __slots__ = ("websocket", "sock", "rfile", "limit", "drained")

    def __init__(self, websocket: Any, limit: Optional[int], sock: Any, rfile: Any) -> None:
        self.websocket = websocket
        self.sock = sock
        self.rfile = rfile
        self.limit = limit
        self.drained = False

    def __call__(self) -> Any:
        websocket = self.websocket
        receive = websocket.receive
        if websocket.closed:
            return receive()
        rfile = self.rfile
        try:
            if self.drained:  # a read now would only fail with EAGAIN, then wait
                gevent_io.wait_readable(self.sock)
            buffered = rfile.peek(1)  # at least a byte: waits for the client as receive would
        except OSError:  # the connection is gone (or timed out): as receive() answers that
            websocket.close()
            websocket.current_app.on_close(MSG_CLOSED)
            return None
        except ValueError:  # closed meanwhile
            return receive()
        self.drained = False
        available = len(buffered)
        if available < 6 or buffered[0] != _FINAL_TEXT or buffered[1] & 0x80 == 0:
            return receive()
        length = buffered[1] & 0x7F
        start = 6
        if length == 126:
            if available < 8:
                return receive()
            start, length = 8, int.from_bytes(buffered[2:4], "big")
        elif length == 127:
            return receive()
        end = start + length
        limit = self.limit
        if end > available or (limit is not None and length > limit):
            return receive()
        frame = rfile.read(end)  # what peek showed: no system call
        self.drained = end == available  # peek shows all the buffer holds
        payload = XorMaskerSimple(frame[start - 4:start]).process(frame[start:])
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:  # as gevent-websocket: close with 1007, return None
            websocket.close(1007)
            return None

    def nothing_waiting(self) -> bool:
        """Whether the connection may wait on its socket's read watcher now (never waits).

        True when the read buffer is empty: anything the socket holds wakes the watcher at
        once.  When the buffer's fill is not known (a reader not made by prroom's worker),
        only if the socket holds nothing either, which takes a non-blocking read.
        """
        if self.drained:
            return True
        buffered = gevent_io.buffered_bytes(self.rfile)
        if buffered is not None:
            # an empty buffer is enough: what the socket holds wakes the read watcher a
            # detached connection waits on, as after a drained frame
            return buffered == 0
        sock = self.sock
        timeout = sock.gettimeout()
        sock.settimeout(0.0)  # gevent's socket: a read that would wait fails instead
        try:
            return not self.rfile.peek(1)  # the buffer's bytes, else one non-blocking read
        except (OSError, ValueError):
            return False  # the next read finds out what is wrong
        finally:
            sock.settimeout(timeout)


def text_frame_reader(websocket: Any, limit: Optional[int] = None) -> Optional[FrameReader]:
    """A :class:`FrameReader` for gevent-websocket's ``websocket``; None if unsure."""
    handler = getattr(websocket, "handler", None)
    rfile = getattr(handler, "rfile", None)
    sock = getattr(handler, "socket", None)
    if (getattr(rfile, "peek", None) is None or getattr(rfile, "read", None) is None
            or getattr(websocket, "receive", None) is None or XorMaskerSimple is None
            or sock is None):
        return None
    return FrameReader(websocket, limit, sock, rfile)


def install(server: Any) -> bool:
    """Read prroom's own events straight from the frame for ``server``; False if unsupported.

    Patches python-engineio's gevent ``WebSocketWSGI`` (the gevent-websocket flavour) once
    per process; servers not passed here, and servers whose ``message`` handler has no
    :data:`DIRECT_ATTRIBUTE` (no prroom packet guard), keep the library's path.
    """
    try:
        from engineio.async_drivers import gevent as driver
    except ImportError:
        return False
    cls = getattr(driver, "WebSocketWSGI", None)
    wait = getattr(cls, "wait", None)
    eio = getattr(server, "eio", None)
    if (cls is None or wait is None or eio is None
            or getattr(driver, "SimpleWebSocketWSGI", True) is not None):
        return False  # simple-websocket's driver, or one this module does not know
    _servers.add(eio)
    if getattr(wait, "_prroom_wrapped", False):
        return True

    def direct_wait(ws: Any) -> Any:
        socket: Any = getattr(ws.app, "__self__", None)
        eio: Any = getattr(socket, "server", None)
        direct: Optional[Direct] = None
        if eio in _servers:
            direct = getattr(eio.handlers.get("message"), DIRECT_ATTRIBUTE, None)
        if direct is None:
            return wait(ws)
        receive = vars(ws).get(_READER_ATTRIBUTE)
        if receive is None:
            # one per connection: it knows when its buffer is empty
            websocket = gevent_io.websocket_of(ws)
            receive = vars(ws)[_READER_ATTRIBUTE] = (
                text_frame_reader(websocket, eio.max_http_buffer_size) or websocket.receive)
        reader = receive if isinstance(receive, FrameReader) and idle.enabled(eio) else None
        while True:
            if reader is not None and reader.nothing_waiting():
                idle.detach(socket, ws, reader, direct)  # raises idle.Detached, or returns
            data = receive()
            if (type(data) is not str or not data.startswith("42") or eio.async_handlers
                    or socket.closed or len(data) > eio.max_http_buffer_size):
                return data
            try:
                if not direct(socket.sid, data[1:]):
                    return data  # python-engineio's loop takes it from here
            except Exception:  # as python-engineio's dispatch of a message does
                logger.exception("message handler error")

    vars(direct_wait)["_prroom_wrapped"] = True
    cls.wait = direct_wait
    return True
