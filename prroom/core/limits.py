"""Per-socket rate limits: one token bucket per kind of event, O(1) per event.

Pure logic with an injectable clock, like :mod:`rooms`.  The event layer charges a bucket
before parsing (a flood of invalid events costs the sender as much as valid ones) and turns
a refusal into ``rate-limited`` with ``retryAfter``; a socket that keeps hammering after being
told is disconnected.

Refusals ("strikes") are counted until the socket has gone :data:`STRIKE_WINDOW` seconds
without one; an accepted event does not reset the count (it did: a flooder that let one
event through now and then, say one typing event in between its refused messages, was
never disconnected).  A client that hits a limit now and then, minutes apart, starts from
zero each time.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from prroom.core.protocol import ErrorCode, ProtocolError

#: Seconds without a refusal after which a socket's strikes are forgotten.
STRIKE_WINDOW = 60.0


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
    refused ``disconnect_after`` times with no :data:`STRIKE_WINDOW` free of refusals in
    between (accepted events in between do not matter).
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
        self._struck_at: Dict[str, float] = {}  # sid -> its last refusal

    def charge(self, sid: str, kind: str) -> None:
        """Spend one of ``sid``'s ``kind`` tokens or raise ProtocolError ``rate-limited``."""
        now = self._clock()
        buckets = self._buckets.get(sid)
        if buckets is None:
            buckets = self._buckets[sid] = [TokenBucket(rate, now) for rate in self._rates]
        wait = buckets[self._index[kind]].take(now)
        if not wait:
            return
        self._strikes[sid] = self.strikes(sid, now) + 1
        self._struck_at[sid] = now
        retry_after = math.ceil(wait * 1000) / 1000
        raise ProtocolError(ErrorCode.RATE_LIMITED,
                            f"too many {kind} events; retry in {retry_after:g} s",
                            retryAfter=retry_after)

    def rate(self, kind: str) -> Rate:
        """The rate of ``kind``'s buckets."""
        return self._rates[self._index[kind]]

    def strikes(self, sid: str, now: Optional[float] = None) -> int:
        """Refusals of ``sid`` since it last went :data:`STRIKE_WINDOW` without one."""
        strikes = self._strikes.get(sid, 0)
        if strikes and (self._clock() if now is None else now) - self._struck_at[sid] \
                >= STRIKE_WINDOW:
            del self._strikes[sid], self._struck_at[sid]
            return 0
        return strikes

    def abusive(self, sid: str) -> bool:
        """True once ``sid`` ignored ``disconnect_after`` rate-limit refusals (see above)."""
        return self.strikes(sid) >= self.disconnect_after

    def forget(self, sid: str) -> None:
        """Drop a disconnected socket's state."""
        self._buckets.pop(sid, None)
        self._strikes.pop(sid, None)
        self._struck_at.pop(sid, None)

    def take_state(self, sid: str) -> Tuple[Optional[List[TokenBucket]], int]:
        """Remove ``sid``'s buckets and strikes and return them (for a recoverable session)."""
        strikes = self.strikes(sid)
        self._strikes.pop(sid, None)
        self._struck_at.pop(sid, None)
        return self._buckets.pop(sid, None), strikes

    def put_state(self, sid: str, state: Tuple[Optional[List[TokenBucket]], int]) -> None:
        """Give ``sid`` the state :meth:`take_state` returned: a restore is not a refill."""
        buckets, strikes = state
        if buckets is not None:
            self._buckets[sid] = buckets
        if strikes:
            self._strikes[sid] = strikes
            self._struck_at[sid] = self._clock()  # the window starts again here


def export_state(state: Tuple[Optional[List[TokenBucket]], int], now: float) -> List[Any]:
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
