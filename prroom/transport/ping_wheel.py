"""Engine.IO pings and ping timeouts for all connections from two event-loop timers.

python-engineio gives each connection a task per ping (a greenlet sleeping through the ping
interval, or with :mod:`prroom.transport.writes` a loop timer of its own), and
checks ping timeouts from a service task that walks the sockets one at a time, waiting
``ping_timeout / len(sockets)`` between two: with ten thousand idle connections that was
thousands of timed waits a second just to look at each socket once per ``ping_timeout``.

With :func:`install` (gevent only), per event loop:

* a ping wheel: a connection whose ping is due goes into the bucket of the first tick at or
  after its due time (ticks ``tick_of(interval)`` apart, a small fraction of the interval),
  and one repeating timer sends every ping of a bucket when its tick comes, all sharing one
  PING packet (so one frame).  A ping is never early and late by less than one tick, which
  clients cannot tell from network jitter; the timer runs only while pings are pending;
* one sweep every ``ping_timeout / 2`` does what the service task did for every socket in a
  single pass: forget closed sockets, and close those whose pong is overdue
  (python-engineio's own ``check_ping_timeout``).  A missing pong is noticed at most
  half a ping timeout late, where the service task took up to a whole one.

What python-engineio must keep for this (checked by ``tests/internals/test_ping_sweep.py``):
the service task is ``Server._service_task`` started through ``start_background_task`` once
``start_service_task`` is set, pings are ``Socket._send_ping`` (a sleep, then ``last_ping``
and ``send(PING)`` unless closing or closed), and ``check_ping_timeout`` closes overdue
sockets.  If those change, :func:`install` installs nothing and the library's own tasks run.
"""
from __future__ import annotations

import logging
import math
import time
import weakref
from typing import Any, Dict, List, Optional

import gevent

logger = logging.getLogger("prroom")

SERVICE_QUALNAME = "Server._service_task"
PING_QUALNAME = "Socket._send_ping"
_WHEEL_ATTRIBUTE = "_prroom_ping_wheel"


def tick_of(interval: float) -> float:
    """Seconds between two ticks of the ping wheel for a ping interval of ``interval``."""
    return max(0.005, min(0.05, interval / 20))


class PingWheel:
    """Pending pings of one event loop, by tick; one repeating timer while any is pending."""

    def __init__(self, hub: Any, interval: float) -> None:
        self.interval = interval
        self.tick = tick_of(interval)
        self._loop = hub.loop
        self._buckets: Dict[int, List[Any]] = {}
        self._next = 0          # the first tick not yet served
        self._timer: Optional[Any] = None
        # imported here: the worker's idle connections import this module, and gunicorn
        # loads the worker before gevent patches ssl, which python-engineio brings in
        from engineio import packet as eio_packet

        self._ping = eio_packet.Packet(eio_packet.PING)

    def schedule(self, socket: Any) -> None:
        """Ping ``socket`` one ping interval from now (python-engineio's ``_send_ping``)."""
        due = math.ceil((time.monotonic() + self.interval) / self.tick)
        bucket = self._buckets.get(due)
        if bucket is None:
            bucket = self._buckets[due] = []
            if self._timer is None:
                self._next = min(due, math.floor(time.monotonic() / self.tick))
                self._timer = self._loop.timer(self.tick, self.tick)
                self._timer.start(self._on_tick)
        bucket.append(socket)

    def pending(self) -> int:
        """Pings waiting for their tick."""
        return sum(len(bucket) for bucket in self._buckets.values())

    def _on_tick(self) -> None:
        # in the hub: nothing here may block, and nothing may escape to the loop
        now = math.floor(time.monotonic() / self.tick)
        while self._next <= now:
            bucket = self._buckets.pop(self._next, None)
            self._next += 1
            if bucket:
                self._send(bucket)
        if not self._buckets and self._timer is not None:
            self._timer.close()
            self._timer = None

    def _send(self, sockets: List[Any]) -> None:
        ping = self._ping
        if getattr(ping, "encode_cache", None) is None:
            ping.encode()  # the shared packet's bytes, before any socket reads them
        sent_at = time.time()
        for socket in sockets:
            if socket.closing or socket.closed:
                continue
            try:
                socket.last_ping = sent_at
                socket.send(ping)  # never blocks: see websocket_writes.WriterQueue
            except Exception:  # one socket must not stop the others' pings
                logger.exception("sending a ping failed")

    @staticmethod
    def of_current_hub(interval: float) -> "PingWheel":
        """The wheel of the calling thread's event loop for pings ``interval`` apart."""
        hub = gevent.get_hub()
        wheels: Dict[float, PingWheel] = hub.__dict__.setdefault(_WHEEL_ATTRIBUTE, {})
        wheel = wheels.get(interval)
        if wheel is None:
            wheel = wheels[interval] = PingWheel(hub, interval)
        return wheel


#: Engine.IO servers whose pings the wheel sends (:func:`serve`).
_served: "weakref.WeakSet[Any]" = weakref.WeakSet()


def serve(eio: Any) -> None:
    """Note that the wheel sends ``eio``'s pings (what :func:`answer_pong` asks)."""
    _served.add(eio)


def answer_pong(socket: Any) -> bool:
    """Take a PONG from ``socket`` as python-engineio's ``Socket.receive`` does, straight:
    its ``schedule_ping`` (the next ping one interval from now, once per ping) puts the
    socket in the wheel.  Without the Engine.IO packet object, the packet's log call and
    the background-task hand-off: what an idle connection receives is mostly pongs.

    False, with nothing done, when the wheel does not send ``socket``'s server's pings or
    its logger logs every packet: the caller takes the library's path, log line and all.
    """
    eio = socket.server
    if eio not in _served or eio.logger.isEnabledFor(logging.INFO):
        return False
    if socket.last_ping:
        socket.last_ping = None
        PingWheel.of_current_hub(eio.ping_interval).schedule(socket)
    return True


class _Sweeper:
    """The service task's work for one Engine.IO server, one pass per half ping timeout."""

    def __init__(self, eio: Any) -> None:
        self.eio = eio
        self.period = max(0.01, eio.ping_timeout / 2)
        self._timer = gevent.get_hub().loop.timer(self.period, self.period)
        self._timer.start(self.sweep)

    def sweep(self) -> None:
        """Forget closed sockets; close the ones whose pong is overdue."""
        try:
            overdue = self._walk(self.eio.sockets)
        except Exception:  # the event loop must not see it
            logger.exception("ping timeout sweep failed")
            return
        if overdue:
            # closing runs the disconnect handlers, which may block: not in the hub
            gevent.spawn(self._close, overdue)

    @staticmethod
    def _close(overdue: List[Any]) -> None:
        for sock in overdue:
            try:
                if not (sock.closed or sock.closing):
                    sock.check_ping_timeout()  # closes it
            except Exception:
                logger.exception("closing a socket past its ping timeout failed")

    def _walk(self, sockets: Dict[str, Any]) -> List[Any]:
        now, timeout = time.time(), self.eio.ping_timeout
        overdue, closed = [], []
        for sid, sock in sockets.items():  # nothing here switches greenlets
            if sock.closed:
                closed.append(sid)
            elif not sock.closing:
                last_ping = sock.last_ping
                if last_ping and now - last_ping > timeout:
                    overdue.append(sock)
        for sid in closed:
            if sockets.get(sid) is not None and sockets[sid].closed:
                del sockets[sid]
        return overdue

    def join(self, timeout: Optional[float] = None) -> None:
        """What python-engineio's shutdown expects of the service task's handle."""
        return None


class _Ended:
    """The handle of a ping handed to the wheel: a task that has nothing left to do."""

    @staticmethod
    def join(timeout: Optional[float] = None) -> None:
        return None


def start_task(eio: Any, target: Any) -> Optional[Any]:
    """Take over ``target`` if it is a ping or the service task of ``eio``; None otherwise.

    Called from ``start_background_task``: the handle returned stands for the task.
    """
    name = getattr(target, "__qualname__", "")
    if name == PING_QUALNAME and getattr(target, "__self__", None) is not None:
        socket = target.__self__
        PingWheel.of_current_hub(socket.server.ping_interval).schedule(socket)
        return _Ended()
    if name == SERVICE_QUALNAME and getattr(target, "__self__", None) is eio:
        return _Sweeper(eio)
    return None
