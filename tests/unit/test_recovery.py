"""The pure recovery logic: room buffers, offsets, sessions, clientMessageId acks."""
from __future__ import annotations

from typing import List

from prroom.core.recovery import MAX_TOKEN_LENGTH, RoomBuffers, SentMessages, SessionStore, new_pid


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_offsets_are_ordered_and_only_this_process_s_parse() -> None:
    buffers = RoomBuffers(30, 10)
    first, second = buffers.record(1, "e", {}), buffers.record(2, "e", {})
    assert buffers.parse(first) < buffers.parse(second)  # type: ignore[operator]
    other = RoomBuffers(30, 10)
    other.record(1, "e", {})
    # (an epoch of digits only has no upper case: then that junk is the offset itself)
    upper = [first.upper()] if first.upper() != first else []
    for junk in (None, 7, "", "x", first + "0", *upper, "-1", "a" * 100,
                 first.split("-")[0] + "-ff", RoomBuffers(30, 10).record(1, "e", {})):
        assert buffers.parse(junk) is None, junk


def test_missed_is_in_order_across_rooms_and_skips_the_session_s_own() -> None:
    buffers = RoomBuffers(30, 10)
    start = buffers.parse(buffers.record(1, "m", "before"))
    assert start is not None
    buffers.record(1, "m", "a")
    buffers.record(2, "m", "b")
    buffers.record(3, "m", "not mine")
    buffers.record(1, "joined", "own", skip_sid="old")
    buffers.record(2, "m", "c")
    missed = buffers.missed([1, 2], start, "old")
    assert missed is not None
    assert [p.data for p in missed] == ["a", "b", "c"]


def test_a_dropped_packet_means_no_restore_at_all() -> None:
    clock = Clock()
    buffers = RoomBuffers(30, 3, clock)
    start = buffers.parse(buffers.record(1, "m", 0))
    assert start is not None
    for n in range(3):
        buffers.record(1, "m", n)
    assert buffers.missed([1], start, None) is not None  # exactly full: all still there
    buffers.record(1, "m", 3)
    assert buffers.missed([1], start, None) is None      # one dropped: refused
    newest = buffers.parse(buffers.record(1, "m", 4))
    assert newest is not None and buffers.missed([1], newest, None) == []
    clock.now += 31
    buffers.expire()
    assert buffers.packet_count() == 0 and buffers.room_count() == 0


def test_time_expiry_counts_as_dropped_while_the_room_is_kept() -> None:
    clock = Clock()
    buffers = RoomBuffers(10, 100, clock)
    start, _ = buffers.marker()
    buffers.record(5, "m", "x")
    clock.now += 11
    buffers.expire(keep=lambda room: room == 5)
    assert buffers.room_count() == 1
    assert buffers.missed([5], start, None) is None


def test_sessions_are_one_shot_and_expire() -> None:
    clock = Clock()
    store = SessionStore(10, 2, clock)
    store.persist("p1", None, {1: "alice"}, None, "sid1", 3)
    session = store.take("p1")
    assert session is not None and session.rooms == {1: "alice"}
    assert store.take("p1") is None
    store.persist("p2", None, {}, None, "s", 0)
    clock.now += 11
    assert store.take("p2") is None
    store.persist("p3", None, {2: "bob"}, None, "s", 0)
    assert store.rooms() == {2}
    clock.now += 11
    assert [s.pid for s in store.expire()] == ["p3"] and len(store) == 0
    for junk in (None, 5, {"a": 1}, "x" * (MAX_TOKEN_LENGTH + 1)):
        assert store.take(junk) is None


def test_the_session_store_is_bounded() -> None:
    store = SessionStore(10, 3)
    for n in range(10):
        store.persist(f"p{n}", None, {}, None, "s", 0)
    assert len(store) == 3 and store.take("p0") is None and store.take("p9") is not None


def test_pids_have_at_least_128_random_bits() -> None:
    pids: List[str] = [new_pid() for _ in range(100)]
    assert len(set(pids)) == 100
    assert all(len(pid) * 6 >= 128 for pid in pids)


def test_sent_messages_remember_acks_within_the_window_and_bounded() -> None:
    clock = Clock()
    sent = SentMessages(10, 2, clock)
    sent.put("id:a", 1, "c1", {"ok": True, "id": "m1"})
    assert sent.get("id:a", 1, "c1") == {"ok": True, "id": "m1"}
    assert sent.get("id:b", 1, "c1") is None and sent.get("id:a", 2, "c1") is None
    clock.now += 11
    assert sent.get("id:a", 1, "c1") is None
    for n in range(5):
        sent.put("id:a", 1, f"c{n}", {})
    assert len(sent) == 2
