"""Per-socket rate limits: one token bucket per kind of event, O(1) per event.

Pure logic with an injectable clock, like :mod:`rooms`.  The event layer charges a bucket
before parsing (a flood of invalid events costs the sender as much as valid ones) and turns
a refusal into ``rate-limited`` with ``retryAfter``; a socket that keeps hammering after being
told is disconnected.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from prroom.core.protocol import ErrorCode, ProtocolError


class Rate(NamedTuple):
    """``per_second`` tokens refill continuously up to ``burst``."""

    per_second: float
    burst: int


class TokenBucket:
    """A classic token bucket; :meth:`take` returns 0 or the seconds until a token is due."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate.per_second
        self.burst = rate.burst
        self.tokens = float(rate.burst)
        self.updated = now

    def take(self, now: float) -> float:
        """Spend one token if there is one (0.0); else how long until there will be."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class SocketLimiter:
    """The buckets of every socket, by kind (``message``, ``typing``, ``room``).

    :meth:`charge` raises ``rate-limited``; :meth:`abusive` tells when a socket has been
    refused ``disconnect_after`` times in a row without waiting.
    """

    def __init__(self, rates: Dict[str, Rate], disconnect_after: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kinds: List[str] = list(rates)
        self._rates = [rates[kind] for kind in self.kinds]
        self._index = {kind: number for number, kind in enumerate(self.kinds)}
        self.disconnect_after = disconnect_after
        self._clock = clock
        self._buckets: Dict[str, List[TokenBucket]] = {}
        self._strikes: Dict[str, int] = {}

    def charge(self, sid: str, kind: str) -> None:
        """Spend one of ``sid``'s ``kind`` tokens or raise ProtocolError ``rate-limited``."""
        now = self._clock()
        buckets = self._buckets.get(sid)
        if buckets is None:
            buckets = self._buckets[sid] = [TokenBucket(rate, now) for rate in self._rates]
        wait = buckets[self._index[kind]].take(now)
        if not wait:
            if sid in self._strikes:
                del self._strikes[sid]
            return
        self._strikes[sid] = self._strikes.get(sid, 0) + 1
        retry_after = math.ceil(wait * 1000) / 1000
        raise ProtocolError(ErrorCode.RATE_LIMITED,
                            f"too many {kind} events; retry in {retry_after:g} s",
                            retryAfter=retry_after)

    def strikes(self, sid: str) -> int:
        """Refusals in a row for ``sid`` (0 after any accepted event)."""
        return self._strikes.get(sid, 0)

    def abusive(self, sid: str) -> bool:
        """True once ``sid`` ignored ``disconnect_after`` rate-limit refusals in a row."""
        return self._strikes.get(sid, 0) >= self.disconnect_after

    def forget(self, sid: str) -> None:
        """Drop a disconnected socket's state."""
        self._buckets.pop(sid, None)
        self._strikes.pop(sid, None)

    def take_state(self, sid: str) -> Tuple[Optional[List[TokenBucket]], int]:
        """Remove ``sid``'s buckets and strikes and return them (for a recoverable session)."""
        return self._buckets.pop(sid, None), self._strikes.pop(sid, 0)

    def put_state(self, sid: str, state: Tuple[Optional[List[TokenBucket]], int]) -> None:
        """Give ``sid`` the state :meth:`take_state` returned: a restore is not a refill."""
        buckets, strikes = state
        if buckets is not None:
            self._buckets[sid] = buckets
        if strikes:
            self._strikes[sid] = strikes


def export_state(state: Tuple[Optional[List[TokenBucket]], int], now: float) -> list:
    """:meth:`SocketLimiter.take_state`'s result as JSON for another process: each bucket's
    rate, burst, tokens and age (seconds since it was last charged), then the strikes."""
    buckets, strikes = state
    exported = None if buckets is None else [
        [bucket.rate, bucket.burst, bucket.tokens, max(0.0, now - bucket.updated)]
        for bucket in buckets]
    return [exported, strikes]


def import_state(data: Any, now: float) -> Tuple[Optional[List[TokenBucket]], int]:
    """The state :func:`export_state` wrote, for :meth:`SocketLimiter.put_state`; anything
    malformed is a fresh state (full buckets), never an error."""
    try:
        exported, strikes = data
        buckets: Optional[List[TokenBucket]] = None
        if exported is not None:
            buckets = []
            for rate, burst, tokens, age in exported:
                bucket = TokenBucket(Rate(float(rate), int(burst)), now - float(age))
                bucket.tokens = min(float(tokens), bucket.burst)
                buckets.append(bucket)
        return buckets, int(strikes)
    except (TypeError, ValueError):
        return None, 0
