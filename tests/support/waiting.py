"""Waiting for a condition nothing announces: a log line, an HTTP answer, a port."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Call ``predicate`` until it returns something true or ``timeout`` seconds have passed.

    Returns the last value it returned (so ``assert wait_until(...)`` fails when it never
    became true); it is always called at least once, and once more at the deadline.  A
    predicate may raise to give up early.  ``sleep`` is how to wait between two calls: the
    browser tests pass Playwright's, which keeps the page's events flowing meanwhile.

    Only for what cannot be awaited: an event a client receives is awaited with its own
    timeout (``RoomClient.expect``), never polled for.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        left = deadline - time.monotonic()
        if value or left <= 0:
            return value
        sleep(min(interval, left))
