"""RoomRegistry: membership, identity per room and typing indicators, on a fake clock."""
from __future__ import annotations

import pytest

from prroom.core.protocol import ErrorCode, ProtocolError
from prroom.core.rooms import Departure, RoomRegistry
from tests.support.clock import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def registry(clock):
    return RoomRegistry(typing_timeout=5.0, clock=clock)


def refused(call, *args, **kwargs) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call(*args, **kwargs)
    return info.value


# -- membership -----------------------------------------------------------------------

def test_join_then_rejoin_same_name_is_idempotent(registry):
    assert registry.join("s1", 1, "alice") is True
    assert registry.join("s1", 1, "alice") is False
    assert registry.members(1) == {"s1": "alice"}
    assert registry.rooms_of("s1") == {1: "alice"}


def test_rejoin_under_other_name_refused_and_state_unchanged(registry):
    registry.join("s1", 1, "alice")
    err = refused(registry.join, "s1", 1, "mallory")
    assert err.code == ErrorCode.IDENTITY_MISMATCH
    assert err.details == {"pullRequestId": 1}
    assert "alice" in err.message
    assert registry.members(1) == {"s1": "alice"}


def test_same_socket_may_use_different_names_in_different_rooms(registry):
    assert registry.join("s1", 1, "alice")
    assert registry.join("s1", 2, "alice-bot")
    assert registry.rooms_of("s1") == {1: "alice", 2: "alice-bot"}


def test_two_sockets_may_share_a_name(registry):
    registry.join("s1", 1, "alice")
    registry.join("s2", 1, "alice")
    assert registry.members(1) == {"s1": "alice", "s2": "alice"}


def test_name_in(registry):
    registry.join("s1", 1, "alice")
    assert registry.name_in("s1", 1) == "alice"
    assert registry.name_in("s1", 1, claimed="alice") == "alice"


def test_name_in_non_member(registry):
    registry.join("s1", 1, "alice")
    for sid, pr in (("s2", 1), ("s1", 2), ("nobody", 99)):
        err = refused(registry.name_in, sid, pr, claimed="alice")
        assert err.code == ErrorCode.NOT_A_MEMBER
        assert err.details == {"pullRequestId": pr}


def test_name_in_claimed_mismatch(registry):
    registry.join("s1", 1, "alice")
    err = refused(registry.name_in, "s1", 1, claimed="bob")
    assert err.code == ErrorCode.IDENTITY_MISMATCH
    assert err.details == {"pullRequestId": 1}


def test_leave_one_room_keeps_others(registry):
    registry.join("s1", 1, "alice")
    registry.join("s1", 2, "alice")
    registry.join("s2", 1, "bob")
    assert registry.leave("s1", 1) == Departure(1, "alice", False)
    assert registry.rooms_of("s1") == {2: "alice"}
    assert registry.members(1) == {"s2": "bob"}
    refused(registry.name_in, "s1", 1)
    # and it may join again, even under another name
    assert registry.join("s1", 1, "alice2") is True


def test_leave_reports_was_typing_and_clears_it(registry):
    registry.join("s1", 1, "alice")
    registry.start_typing("s1", 1)
    assert registry.leave("s1", 1) == Departure(1, "alice", True)
    assert not registry.is_typing("s1", 1)


def test_last_member_leaving_removes_room(registry):
    registry.join("s1", 1, "alice")
    assert registry.room_count() == 1
    registry.leave("s1", 1)
    assert registry.room_count() == 0
    assert registry.members(1) == {}
    assert registry.rooms_of("s1") == {}


def test_disconnect_leaves_every_room(registry):
    registry.join("s1", 1, "alice")
    registry.join("s1", 2, "alice")
    registry.join("s1", 3, "al")
    registry.join("s2", 2, "bob")
    registry.start_typing("s1", 2)
    departures = registry.disconnect("s1")
    assert sorted(departures) == [Departure(1, "alice", False), Departure(2, "alice", True),
                                  Departure(3, "al", False)]
    assert registry.rooms_of("s1") == {}
    assert registry.members(2) == {"s2": "bob"}
    assert registry.room_count() == 1
    assert not registry.is_typing("s1", 2)


def test_disconnect_unknown_socket_is_harmless(registry):
    assert registry.disconnect("never-joined") == []
    registry.join("s1", 1, "alice")
    registry.disconnect("s1")
    assert registry.disconnect("s1") == []


def test_members_and_rooms_of_are_copies(registry):
    registry.join("s1", 1, "alice")
    registry.members(1)["intruder"] = "eve"
    registry.rooms_of("s1")[2] = "eve"
    assert registry.members(1) == {"s1": "alice"}
    assert registry.rooms_of("s1") == {1: "alice"}


def test_room_count(registry):
    assert registry.room_count() == 0
    registry.join("s1", 1, "a")
    registry.join("s2", 1, "b")
    registry.join("s2", 2, "b")
    assert registry.room_count() == 2
    registry.disconnect("s2")
    assert registry.room_count() == 1


# -- typing ---------------------------------------------------------------------------

def test_start_and_stop_typing(registry):
    registry.join("s1", 1, "alice")
    assert not registry.is_typing("s1", 1)
    registry.start_typing("s1", 1)
    assert registry.is_typing("s1", 1)
    assert registry.stop_typing("s1", 1) is True
    assert not registry.is_typing("s1", 1)
    assert registry.stop_typing("s1", 1) is False  # nobody needs telling twice


def test_stop_typing_when_not_typing(registry):
    registry.join("s1", 1, "alice")
    assert registry.stop_typing("s1", 1) is False


def test_typing_expiry_boundaries(registry, clock):
    registry.join("s1", 1, "alice")
    start = clock.now
    registry.start_typing("s1", 1)
    clock.now = start + 4.999
    assert registry.expire_typing() == []
    assert registry.is_typing("s1", 1)
    clock.now = start + 5.0  # exactly at the deadline
    assert registry.expire_typing() == [("s1", 1, "alice")]
    assert not registry.is_typing("s1", 1)
    assert registry.expire_typing() == []  # reported once only
    assert registry.stop_typing("s1", 1) is False


def test_typing_expires_after_deadline(registry, clock):
    registry.join("s1", 1, "alice")
    registry.join("s2", 1, "bob")
    registry.start_typing("s1", 1)
    clock.advance(2)
    registry.start_typing("s2", 1)
    clock.advance(60)
    assert sorted(registry.expire_typing()) == [("s1", 1, "alice"), ("s2", 1, "bob")]


def test_only_due_typists_expire(registry, clock):
    registry.join("s1", 1, "alice")
    registry.join("s2", 1, "bob")
    registry.start_typing("s1", 1)
    clock.advance(3)
    registry.start_typing("s2", 1)
    clock.advance(2)
    assert registry.expire_typing() == [("s1", 1, "alice")]
    assert registry.is_typing("s2", 1)


def test_refreshing_typing_pushes_deadline(registry, clock):
    registry.join("s1", 1, "alice")
    registry.start_typing("s1", 1)
    clock.advance(4)
    registry.start_typing("s1", 1)  # still typing: deadline now t0+9
    clock.advance(4)  # t0+8: would have expired without the refresh
    assert registry.expire_typing() == []
    assert registry.is_typing("s1", 1)
    clock.advance(1)
    assert registry.expire_typing() == [("s1", 1, "alice")]


def test_expire_after_socket_left_yields_nothing(registry, clock):
    registry.join("s1", 1, "alice")
    registry.join("s1", 2, "alice")
    registry.start_typing("s1", 1)
    registry.start_typing("s1", 2)
    registry.leave("s1", 1)
    registry.disconnect("s1")
    clock.advance(100)
    assert registry.expire_typing() == []


def test_expire_of_non_member_mark_is_dropped_silently(registry, clock):
    # A typing mark without membership (should not happen via the handlers) is cleared
    # without being reported, since there is no name to announce.
    registry.start_typing("ghost", 1)
    clock.advance(10)
    assert registry.expire_typing() == []
    assert not registry.is_typing("ghost", 1)


def test_typing_is_per_room(registry, clock):
    registry.join("s1", 1, "alice")
    registry.join("s1", 2, "alice")
    registry.start_typing("s1", 1)
    assert not registry.is_typing("s1", 2)
    assert registry.leave("s1", 2).was_typing is False
    assert registry.is_typing("s1", 1)


def test_typing_timeout_from_constructor(clock):
    registry = RoomRegistry(typing_timeout=0.5, clock=clock)
    registry.join("s1", 1, "alice")
    start = clock.now
    registry.start_typing("s1", 1)
    clock.now = start + 0.49
    assert registry.expire_typing() == []
    clock.now = start + 0.5
    assert registry.expire_typing() == [("s1", 1, "alice")]
