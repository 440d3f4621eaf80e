"""Idle WebSocket connections held by the event loop, not by a parked greenlet each.

A WebSocket connection served by pywsgi keeps the greenlet that accepted it for its whole
life, parked deep in python-engineio's read loop (gunicorn's pool, pywsgi, gevent-websocket,
Flask-SocketIO, python-engineio): its saved C stack and its own Python frame stack are most
of what an idle connection costs.  With this module, once a connection has read everything
its client sent, it *detaches*: its read watcher (the socket's own libev watcher) is armed
with a callback, and the greenlet returns through that stack without closing anything.
When the client sends again, the callback hands the connection to one of a few shared
reader greenlets, which reads and dispatches what arrived exactly as the connection's own
greenlet would have (:mod:`prroom.transport.event_path`'s reader; a Socket.IO packet that
is not one of prroom's plain events straight to the engine.io server's ``message`` handler,
as python-engineio's ``Socket.receive`` would hand it; anything else to ``Socket.receive``),
and arms the watcher again when the input is drained.

What the unwound stack would have done at the end is done here when the connection ends
(:meth:`IdleConnection.end`): python-engineio's end of the read loop (the writer ended and
joined, the socket closed with ``transport close``, the session forgotten),
gevent-websocket's (the WebSocket closed), pywsgi's (the access-log line, with the
session's real duration) and the gevent server's (the socket closed, the pool's slot
freed).  The connection stays counted in gunicorn's pool by a placeholder greenlet that is
never started: ``worker_connections`` still bounds it, the graceful shutdown still waits
for it, and gunicorn's forced stop (which kills what the pool holds) ends it.

A connection the server closes while it is detached (a disconnect, a ping timeout, a
shutdown, a slow consumer dropped) ends when its client answers the close frame, or when
its writer cuts it (:mod:`prroom.transport.writes`): either way its watcher sees it.

Only prroom's worker can detach a connection (its handler knows how:
:meth:`prroom.transport.worker.AccessLoggingWebSocketHandler.run_websocket`); anything
missing -- another server, a pool that is full, a watcher in use -- and the connection
keeps its greenlet, as before.  ``PRROOM_IDLE_CONNECTIONS=greenlet`` turns this off.
"""
from __future__ import annotations

import collections
import logging
import time
import weakref
from typing import Any, Callable, Deque, List, Optional

import gevent
from gevent.pool import PoolFull

from prroom.internals import gevent_io
from prroom.transport import ping_wheel

logger = logging.getLogger("prroom")

#: Reader greenlets kept parked for the next connection with input; more are started when
#: every one is busy (a handler waiting on I/O, a client stalled inside a frame), and end
#: when they have nothing to do.
PARKED_READERS = 4
#: Frames one connection may have read in a row before the others get their turn.
FRAMES_PER_TURN = 32

#: The engine.io servers whose connections detach (``PRROOM_IDLE_CONNECTIONS``; see
#: :func:`install`): a setting of each app, as two apps in one process may differ.
_servers: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: Connections detached now (the ``prroom_loop_held_connections`` gauge).
_held = 0


def held() -> int:
    """How many connections of this process are detached now."""
    return _held


def enabled(eio: Any) -> bool:
    """Whether the connections of the engine.io server ``eio`` detach when idle."""
    return eio in _servers


class Detached(BaseException):
    """Raised through the connection's stack once it has detached; its handler stops it.

    A BaseException so that no ``except Exception`` between the read loop and the handler
    (python-engineio's read loop, the WSGI middlewares) mistakes it for a broken connection.
    """


class IdleConnection:
    """One detached WebSocket connection: what its unwound stack held, and its end."""

    __slots__ = ("socket", "ws", "handler", "sock", "rfile", "reader", "direct", "watcher",
                 "placeholder", "ended", "started")

    def __init__(self, socket: Any, ws: Any, handler: Any, reader: Any,
                 direct: Callable[[str, str], bool], watcher: Any) -> None:
        self.socket = socket  # python-engineio's Socket
        self.ws = ws  # python-engineio's WebSocketWSGI around gevent-websocket's WebSocket
        self.handler = handler
        self.sock = handler.socket
        self.rfile = handler.rfile  # open: the gevent server's close leaves the fd open
        self.reader = reader
        self.direct = direct
        self.watcher = watcher
        self.placeholder: Optional[gevent.Greenlet] = None
        self.ended = False
        self.started = handler.time_start

    # -- in the hub -------------------------------------------------------------------

    def readable(self) -> None:
        """The watcher's callback: input (or the client's close) arrived."""
        self.watcher.stop()
        _readers.hand(self.serve)

    def throw(self, *error: Any) -> None:
        """The hub's word that the socket is going away under the armed watcher.

        gevent's ``socket.shutdown`` and ``close`` cancel the waits on the socket's
        watchers: the hub then throws into ``callback.__self__``, a waiting greenlet in
        gevent's own use and this connection here (the cut after an unanswered close frame
        is such a shutdown).  As for input, the connection reads: the end of the stream,
        or the error, ends it.  (``tests/internals/test_idle_watchers.py`` fails if gevent
        stops throwing there.)
        """
        if self.ended:
            return
        try:
            self.watcher.stop()
        except Exception:  # closed with the socket already: nothing left to stop
            pass
        _readers.hand(self.serve)

    def killed(self, placeholder: Any) -> None:
        """The pool's slot was killed (gunicorn's forced stop): end the connection."""
        if not self.ended:
            self.watcher.stop()
            _readers.hand(self.end)

    # -- in a reader greenlet ---------------------------------------------------------

    def serve(self) -> None:
        """Read and dispatch what arrived; arm the watcher again, or end the connection."""
        if self.ended:
            return
        self.reader.drained = False
        for _ in range(FRAMES_PER_TURN):
            outcome = self._one()
            if outcome is None:
                self.end()
                return
            if outcome and self.reader.drained:
                self.watcher.start(self.readable)
                return
        _readers.ready.append(self.serve)  # still more: after the others' turn

    def _one(self) -> Optional[bool]:
        """Read one message and dispatch it: True if handled, None when the connection ended.

        As python-engineio's read loop (``Socket._websocket_handler``) and prroom's direct
        path (``event_path.direct_wait``) do it, with their log lines.
        """
        socket = self.socket
        eio = socket.server
        try:
            data = self.reader()
            if data and len(data) > eio.max_http_buffer_size:
                raise ValueError("packet is too large")
        except Exception as exc:
            if not socket.closed:
                eio.logger.info('%s: Unexpected error "%s", closing connection', socket.sid, exc)
            return None
        if data is None:
            return None
        if type(data) is str and data[:1] == "4" and data[1:2].isnumeric() \
                and not eio.async_handlers and not socket.closed:
            # an Engine.IO message holding a Socket.IO packet: python-engineio would decode
            # it to exactly ``data[1:]`` (a digit first is never JSON to it) and hand that to
            # its ``message`` handler; prroom's own events go straight to theirs
            try:
                if data[1] == "2" and self.direct(socket.sid, data[1:]):
                    return True
            except Exception:  # as python-engineio's dispatch of a message does
                logger.exception("message handler error")
                return True
            on_message = eio.handlers.get("message")
            if on_message is not None:
                try:
                    on_message(socket.sid, data[1:])
                except Exception:  # python-engineio's own line for it
                    eio.logger.exception("message handler error")
            return True
        if data == "3" and ping_wheel.answer_pong(socket):
            return True  # a PONG, most of what an idle connection receives
        return receive_packet(socket, data)

    def end(self) -> None:
        """Do what the unwound stack would have done when the connection ended."""
        global _held
        if self.ended:
            return
        self.ended = True
        _held -= 1
        self.watcher.stop()
        socket = self.socket
        try:
            socket.queue.put(None)  # the writer flushes what is left and closes the WebSocket
            socket.queue.join()
            socket.close(wait=False, abort=True, reason=socket.server.reason.TRANSPORT_CLOSE)
        except Exception:  # the connection is gone either way: it must still be closed
            logger.exception("closing a WebSocket session failed")
        eio = socket.server
        if eio.sockets.get(socket.sid) is socket:
            del eio.sockets[socket.sid]
        websocket = gevent_io.websocket_of(self.ws)
        if not websocket.closed:
            websocket.close()
        handler = self.handler
        handler.time_finish = time.time()
        handler.time_start = self.started
        try:
            handler.log_detached_end()
        except Exception:  # a log line must not keep the socket open
            logger.exception("writing the access log failed")
        handler.socket = None
        self.rfile.close()  # the last reference: the socket closes now
        self.sock.close()
        if self.placeholder is not None:
            self.placeholder.kill(block=False)  # frees the pool's slot
        self.reader = self.direct = None  # type: ignore[assignment]


def receive_packet(socket: Any, data: Any) -> Optional[bool]:
    """Give python-engineio's ``socket`` the message ``data`` as its read loop does.

    True when the loop would go on, None when it would end (its log lines included).
    """
    # imported here: gunicorn loads the worker (and so this module) before gevent patches
    # the standard library, and python-engineio brings requests and ssl with it
    from engineio import exceptions as eio_exceptions
    from engineio import packet as eio_packet

    try:
        socket.receive(eio_packet.Packet(encoded_packet=data))
    except eio_exceptions.UnknownPacketError:
        pass
    except eio_exceptions.SocketIsClosedError:
        socket.server.logger.info("Receive error -- socket is closed")
        return None
    except Exception:
        socket.server.logger.exception("Unknown receive error")
        return None
    return True


def detach(socket: Any, ws: Any, reader: Any, direct: Callable[[str, str], bool]) -> None:
    """Detach the connection of ``socket`` if it can be (raises :class:`Detached`); else return.

    Called by the connection's own greenlet in python-engineio's read loop, with nothing left
    to read (``reader.drained``).
    """
    websocket = gevent_io.websocket_of(ws)
    handler: Any = getattr(websocket, "handler", None)
    writer = getattr(socket.queue, "writer", None)
    if (socket.server not in _servers or not getattr(handler, "can_detach", False)
            or writer is None
            or not socket.upgraded or socket.upgrading or socket.closed or websocket.closed):
        return
    watcher = gevent_io.read_watcher(handler.socket)
    pool = getattr(handler.server, "pool", None)
    if watcher is None or pool is None or watcher.active:
        return
    connection = IdleConnection(socket, ws, handler, reader, direct, watcher)
    placeholder = gevent.Greenlet()
    try:
        pool.add(placeholder, blocking=False)  # counted while the handler's slot is freed
    except PoolFull:
        return
    placeholder.rawlink(connection.killed)
    connection.placeholder = placeholder
    watcher.start(connection.readable)
    handler.detach(ws.environ)
    global _held
    _held += 1
    raise Detached()


class _Readers:
    """The shared reader greenlets: each runs one connection's turn at a time."""

    def __init__(self) -> None:
        self.ready: Deque[Callable[[], None]] = collections.deque()
        self.parked: List[Any] = []  # greenlets waiting in hub.switch() for work
        self.starting = False  # a reader was spawned and has not run yet

    def hand(self, work: Callable[[], None]) -> None:
        """Run ``work`` in a reader greenlet: now, from the hub, if one is parked."""
        self.ready.append(work)
        if self.parked:
            reader = self.parked.pop()
            if gevent.getcurrent() is gevent.get_hub():
                reader.switch()  # as the hub wakes a greenlet waiting on a watcher
            else:
                gevent.get_hub().loop.run_callback(reader.switch)
        elif not self.starting:  # every reader is busy (waiting on I/O): one more
            self.starting = True
            gevent.spawn(self._run)

    def _run(self) -> None:
        hub = gevent.get_hub()
        self.starting = False
        while True:
            while self.ready:
                work = self.ready.popleft()
                if self.ready and not self.parked and not self.starting:
                    # this work may wait (a stalled client, a handler's I/O): the rest must
                    # not wait behind it, so at worst a reader per waiting connection
                    self.starting = True
                    gevent.spawn(self._run)
                try:
                    work()
                except Exception:  # one connection must not stop the others' reads
                    logger.exception("reading a WebSocket connection failed")
            if len(self.parked) >= PARKED_READERS:
                return
            self.parked.append(gevent.getcurrent())
            try:
                hub.switch()
            except BaseException:
                if gevent.getcurrent() in self.parked:
                    self.parked.remove(gevent.getcurrent())
                raise


_readers = _Readers()


def install(eio: Any, on: bool) -> bool:
    """Let the connections of the engine.io server ``eio`` detach when idle (``on``).

    True when they will: gevent's sockets must have the read watcher this module arms.
    """
    _servers.discard(eio)
    if on and gevent_io.read_watchers_available():
        _servers.add(eio)
    return eio in _servers
