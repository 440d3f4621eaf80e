"""Who blocked the event loop, for how long, and what it was serving.

Under gevent every connection of a process shares one event loop: a host view that computes
for a second, or calls a C driver gevent cannot patch, freezes every chat of the process for
that second.  Two pieces, both from gevent itself:

- **the stack** comes from gevent's monitoring thread (``gevent.config.monitor_thread``,
  ``max_blocking_time``): while the loop is held past the threshold it reports the running
  greenlet's stack as a ``gevent.events.EventLoopBlocked`` event.  That runs in another OS
  thread, so the handler here only keeps the report; it takes no lock and logs nothing.
- **the duration** comes from a repeating event-loop timer: when the loop comes back, the
  timer fires late by as long as it was held.  That callback (on the loop's own thread)
  observes the metrics and writes the one warning, with the report kept during the block.

What a greenlet was serving is a label set on it when it starts a request or an event
(:func:`serving`), read by the monitoring thread from the blocked greenlet.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
import warnings
from typing import Any, Callable, Deque, List, Optional, Tuple

import gevent
import gevent.events
from gevent import getcurrent

logger = logging.getLogger("prroom")

#: How often the lag timer fires: the resolution of the measured lag.
TICK_SECONDS = 0.05
#: Warnings come from a token bucket: this many at once, then one per WARN_EVERY_SECONDS (a
#: loop stuck in a loop, or an attacker hitting a slow route, must not flood the log).
WARN_BURST = 3
WARN_EVERY_SECONDS = 10.0
#: How long a block's warning waits for the monitoring thread's report of it.
REPORT_WAIT_SECONDS = 0.25
#: The window of ``worst_recent_lag``.
RECENT_SECONDS = 60.0

_LABEL = "prroom_serving"


def serving(label: str) -> None:
    """Label the running greenlet with what it serves (``GET /diff``, ``event typing``)."""
    try:
        setattr(getcurrent(), _LABEL, label)
    except AttributeError:  # a greenlet type without a __dict__: no label, nothing breaks
        pass


def label_of(glet: Any) -> str:
    """What ``glet`` was serving, or ``"-"``."""
    return str(getattr(glet, _LABEL, "-"))


class LoopMonitor:
    """Watches one gevent hub; ``on_block(seconds)`` is told of every block past the
    threshold, after it ended (for metrics)."""

    def __init__(self, threshold_seconds: float,
                 on_block: Callable[[float], None] = lambda seconds: None) -> None:
        self.threshold = threshold_seconds
        self._on_block = on_block
        self._reports: Deque[Tuple[float, str, List[str]]] = collections.deque(maxlen=4)
        self._recent: Deque[Tuple[float, float]] = collections.deque(maxlen=64)
        self._warnings_left = float(WARN_BURST)
        self._last_warning = time.perf_counter()
        self._suppressed = 0
        self._timer: Any = None
        self._pending: Optional[Tuple[float, float]] = None  # a block not yet warned about
        self._last_tick = 0.0
        self.last_lag = 0.0
        self.blocks = 0

    # -- start -------------------------------------------------------------------------

    def start(self) -> bool:
        """Start the lag timer and gevent's monitoring thread; False if gevent cannot."""
        hub = gevent.get_hub()
        gevent.config.max_blocking_time = self.threshold
        gevent.config.monitor_thread = True
        if hasattr(gevent.config, "print_blocking_reports"):
            gevent.config.print_blocking_reports = False  # we log them, once, in our format
        if self._on_event not in gevent.events.subscribers:
            gevent.events.subscribers.append(self._on_event)
        with warnings.catch_warnings():
            # gevent also offers memory monitoring, and warns that it needs psutil
            warnings.simplefilter("ignore")
            thread = hub.start_periodic_monitoring_thread()
        if thread is None:
            logger.warning("event-loop monitor: gevent's monitoring thread did not start; "
                           "blocked-loop warnings will carry no stack")
        self._last_tick = time.perf_counter()
        self._timer = hub.loop.timer(TICK_SECONDS, TICK_SECONDS)
        self._timer.start(self._tick)
        return True

    def stop(self) -> None:
        """Stop the lag timer (gevent's monitoring thread is the hub's; it stays)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._on_event in gevent.events.subscribers:
            gevent.events.subscribers.remove(self._on_event)

    # -- the monitoring thread ---------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        if isinstance(event, gevent.events.EventLoopBlocked):
            # another OS thread: only an append (atomic), no lock, no logging
            self._reports.append((time.perf_counter(), label_of(event.greenlet),
                                  list(event.info)))

    # -- the loop's thread -------------------------------------------------------------

    def _tick(self) -> None:
        now = time.perf_counter()
        lag = max(0.0, now - self._last_tick - TICK_SECONDS)
        self._last_tick = now
        self.last_lag = lag
        if lag >= self.threshold:
            self.blocks += 1
            self._recent.append((now, lag))
            self._on_block(lag)
            if self._pending is not None:
                self._warn(*self._pending)
            self._pending = (now, lag)
        # The monitoring thread may still be writing its report when the loop comes back
        # (older gevent prints the whole greenlet tree first): wait a few ticks for it.
        if self._pending is not None and (self._reports or
                                          now - self._pending[0] >= REPORT_WAIT_SECONDS):
            pending, self._pending = self._pending, None
            self._warn(*pending)

    def _warn(self, now: float, lag: float) -> None:
        report = self._report_since(now - lag - TICK_SECONDS)
        self._warnings_left = min(WARN_BURST, self._warnings_left +
                                  (now - self._last_warning) / WARN_EVERY_SECONDS)
        self._last_warning = now
        if self._warnings_left < 1:
            self._suppressed += 1
            return
        self._warnings_left -= 1
        suppressed, self._suppressed = self._suppressed, 0
        label, stack = report if report else ("-", ["(no stack: the block ended before "
                                                     "gevent's monitor looked)"])
        logger.warning(
            "event loop blocked for %.0f ms (PRROOM_BLOCKING_THRESHOLD=%.0f ms) while "
            "serving %s: every connection of this process waited%s. Stack of the code "
            "that held it:\n%s", lag * 1000, self.threshold * 1000, label,
            f" ({suppressed} more blocks since the last warning)" if suppressed else "",
            "\n".join(stack))

    def _report_since(self, started: float) -> Optional[Tuple[str, List[str]]]:
        found = None
        while self._reports:
            at, label, info = self._reports.popleft()
            if at >= started and found is None:
                found = (label, _stack_of(info))
        return found

    def worst_recent_lag(self) -> float:
        """The longest block of the last minute, in seconds (0.0 if none)."""
        cutoff = time.perf_counter() - RECENT_SECONDS
        return max((lag for at, lag in self._recent if at >= cutoff), default=0.0)


def _stack_of(info: List[str]) -> List[str]:
    # gevent's report: a banner, "Greenlet ... appears to be blocked", "Blocked Stack (...)",
    # the frames, then "Info:" and more; keep the frames of the greenlet that held the loop
    lines: List[str] = []
    inside = False
    for line in info:
        if line.startswith("Blocked Stack"):
            inside = True
            continue
        if inside:
            if not line.strip() or line.startswith("Info:"):
                break
            lines.append(line)
    return lines[-60:] or [line for line in info if line.strip()][-20:]


_lock = threading.Lock()
_monitors: dict = {}


def monitor_of_hub(threshold_seconds: float,
                   on_block: Callable[[float], None]) -> LoopMonitor:
    """The one monitor of the running hub (a second app on the same hub shares it)."""
    hub = gevent.get_hub()
    with _lock:
        monitor = _monitors.get(id(hub))
        if monitor is None:
            monitor = _monitors[id(hub)] = LoopMonitor(threshold_seconds, on_block)
            monitor.start()
    return monitor
