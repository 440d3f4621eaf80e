"""SessionRecovery (one process, memory store): restores, refusals, the presence grace, the
sweep and clientMessageIds, on a fake clock and a fake broadcaster that records what the
room and each socket would hear.  What crosses the wire is in tests/integration/test_recovery*.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Set, Tuple

import pytest

from prroom.core import protocol
from prroom.core.identity import Identity
from prroom.core.limits import Rate, SocketLimiter
from prroom.core.presence import MemoryPresence
from prroom.core.protocol import ErrorCode, ProtocolError
from prroom.core.recovery import RoomBuffers
from prroom.core.rooms import RoomRegistry
from prroom.server.recoverable import RecoverableBroadcasts
from prroom.server.recovery import SESSION_EVENT, SHUTDOWN_REASON, Recovery, SessionRecovery
from tests.support.clock import FakeClock

NS = "/"
WINDOW, GRACE = 30.0, 5.0


class FakeServer:
    """python-socketio as recovery uses it: room broadcasts, room entries."""

    def __init__(self) -> None:
        self.emits: List[Tuple[str, Any, Optional[str]]] = []  # (event, data, to)
        self.rooms: Dict[str, Set[str]] = {}
        self.manager = None

    def emit(self, event: str, data: Any = None, to: Optional[str] = None,
             skip_sid: Optional[str] = None, namespace: Optional[str] = None,
             **_ignored: Any) -> None:
        self.emits.append((event, data, to))

    def enter_room(self, sid: str, room: str, namespace: Optional[str] = None) -> None:
        self.rooms.setdefault(sid, set()).add(room)


class FakeBroadcaster:
    """Records what recovery says: to rooms, about presence, to one socket."""

    def __init__(self, server: FakeServer) -> None:
        self.server, self.namespace, self.presence = server, NS, MemoryPresence()
        self.said: List[tuple] = []        # room announcements: (event, pr, username)
        self.to: Dict[str, List[tuple]] = {}  # sid -> [(event, data)]

    def announce(self, event: str, pull_request_id: int, username: str,
                 skip_sid: Optional[str] = None) -> bool:
        self.said.append((event, pull_request_id, username))
        return True

    def presence_left(self, pull_request_id: int, username: str,
                      skip_sid: Optional[str] = None, quietly: bool = False) -> None:
        if self.presence.remove(pull_request_id, username) and not quietly:
            self.said.append((protocol.USER_LEFT, pull_request_id, username))

    def presence_joined(self, sid: str, pull_request_id: int, username: str,
                        quietly: bool = False) -> None:
        if self.presence.add(pull_request_id, username) and not quietly:
            self.said.append((protocol.USER_JOINED, pull_request_id, username))

    def to_socket(self, sid: str, event: str, data: Any) -> None:
        self.to.setdefault(sid, []).append((event, data))


class Policy:
    """Anyone may join any room but those in ``forbidden``."""

    def __init__(self) -> None:
        self.forbidden: Set[int] = set()

    def can_join(self, identity: Optional[Identity], pull_request_id: int) -> bool:
        return pull_request_id not in self.forbidden


class Outcomes:
    def __init__(self) -> None:
        self.connections: List[str] = []

    def record_connection(self, outcome: str) -> None:
        self.connections.append(outcome)


class World:
    """One server's recovery with the parts it talks to."""

    def __init__(self, grace: float = GRACE) -> None:
        self.clock = FakeClock()
        self.server = FakeServer()
        self.broadcaster = FakeBroadcaster(self.server)
        self.registry = RoomRegistry(typing_timeout=5.0, clock=self.clock)
        self.policy = Policy()
        self.limiter = SocketLimiter({"message": Rate(1.0, 3)}, disconnect_after=5,
                                     clock=self.clock)
        self.metrics = Outcomes()
        self.recoverable = RecoverableBroadcasts(
            self.server, NS, RoomBuffers(WINDOW, 100, clock=self.clock))  # type: ignore[arg-type]
        self.recovery = SessionRecovery(
            Recovery(WINDOW, 100, 100, grace), self.recoverable,
            self.broadcaster,  # type: ignore[arg-type]
            registry=self.registry, identity=self.policy,  # type: ignore[arg-type]
            limiter=self.limiter, metrics=self.metrics,  # type: ignore[arg-type]
            clock=self.clock, wall=lambda: 5_000_000.0 + self.clock.now)

    def connect(self, sid: str, auth: Any = None, name: Optional[str] = None) -> bool:
        """A CONNECT as the handlers run it; whether it restored a session."""
        identity = Identity(name) if name else None
        return self.recovery.restore(sid, identity, auth)

    def join(self, sid: str, pull_request_id: int, username: str) -> None:
        since = self.recovery.before_join(pull_request_id)
        self.registry.join(sid, pull_request_id, username)
        self.recovery.joined(sid, pull_request_id, since)
        self.broadcaster.presence_joined(sid, pull_request_id, username)

    def drop(self, sid: str, reason: str = "transport close", name: Optional[str] = None
             ) -> Optional[str]:
        """A disconnect as the handlers run it; the pid kept, if any."""
        identity = Identity(name) if name else None
        kept = self.recovery.keep(sid, identity, reason, self.registry.rooms_of(sid))
        departures = self.registry.disconnect(sid)
        if not (kept is not None and self.recovery.hold_departures(kept, departures)):
            for departure in departures:
                self.broadcaster.presence_left(departure.pull_request_id, departure.username)
        return kept

    def session_of(self, sid: str) -> Dict[str, Any]:
        """What the client holds: the pid from the CONNECT reply, the newest offset."""
        reply = self.recovery.connect_reply(NS, sid)
        assert reply is not None
        offsets = [data[1] for event, data in self.broadcaster.to.get(sid, [])
                   if event == SESSION_EVENT]
        return {"pid": reply["pid"], "offset": offsets[-1]}

    def room_broadcast(self, pull_request_id: int, text: str) -> str:
        """A chat message to the room; its offset."""
        assert self.recoverable.broadcast(protocol.MESSAGE, {"message": text},
                                          pull_request_id, None)
        return str(self.server.emits[-1][1][1])


@pytest.fixture
def world() -> World:
    return World()


def test_a_new_connection_gets_a_pid_and_a_fresh_session(world: World) -> None:
    assert world.connect("s1") is False
    assert world.broadcaster.to["s1"][0][0] == SESSION_EVENT
    assert world.broadcaster.to["s1"][0][1][0] == {"recovered": False}
    assert world.recovery.connect_reply(NS, "s1") == {"pid": world.session_of("s1")["pid"]}
    assert world.recovery.connect_reply("/other", "s1") is None


def test_a_lost_connection_comes_back_in_its_rooms_with_what_it_missed(world: World) -> None:
    world.connect("s1")
    world.join("s1", 7, "alice")
    session = world.session_of("s1")
    assert world.drop("s1") == session["pid"]
    offsets = [world.room_broadcast(7, "one"), world.room_broadcast(7, "two")]
    world.room_broadcast(8, "another room")
    world.clock.advance(1)

    assert world.connect("s2", session) is True
    assert world.registry.rooms_of("s2") == {7: "alice"}
    assert world.server.rooms["s2"] == {protocol.room_name(7)}
    heard = world.broadcaster.to["s2"]
    assert [(event, data[0]["message"], data[1]) for event, data in heard[:2]] == [
        (protocol.MESSAGE, "one", offsets[0]), (protocol.MESSAGE, "two", offsets[1])]
    assert heard[2][0] == SESSION_EVENT and heard[2][1][0] == {"recovered": True}
    assert world.recovery.connect_reply(NS, "s2") == {"pid": session["pid"]}
    assert world.metrics.connections == ["recovered"]
    assert world.broadcaster.said == [(protocol.USER_JOINED, 7, "alice")]  # within the grace


def test_a_session_restores_once(world: World) -> None:
    world.connect("s1")
    session = world.session_of("s1")
    world.drop("s1")
    assert world.connect("s2", session) is True
    assert world.connect("s3", session) is False


@pytest.mark.parametrize("reason", ["client namespace disconnect", "server disconnect", None])
def test_a_disconnect_on_purpose_keeps_nothing(world: World, reason: Any) -> None:
    world.connect("s1")
    world.join("s1", 7, "alice")
    session = world.session_of("s1")
    assert world.drop("s1", reason) is None
    assert world.broadcaster.said[-1] == (protocol.USER_LEFT, 7, "alice")  # at once
    assert world.connect("s2", session) is False
    assert world.recovery.stored_sessions() == 0


def test_a_shutdown_s_disconnect_is_recoverable(world: World) -> None:
    world.connect("s1")
    assert world.drop("s1", SHUTDOWN_REASON) is not None


@pytest.mark.parametrize("auth", [
    None, "pid", {"pid": "nope"}, {"pid": 7, "offset": None}, {"offset": "x"},
    {"pid": "a" * 10_000, "offset": "b" * 10_000}])
def test_junk_in_auth_is_a_fresh_session_never_an_error(world: World, auth: Any) -> None:
    assert world.connect("s1", auth) is False
    assert world.broadcaster.to["s1"][-1][1][0] == {"recovered": False}


def test_another_identity_cannot_take_a_session(world: World) -> None:
    world.connect("s1", name="alice")
    world.join("s1", 7, "alice")
    session = world.session_of("s1")
    world.drop("s1", name="alice")
    assert world.connect("s2", session, name="mallory") is False
    assert world.registry.rooms_of("s2") == {}
    # the session is spent: its user is announced as left at once, not after the grace
    assert (protocol.USER_LEFT, 7, "alice") in world.broadcaster.said


def test_an_offset_older_than_the_session_does_not_restore_it(world: World) -> None:
    old = world.room_broadcast(9, "before the session")
    world.connect("s1")
    session = dict(world.session_of("s1"), offset=old)
    world.drop("s1")
    assert world.connect("s2", session) is False


def test_a_room_it_may_no_longer_join_is_left(world: World) -> None:
    world.connect("s1")
    world.join("s1", 7, "alice")
    world.join("s1", 8, "alice")
    session = world.session_of("s1")
    world.drop("s1")
    world.policy.forbidden.add(8)
    assert world.connect("s2", session) is True
    assert world.registry.rooms_of("s2") == {7: "alice"}
    assert world.broadcaster.said[-1] == (protocol.USER_LEFT, 8, "alice")


def test_within_the_grace_nobody_hears_a_thing(world: World) -> None:
    world.connect("s1")
    world.join("s1", 7, "alice")
    session = world.session_of("s1")
    said = list(world.broadcaster.said)
    world.drop("s1")
    world.clock.advance(GRACE - 1)
    world.recovery.sweep()
    assert world.broadcaster.said == said
    assert world.connect("s2", session) is True
    world.clock.advance(WINDOW)
    world.recovery.sweep()
    assert world.broadcaster.said == said
    assert world.broadcaster.presence.members(7) == ["alice"]


def test_after_the_grace_the_user_left_and_comes_back_joined(world: World) -> None:
    world.connect("s1")
    world.join("s1", 7, "alice")
    session = world.session_of("s1")
    world.drop("s1")
    world.clock.advance(GRACE + 0.1)
    world.recovery.sweep()
    assert world.broadcaster.said[-1] == (protocol.USER_LEFT, 7, "alice")
    assert world.connect("s2", session) is True  # still within the window
    assert world.broadcaster.said[-1] == (protocol.USER_JOINED, 7, "alice")


def test_after_the_window_the_session_is_gone(world: World) -> None:
    world.connect("s1")
    world.join("s1", 7, "alice")
    session = world.session_of("s1")
    world.room_broadcast(7, "kept for the window")
    world.drop("s1")
    world.clock.advance(WINDOW + 1)
    world.recovery.sweep()
    assert world.recovery.stored_sessions() == 0
    assert world.recovery.buffered_packets() == 0
    assert world.broadcaster.said.count((protocol.USER_LEFT, 7, "alice")) == 1
    assert world.connect("s2", session) is False


def test_without_a_grace_departures_are_announced_at_once() -> None:
    world = World(grace=0.0)
    world.connect("s1")
    world.join("s1", 7, "alice")
    world.drop("s1")
    assert world.broadcaster.said[-1] == (protocol.USER_LEFT, 7, "alice")


def test_a_stopping_server_takes_its_graces_with_it_alone(world: World) -> None:
    world.connect("s1")
    world.join("s1", 7, "alice")
    world.drop("s1")
    said = list(world.broadcaster.said)
    world.recovery.hand_off()
    world.clock.advance(WINDOW + 1)
    world.recovery.sweep()
    # one process: nobody else could announce them, and the process is going away
    assert world.broadcaster.said == said


def test_the_rate_limit_state_comes_back_with_the_session(world: World) -> None:
    world.connect("s1")
    for _ in range(3):
        world.limiter.charge("s1", "message")
    session = world.session_of("s1")
    world.drop("s1")
    assert world.connect("s2", session) is True
    with pytest.raises(ProtocolError) as refused:
        world.limiter.charge("s2", "message")  # the bucket is still empty
    assert refused.value.code == ErrorCode.RATE_LIMITED


def test_a_retried_send_gets_the_first_ack_within_the_window(world: World) -> None:
    ack = {"ok": True, "id": "m1"}
    assert world.recovery.client_message_id({"clientMessageId": "c1"}) == "c1"
    assert world.recovery.client_message_id({}) is None
    assert world.recovery.sent_before("user:alice", 7, "c1") is None
    world.recovery.remember_sent("user:alice", 7, "c1", ack)
    assert world.recovery.sent_before("user:alice", 7, "c1") == ack
    assert world.recovery.sent_before("user:bob", 7, "c1") is None
    world.clock.advance(WINDOW + 1)
    assert world.recovery.sent_before("user:alice", 7, "c1") is None


@pytest.mark.parametrize("junk", ["", "x" * 65, 7, None, ["c1"]])
def test_a_malformed_client_message_id_is_refused(world: World, junk: Any) -> None:
    with pytest.raises(ProtocolError) as refused:
        world.recovery.client_message_id({"clientMessageId": junk})
    assert refused.value.code == ErrorCode.INVALID_FIELD


def test_typing_is_not_recoverable(world: World) -> None:
    assert world.recoverable.broadcast(protocol.TYPING, {}, 7, None) is False
    assert world.recovery.buffered_packets() == 0
