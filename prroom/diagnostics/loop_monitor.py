"""Who blocked the event loop, for how long, and what it was serving.

Under gevent every connection of a process shares one event loop: a host view that computes
for a second, or calls a C driver gevent cannot patch, freezes every chat of the process for
that second.  Two pieces:

- **the duration** comes from a repeating event-loop timer: when the loop comes back, the
  timer fires late by as long as it was held.  That callback (on the loop's own thread)
  observes the metrics and writes the one warning.
- **the stack** comes from a watchdog: a real OS thread (the one unpatched thread prroom
  starts) that wakes a few times per threshold, sees the timer has not ticked for longer than
  the threshold, and takes the loop thread's current frames (``sys._current_frames``): the
  code of the greenlet holding the loop, *while* it holds it.  It only keeps the report; it
  takes no lock and logs nothing.

gevent has a monitoring thread of its own (``gevent.config.max_blocking_time``), but to know
which greenlet is running it traces every greenlet switch, which costs every chat message a
little; this watchdog costs nothing per switch.

What the loop was serving is a label put on the frame that serves a request or an event
(:func:`serving`); the watchdog finds the innermost labelled frame in the blocked stack.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
import traceback
from types import FrameType
from typing import Callable, Deque, Dict, List, Optional, Tuple

import gevent
from gevent import monkey

from prroom.core.logtext import Verbatim
from prroom.internals import stacks

logger = logging.getLogger("prroom")

#: How often the lag timer fires: the resolution of the measured lag.
TICK_SECONDS = 0.05
#: Warnings come from a token bucket: this many at once, then one per WARN_EVERY_SECONDS (a
#: loop stuck in a loop, or an attacker hitting a slow route, must not flood the log).
WARN_BURST = 3
WARN_EVERY_SECONDS = 10.0
#: The window of ``worst_recent_lag``.
RECENT_SECONDS = 60.0
#: How many times per threshold the watchdog looks (it must look while the block lasts).
LOOKS_PER_THRESHOLD = 4
#: Frames kept of a blocked stack (the innermost ones).
STACK_LIMIT = 60

# frame -> (kind, name, limit) of its label; frames are hashable by identity, and a frame
# is only here while it runs.  The text is made only when a block is reported.
_labels: Dict[FrameType, Tuple[str, object, Optional[int]]] = {}


# whether a monitor runs in this process: without one (PRROOM_BLOCKING_THRESHOLD=0) nothing
# reads the labels, and none is put on
_watching = False


def serving(kind: str, name: object, limit: Optional[int] = None) -> None:
    """Label the calling frame with what it serves until it calls :func:`served`: read as
    ``"<kind> <name>"`` (``GET /diff``, ``event typing``), the name cut to ``limit``
    characters."""
    if _watching:
        _labels[stacks.getframe(1)] = (kind, name, limit)


def served() -> None:
    """The calling frame, labelled by :func:`serving`, is done serving."""
    # The frame is never handed back to the caller to keep: a frame holding itself in a
    # local is a reference cycle, and the whole call stack below would wait for the cyclic
    # garbage collector (every event's frames, on every event).
    if _watching:
        _labels.pop(stacks.getframe(1), None)


def label_of(frame: Optional[FrameType]) -> str:
    """What the innermost labelled frame of ``frame``'s stack serves, or ``"-"``."""
    while frame is not None:
        label = _labels.get(frame)
        if label is not None:
            kind, name, limit = label
            return f"{kind} {str(name)[:limit]}"
        frame = frame.f_back
    return "-"


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
        self._timer: Optional[object] = None
        self._last_tick = 0.0
        self._running = False
        self.last_lag = 0.0
        self.blocks = 0

    # -- start -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the lag timer on the running hub and the watchdog thread."""
        global _watching
        _watching = True
        hub = gevent.get_hub()
        self._last_tick = time.perf_counter()
        timer = hub.loop.timer(TICK_SECONDS, TICK_SECONDS)
        timer.start(self._tick)
        self._timer = timer
        self._running = True
        # the real OS-level functions, whether or not this process is monkey-patched
        get_ident = monkey.get_original("_thread", "get_ident")
        start_thread = monkey.get_original("_thread", "start_new_thread")
        start_thread(self._watch, (get_ident(),))

    def stop(self) -> None:
        """Stop the lag timer; the watchdog ends at its next look."""
        self._running = False
        if self._timer is not None:
            self._timer.stop()  # type: ignore[attr-defined]
            self._timer = None

    # -- the watchdog's thread -----------------------------------------------------------

    def _watch(self, loop_thread: int) -> None:
        sleep = monkey.get_original("time", "sleep")
        period = min(max(self.threshold / LOOKS_PER_THRESHOLD, 0.005), 0.25)
        reported_tick = 0.0
        frames_of = stacks.current_frames
        if frames_of is None:  # warnings then come without a stack
            return
        while self._running:
            sleep(period)
            last_tick = self._last_tick
            held = time.perf_counter() - last_tick - TICK_SECONDS
            if held < self.threshold or last_tick == reported_tick:
                continue
            frame = frames_of().get(loop_thread)
            if frame is None:  # the loop's thread is gone: the process is exiting
                return
            reported_tick = last_tick
            # a deque append is atomic: no lock shared with the loop's thread
            self._reports.append((time.perf_counter(), label_of(frame),
                                  traceback.format_stack(frame)[-STACK_LIMIT:]))
            del frame

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
            self._warn(now, lag)

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
                                                     "the watchdog looked)\n"])
        logger.warning(
            "event loop blocked for %.0f ms (PRROOM_BLOCKING_THRESHOLD=%.0f ms) while "
            "serving %s: every connection of this process waited%s. Stack of the code "
            "that held it:\n%s", lag * 1000, self.threshold * 1000, label,
            f" ({suppressed} more blocks since the last warning)" if suppressed else "",
            Verbatim("".join(stack).rstrip("\n")))

    def _report_since(self, started: float) -> Optional[Tuple[str, List[str]]]:
        found = None
        while self._reports:
            at, label, stack = self._reports.popleft()
            if at >= started and found is None:
                found = (label, stack)
        return found

    def worst_recent_lag(self) -> float:
        """The longest block of the last minute, in seconds (0.0 if none)."""
        cutoff = time.perf_counter() - RECENT_SECONDS
        return max((lag for at, lag in self._recent if at >= cutoff), default=0.0)


_lock = threading.Lock()
_monitors: Dict[int, LoopMonitor] = {}


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
