"""Broadcaster: what a room and one socket hear, presence crossings, and whether a clustered
broadcast reached the queue, on a fake server whose manager hands out fake tickets."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import pytest

from prroom.cluster.channels import QueueUnavailable
from prroom.core import protocol
from prroom.core.presence import CONNECTIONS, MemoryPresence
from prroom.core.recovery import RoomBuffers
from prroom.server.broadcaster import Broadcaster
from prroom.server.recoverable import RecoverableBroadcasts

NS = "/"


class FakeTicket:
    def __init__(self, fails: bool, waits: List[str], name: str,
                 order: Optional[List[str]] = None) -> None:
        self.fails, self.waits, self.name = fails, waits, name
        self.order = order if order is not None else []

    def wait(self) -> None:
        self.waits.append(self.name)
        self.order.append("wait " + self.name)
        if self.fails:
            raise QueueUnavailable("the queue is away")


class FakeManager:
    """One process (no tickets), or a cluster whose publishes succeed or fail."""

    def __init__(self, clustered: bool = False, fails: bool = False) -> None:
        self.clustered, self.fails = clustered, fails
        self.waits: List[str] = []
        self.published: List[str] = []
        self.recoverable: List[tuple] = []
        self.order: List[str] = []  # emits and waits, in the order they happened

    def take_ticket(self) -> Optional[FakeTicket]:
        if not self.clustered:
            return None
        name = f"publish-{len(self.published)}"
        self.published.append(name)
        return FakeTicket(self.fails, self.waits, name, self.order)

    def emit_recoverable(self, event: str, data: Any, namespace: str, room: str,
                         skip_sid: Optional[str]) -> None:
        self.recoverable.append((event, data, room))

    def enable_recovery(self, *args: Any) -> None:
        pass

    def eio_sid_from_sid(self, sid: str, namespace: str) -> Optional[str]:
        return sid

    def sid_from_eio_sid(self, eio_sid: str, namespace: str) -> Optional[str]:
        return eio_sid


class FakeServer:
    def __init__(self, manager: FakeManager) -> None:
        self.manager = manager
        self.emits: List[Dict[str, Any]] = []

    def emit(self, event: str, data: Any = None, to: Optional[str] = None,
             skip_sid: Optional[str] = None, namespace: Optional[str] = None,
             ignore_queue: bool = False, **_ignored: Any) -> None:
        self.emits.append({"event": event, "data": data, "to": to, "skip_sid": skip_sid,
                           "ignore_queue": ignore_queue})
        self.manager.order.append(f"emit {to}")


def broadcaster(manager: Optional[FakeManager] = None, presence: Any = None,
                recoverable: bool = False) -> Broadcaster:
    server = FakeServer(manager or FakeManager())
    numbered = None
    if recoverable:
        numbered = RecoverableBroadcasts(server, NS, RoomBuffers(30, 10),  # type: ignore[arg-type]
                                         shared=None)
    return Broadcaster(server, NS, presence or MemoryPresence(), numbered)  # type: ignore[arg-type]


def emits(say: Broadcaster) -> List[Dict[str, Any]]:
    return say.server.emits  # type: ignore[attr-defined]


def test_an_announcement_goes_to_the_room_but_the_one_who_caused_it() -> None:
    say = broadcaster()
    assert say.announce(protocol.TYPING, 7, "alice", skip_sid="s1") is True
    assert emits(say) == [{"event": protocol.TYPING, "to": "pr:7", "skip_sid": "s1",
                           "data": {"pullRequestId": 7, "username": "alice"},
                           "ignore_queue": False}]


def test_one_socket_is_told_on_this_process_only() -> None:
    say = broadcaster()
    say.to_socket("s1", protocol.ERROR, {"code": "x"})
    assert emits(say) == [{"event": protocol.ERROR, "to": "s1", "skip_sid": None,
                           "data": {"code": "x"}, "ignore_queue": True}]


def test_only_a_user_s_first_socket_in_and_last_socket_out_are_announced() -> None:
    say = broadcaster()
    say.presence_joined("s1", 7, "alice")
    say.presence_joined("s2", 7, "alice")  # a second tab
    say.presence_left(7, "alice", skip_sid="s2")
    say.presence_left(7, "alice")
    assert [(e["event"], e["skip_sid"]) for e in emits(say)] == [
        (protocol.USER_JOINED, "s1"), (protocol.USER_LEFT, None)]


def test_a_quiet_crossing_is_counted_but_not_announced() -> None:
    say = broadcaster()
    say.presence_joined("s1", 7, "alice", quietly=True)
    assert emits(say) == [] and say.presence.members(7) == ["alice"]
    say.presence_left(7, "alice", quietly=True)
    assert emits(say) == [] and say.presence.members(7) == []


def test_a_failing_presence_store_costs_the_announcement_not_the_caller(
        caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MemoryPresence):
        def add(self, pull_request_id: int, username: str) -> bool:
            raise ConnectionError("redis is away")

    say = broadcaster(presence=Broken())
    with caplog.at_level(logging.ERROR, logger="prroom"):
        say.presence_joined("s1", 7, "alice")
    assert emits(say) == []
    assert "presence update failed for pr=7" in caplog.text


@pytest.mark.parametrize("fails", [False, True])
def test_clustered_a_broadcast_says_whether_it_reached_the_queue(fails: bool) -> None:
    manager = FakeManager(clustered=True, fails=fails)
    say = broadcaster(manager)
    assert say.announce(protocol.TYPING, 7, "alice") is (not fails)
    assert manager.waits == ["publish-0"]
    assert len(emits(say)) == 1  # not recoverable: local members had it from the emit


def test_a_recoverable_broadcast_that_missed_the_queue_reaches_local_members_directly() -> None:
    manager = FakeManager(clustered=True, fails=True)
    say = broadcaster(manager)
    # as the clustered recovery store does: local members get it back from Redis only
    ticket: Any = FakeTicket(True, [], "t")
    assert say.reached(ticket, True, protocol.MESSAGE, {"m": 1}, 7, None) is False
    assert emits(say) == [{"event": protocol.MESSAGE, "to": "pr:7", "skip_sid": None,
                           "data": {"m": 1}, "ignore_queue": True}]


def test_with_recovery_on_a_message_carries_its_offset_and_typing_does_not() -> None:
    say = broadcaster(recoverable=True)
    say.announce(protocol.USER_JOINED, 7, "alice")
    say.announce(protocol.TYPING, 7, "alice")
    joined, typing = emits(say)
    data, offset = joined["data"]
    assert data == {"pullRequestId": 7, "username": "alice"} and isinstance(offset, str)
    assert typing["data"] == {"pullRequestId": 7, "username": "alice"}


def test_a_reaper_s_news_is_all_sent_before_any_publish_is_waited_for() -> None:
    manager = FakeManager(clustered=True)
    say = broadcaster(manager)
    say.announce_left([(7, "alice"), (CONNECTIONS, "alice"), (8, "bob")])
    assert [e["to"] for e in emits(say)] == ["pr:7", "pr:8"]  # no room for connection counts
    assert manager.order == ["emit pr:7", "emit pr:8", "wait publish-0", "wait publish-1"]


def test_a_once_only_send_whose_publish_failed_says_so_after_one_wait() -> None:
    from prroom.cluster.recovery_store import FirstSend
    manager = FakeManager(clustered=True, fails=True)
    say = broadcaster(manager)
    reached, earlier = say.broadcast_once(protocol.MESSAGE, {"message": "hi"}, 7,
                                          FirstSend("sent:alice:m1", "{}"))
    assert (reached, earlier) == (False, None)
    assert manager.waits == ["publish-0"]  # an ended ticket is not waited for again
