"""A clock the tests move by hand: the ``clock`` argument of RoomRegistry, SocketLimiter,
SessionRecovery and the other pieces that read the time."""
from __future__ import annotations


class FakeClock:
    """Returns ``now`` when called; :meth:`advance` moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        self.now += seconds
