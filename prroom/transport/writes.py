"""A lighter WebSocket write path for python-engineio under gevent.

python-engineio gives every WebSocket connection two greenlets beside the one reading it: a
writer that waits on the socket's queue and sends one frame per packet, and a ping greenlet
that sleeps through each ping interval.  Profiled under broadcast load, the writer's wake-up,
queue hand-off and per-packet frame building were a third of the server's CPU (two greenlet
switches per delivered message), and the two greenlets' saved stacks and objects were about
a fifth of the memory held per idle connection.

With :func:`install`, for WebSocket connections served by gevent-websocket:

* a packet is written to the socket without blocking, by the event loop at the end of the
  iteration in which it was sent, together with every other packet sent to the same
  connection in that iteration (one system call, not one per packet; clustered, while a
  sender waits for its ack, until a reply: :mod:`~prroom.transport.corks`); the frame is
  built once per packet, so a room broadcast builds one frame for all members.  Only when the
  kernel's buffer is full is the rest queued and a greenlet started to flush it (as the
  writer did, with the same socket timeout); it ends when the backlog does;
* pings are sent by the event loop's ping wheel instead of a sleeping greenlet, and ping
  timeouts checked by one sweep instead of the service task (:mod:`ping_sweep`).

Order is kept: nothing is written directly while earlier bytes wait in the backlog.
Long-polling connections, and anything this module does not recognise, keep
python-engineio's own path.  It relies on python-engineio internals, all of them checked in
``tests/internals/test_websocket_writes.py``, which fails loudly when the library changes:
the socket's queue comes from ``server.create_queue()``, and the writer is the closure
``Socket._websocket_handler.<locals>.writer`` over ``self`` and ``ws``, started with
``server.start_background_task``.  If those change,
nothing breaks: the default path is used.
"""
from __future__ import annotations

import collections
import logging
from typing import Any, Callable, Deque, List, Mapping, Optional, Protocol, Sequence, Union

import gevent
import gevent.event
import gevent.queue

from prroom.transport import ping_wheel as ping_sweep
from prroom.transport.corks import Corks
from prroom.transport.corks import os_thread_id as _os_thread_id
from prroom.transport.frames import cut_after_linger
from prroom.transport.framing import frame_of
from prroom.transport.waiting import Waiting

logger = logging.getLogger("prroom")

#: Members of one broadcast after which the corked frames are written before the turn ends.
FLUSH_EARLY_AT = 64

_WRITER_QUALNAME = "Socket._websocket_handler.<locals>.writer"


class DirectWriter:
    """Writes one connection's packets straight to its socket; replaces the writer greenlet.

    A packet's frame is held until the current event-loop iteration ends (see
    :class:`~prroom.transport.corks.Corks`), then written without blocking with the others
    held for the same connection.  What the kernel does not take waits, in order, in a
    backlog that a greenlet flushes; it exists only while there is a backlog.  ``put(None)``
    ends it: the rest is flushed, the WebSocket closed, and :meth:`join` returns, which is
    what python-engineio expects of its writer.
    """

    # one per connection, for its whole life: no instance dict
    __slots__ = ("_ws", "_sock", "_corks", "_corked", "_backlog", "_flusher", "_ending",
                 "_done", "_ended", "_held")

    def __init__(self, ws: Any, sock: Any) -> None:
        self._ws = ws
        self._sock = sock
        self._corks = Corks.of_current_hub()
        self._corked: List[bytes] = []
        # a deque while the kernel's buffer is full (rare: made then)
        self._backlog: Optional[Deque[Union[bytes, memoryview]]] = None
        self._flusher: Optional[gevent.Greenlet] = None
        self._ending = False
        # made once someone waits for the end (join): most connections end unwaited for
        self._done: Optional[gevent.event.Event] = None
        self._ended = False
        self._held = 0  # while > 0, corked frames wait for release() (see hold_writes)

    def put(self, pkt: Any) -> None:
        """Send ``pkt`` (an Engine.IO packet), or end the connection's writing for ``None``.

        Callable from any OS thread: from another than the connection's, the packet is handed
        to the connection's event loop (gevent's primitives belong to one thread).
        """
        corks = self._corks
        if _os_thread_id() != corks.thread:
            corks.loop.run_callback_threadsafe(self.put, pkt)
            return
        if pkt is None:
            self.end()
            return
        if self._ending:
            return  # python-engineio's writer also sent nothing after the end
        self.put_frame(frame_of(pkt))

    def put_frame(self, frame: bytes) -> None:
        """Send one WebSocket frame built for this connection alone (an ack), as
        :meth:`put` sends a packet's: no Engine.IO packet object to build and cache it on."""
        corks = self._corks
        if _os_thread_id() != corks.thread:
            corks.loop.run_callback_threadsafe(self.put_frame, frame)
            return
        if self._ending:
            return
        if self._flusher is not None:
            self._wait_in_backlog(frame)
            return
        corked = self._corked
        corked.append(frame)  # before joining the corks: a big broadcast flushes them early
        if len(corked) == 1:  # the first this iteration: have the loop come back for it
            corks.add(self)

    def flush_turn(self) -> None:
        """Write every connection's corked frames now rather than at the end of the turn
        (for a broadcast to a big room: see :func:`fan_out`); from the loop's thread only."""
        corks = self._corks
        if _os_thread_id() == corks.thread:
            corks.flush()

    def hold(self) -> None:
        """Keep corked frames past the end of the iteration, until :meth:`release`; while
        any connection is held, the others' frames wait for a release too (see
        :mod:`~prroom.transport.corks`)."""
        if not self._held:
            self._corks.holding += 1
        self._held += 1

    def release(self) -> None:
        """End one :meth:`hold`; what it kept leaves at the end of this iteration."""
        self._held -= 1
        if self._held:
            return
        corks = self._corks
        corks.holding -= 1
        if self._corked and not self._ending:
            corks.add(self)
        corks.replied()

    def uncork(self) -> None:
        """Write what was held for the end of this loop turn (the corks call it)."""
        if self._held:
            return  # kept corked: release() brings it back to the loop
        frames, self._corked = self._corked, []
        if not frames or self._sock is None:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        try:
            sent = self._sock.send(data, 0, 0.0)  # gevent: timeout 0 = never wait
        except BlockingIOError:
            sent = 0
        except OSError:  # the peer is gone; the reader will see it too
            self.end()
            return
        if sent < len(data):
            self._wait_in_backlog(memoryview(data)[sent:])

    def _wait_in_backlog(self, data: Union[bytes, memoryview]) -> None:
        if self._backlog is None:
            self._backlog = collections.deque()
        self._backlog.append(data)
        self._start_flusher()

    def end(self) -> None:
        """Stop writing: the connection failed or closed."""
        if self._ending:
            return
        self._ending = True
        self._start_flusher()

    def _start_flusher(self) -> None:
        if self._flusher is None:
            Waiting.flushing += 1
            self._flusher = gevent.spawn(self._flush)

    def _flush(self) -> None:
        """Greenlet: send the backlog in order, waiting for the socket; close at the end."""
        backlog: Deque[Union[bytes, memoryview]] = self._backlog or collections.deque()
        self._backlog = backlog
        try:
            if self._ending and self._corked:  # ending before the loop came round
                backlog.extend(self._corked)
                self._corked = []
            while backlog:
                self._sock.sendall(backlog[0])
                backlog.popleft()
        except OSError:  # the peer is gone, or the socket timed out
            self._ending = True
        except BaseException:  # killed: no longer flushing, though the greenlet is gone
            Waiting.flushing -= 1
            raise
        self._backlog = None
        Waiting.flushing -= 1
        if not self._ending:
            self._flusher = None  # no yield since the backlog was seen empty
            return
        sock = self._sock
        try:
            self._ws.close()
        except Exception:  # closing a dead socket; nothing to tell
            pass
        # The Engine.IO socket outlives the connection a while (its ping timer holds it);
        # it must not hold the connection's WebSocket, handler and buffers with it.
        self._ws = self._sock = None
        cut_after_linger(sock)
        self._ended = True
        if self._done is not None:
            self._done.set()

    def pending(self) -> int:
        """Frames waiting for the socket (the slow-consumer watchdog reads this)."""
        return len(self._backlog or ()) + len(self._corked)

    def pending_bytes(self) -> int:
        """Bytes of the frames waiting for the socket (the watchdog's other bound)."""
        return sum(map(len, self._backlog or ())) + sum(map(len, self._corked))

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait until the writer has ended (as python-engineio joins its writer thread)."""
        if self._ended:
            return
        if self._done is None:
            self._done = gevent.event.Event()
        self._done.wait(timeout)


class WriterQueue:
    """An Engine.IO socket's outgoing queue that can hand its packets to a DirectWriter.

    Until the WebSocket writer starts (long-polling, the upgrade handshake) it is gevent's
    ``JoinableQueue``, made when something reads or waits on it (2.5 KB, slow to make: a
    WebSocket's OPEN packet waits in a list for the writer).  Afterwards ``put`` writes
    through the :class:`DirectWriter` and the queue is gone.
    """

    __slots__ = ("_queue", "_put", "writer")
    #: counted in :class:`~prroom.transport.waiting.Waiting` until its writer takes over
    counts_waiting = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._queue: Optional[gevent.queue.JoinableQueue] = None
        self._put: Optional[List[Any]] = None  # put before anything read or waited
        self.writer: Optional[DirectWriter] = None
        Waiting.queues += 1

    def __del__(self) -> None:
        if self.writer is None:  # a session that never wrote through a DirectWriter
            Waiting.queues -= 1

    def _real(self) -> gevent.queue.JoinableQueue:
        if self._queue is None:
            self._queue = gevent.queue.JoinableQueue()
            put, self._put = self._put, None
            for item in put or ():
                self._queue.put(item)
        return self._queue

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        writer = self.writer
        if writer is not None:
            writer.put(item)
        elif self._queue is not None:
            self._queue.put(item, block, timeout)
        else:  # unbounded: a put never waits, and nobody waits to get yet
            self._put = (self._put or []) + [item]

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        return self._real().get(block, timeout)

    def get_nowait(self) -> Any:
        return self._real().get_nowait()

    def task_done(self) -> None:
        self._real().task_done()

    def qsize(self) -> int:
        if self.writer is not None:
            return self.writer.pending()
        return len(self._put or ()) if self._queue is None else self._queue.qsize()

    def qbytes(self) -> int:
        """Bytes waiting to be written; 0 until a DirectWriter writes (packets are not
        encoded before then: that queue is bounded by its packet count, and drained by
        every poll)."""
        return 0 if self.writer is None else self.writer.pending_bytes()

    def empty(self) -> bool:
        return self.qsize() == 0

    def join(self, timeout: Optional[float] = None) -> bool:
        if self.writer is not None:
            self.writer.join(timeout)
            return True
        return True if self._queue is None and not self._put else self._real().join(timeout)

    def hand_over(self, writer: DirectWriter) -> None:
        """From now on write through ``writer``, after what is queued already (in order)."""
        queue, self._queue = self._queue, None
        put, self._put = self._put, None
        for item in put or ():
            writer.put(item)
        while queue is not None and queue.qsize():
            item = queue.get_nowait()
            queue.task_done()
            writer.put(item)
        if self.writer is None:
            Waiting.queues -= 1
        self.writer = writer


class Deliver(Protocol):
    """``deliver(members, skip, packets, size=0)``: see :func:`fan_out`."""

    def __call__(self, members: Any, skip: Any, packets: Sequence[Any],
                 size: int = 0) -> None:
        """Write ``packets`` to ``members``; ``size`` is how many there are, if known."""


def fan_out(sockets: Mapping[str, Any], fallback: Callable[[str, Any], None]) -> Deliver:
    """``deliver(members, skip, packets, size=0)``: Engine.IO ``packets`` to each room
    member ``(sid, eio_sid)`` whose sid is not in ``skip``, by the connections in ``sockets``.

    A connection that writes through a :class:`DirectWriter` (its queue has a ``writer``)
    gets the packets' frames, built once per broadcast, straight from here: not through
    python-socketio's ``_send_eio_packet``, ``eio.send_packet``, ``_get_socket`` and
    ``Socket.send``, four calls, a ping-timeout check (the ping sweep does that for every
    socket) and an ``info`` log call per member.  Any other connection (long-polling,
    mid-upgrade, closed, or with a ``send`` of its own, see
    :mod:`prroom.internals.connects`) gets each packet through ``fallback(eio_sid, packet)``,
    python-socketio's path.

    Frames wait for the end of the event-loop turn (:mod:`~prroom.transport.corks`), except
    in a room of more than :data:`FLUSH_EARLY_AT` members (``size``): there the first
    member's is written at once, so the first copies travel while the rest are queued, and
    then every :data:`FLUSH_EARLY_AT` members'.
    """
    def deliver(members: Any, skip: Any, packets: Sequence[Any], size: int = 0) -> None:
        frames: Optional[List[bytes]] = None
        single: Optional[bytes] = None
        countdown = 1 if size > FLUSH_EARLY_AT else FLUSH_EARLY_AT
        for sid, eio_sid in members:
            if sid in skip:
                continue
            sock: Any = sockets.get(eio_sid)
            try:  # (no cost unless it raises, unlike getattr with a default)
                writer = sock.queue.writer
            except AttributeError:  # gone (None), or a queue of the library's own
                writer = None
            if writer is None or sock.closed or "send" in vars(sock):
                for packet in packets:
                    fallback(eio_sid, packet)
                continue
            if frames is None:  # (one packet, nearly always: framed without a list built)
                frames = [frame_of(packets[0])] if len(packets) == 1 else \
                    [frame_of(packet) for packet in packets]
                single = frames[0] if len(frames) == 1 else None
            if single is not None:  # nearly always: a text packet, one frame
                writer.put_frame(single)
            else:
                for frame in frames:
                    writer.put_frame(frame)
            countdown -= 1
            if not countdown:
                # a big room: its members need not wait until every member's frame is
                # queued (the rest of the turn's frames still leave together)
                countdown = FLUSH_EARLY_AT
                writer.flush_turn()
    return deliver


def hold_writes(server: Any, eio_sid: str) -> Optional[Callable[[], None]]:
    """Hold what is sent to a connection from now on until the returned ``release()``.

    A clustered send's ack comes only with its publish's reply from Redis, after the
    sender's own copy of the message was corked: held, both leave in one ``send`` instead
    of two.  None (nothing held) unless the connection writes through a DirectWriter.
    """
    sockets = getattr(getattr(server, "eio", None), "sockets", None) or {}
    writer = getattr(getattr(sockets.get(eio_sid), "queue", None), "writer", None)
    if not isinstance(writer, DirectWriter):
        return None
    writer.hold()
    return writer.release


def _start_direct_writer(target: Callable[[], Any]) -> Optional["DirectWriter"]:
    """Start a DirectWriter in place of python-engineio's writer closure; None if unsure."""
    code = getattr(target, "__code__", None)
    closure = getattr(target, "__closure__", None)
    if code is None or not closure:
        return None
    captured = dict(zip(code.co_freevars, (cell.cell_contents for cell in closure)))
    socket, ws = captured.get("self"), captured.get("ws")
    queue = getattr(socket, "queue", None)
    # engine.io's gevent WebSocketWSGI wraps gevent-websocket's WebSocket as ``_sock``
    handler = getattr(getattr(ws, "_sock", None), "handler", None)
    sock = getattr(handler, "socket", None)
    if not isinstance(queue, WriterQueue) or sock is None or queue.writer is not None:
        return None
    writer = DirectWriter(ws, sock)
    # the handler's 101 reply, held for the first frame (OPEN): both leave in one send
    reply = getattr(handler, "take_upgrade_reply", lambda: None)()
    if reply:
        writer.put_frame(reply)
    queue.hand_over(writer)
    return writer


def install(server: Any, ping_wheel: bool = True) -> bool:
    """Use the direct write path for ``server`` (a python-socketio Server); False if not.

    With ``ping_wheel``, engine.io's pings and its service task are also taken over
    (:mod:`prroom.transport.ping_wheel`)."""
    eio = getattr(server, "eio", None)
    if eio is None or getattr(eio, "async_mode", None) != "gevent":
        return False
    if getattr(eio.start_background_task, "_prroom_wrapped", False):
        return True
    try:
        import geventwebsocket  # noqa: F401 - engine.io uses simple-websocket without it
    except ImportError:
        return False
    original_start = eio.start_background_task

    def start_background_task(target: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(target, "__qualname__", "")
        if name == _WRITER_QUALNAME and not args and not kwargs:
            writer = _start_direct_writer(target)
            if writer is not None:
                return writer
        elif ping_wheel and not args and not kwargs:
            handle = ping_sweep.start_task(eio, target)
            if handle is not None:
                return handle
        return original_start(target, *args, **kwargs)

    vars(start_background_task)["_prroom_wrapped"] = True
    eio.create_queue = WriterQueue
    eio.start_background_task = start_background_task
    if ping_wheel:
        ping_sweep.serve(eio)
    return True
