"""Token buckets and the per-socket limiter, on a fake clock."""
import pytest

from prroom.core.limits import STRIKE_WINDOW, Rate, SocketLimiter, TokenBucket
from prroom.core.protocol import ProtocolError


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_bucket_allows_the_burst_then_says_when_to_retry():
    bucket = TokenBucket(Rate(per_second=2, burst=3), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token refilled after half a second
    assert bucket.take(0.5) == pytest.approx(0.5)


def test_bucket_never_holds_more_than_the_burst():
    bucket = TokenBucket(Rate(per_second=10, burst=2), now=0.0)
    assert [bucket.take(1000.0) for _ in range(3)][-1] > 0


def test_limiter_refuses_with_retry_after_and_kinds_are_independent():
    clock = Clock()
    limiter = SocketLimiter({"message": Rate(1, 2), "typing": Rate(1, 1)}, 3, clock)
    limiter.charge("a", "message")
    limiter.charge("a", "message")
    with pytest.raises(ProtocolError) as info:
        limiter.charge("a", "message")
    assert info.value.code == "rate-limited" and info.value.details["retryAfter"] == 1.0
    limiter.charge("a", "typing")     # another bucket: accepted
    limiter.charge("b", "message")    # another socket: accepted
    assert limiter.strikes("a") == 1 and limiter.strikes("b") == 0


def test_accepted_events_do_not_reset_the_strikes_only_a_quiet_window_does():
    clock = Clock()
    limiter = SocketLimiter({"message": Rate(1, 1), "typing": Rate(100, 100)},
                            disconnect_after=3, clock=clock)
    limiter.charge("a", "message")
    for expected in (1, 2, 3):
        with pytest.raises(ProtocolError):
            limiter.charge("a", "message")
        limiter.charge("a", "typing")  # an accepted event in between changes nothing
        assert limiter.strikes("a") == expected
    assert limiter.abusive("a")
    clock.now += 1
    limiter.charge("a", "message")  # accepted
    assert limiter.strikes("a") == 3 and limiter.abusive("a")
    clock.now += STRIKE_WINDOW  # a window without a refusal: forgotten
    assert limiter.strikes("a") == 0 and not limiter.abusive("a")


def test_forget_drops_a_sockets_state():
    """A socket forgotten (disconnected) has no past: a full burst again and no strikes."""
    clock = Clock()
    limiter = SocketLimiter({"message": Rate(1, 2)}, 3, clock)
    limiter.charge("a", "message")
    limiter.charge("a", "message")
    with pytest.raises(ProtocolError):
        limiter.charge("a", "message")
    assert limiter.strikes("a") == 1
    limiter.forget("a")
    assert limiter.strikes("a") == 0
    limiter.charge("a", "message")  # the whole burst, at the same instant: a fresh bucket
    limiter.charge("a", "message")
    with pytest.raises(ProtocolError) as info:
        limiter.charge("a", "message")
    assert info.value.details["retryAfter"] == 1.0
    assert limiter.strikes("a") == 1  # counted from zero again


def test_state_exported_to_another_process_is_not_a_refill():
    # a session restored on another process keeps its spent tokens; time away refills them
    from prroom.core.limits import export_state, import_state

    limiter = SocketLimiter({"message": Rate(1.0, 3)}, disconnect_after=5, clock=lambda: 100.0)
    for _ in range(3):
        limiter.charge("a", "message")
    exported = export_state(limiter.take_state("a"), now=100.0)
    elsewhere = SocketLimiter({"message": Rate(1.0, 3)}, disconnect_after=5,
                              clock=lambda: 5000.0)
    elsewhere.put_state("b", import_state(exported, now=5000.0))
    with pytest.raises(ProtocolError):
        elsewhere.charge("b", "message")   # still empty: no refill by moving
    assert import_state("garbage", 1.0) == (None, 0)
    assert import_state([[["x", 1, 1, 1]], 0], 1.0) == (None, 0)
