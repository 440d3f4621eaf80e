"""Property-based fuzzing of the handler layer (issue #3): arbitrary payloads and sequences.

:class:`prroom.server.events.RoomEvents` is built on a fake python-socketio server that records what
the handlers do (emits, room entries and exits, disconnects, background tasks) and dispatches
events the way python-socketio 5.x does (``_handle_event_internal`` with an ack id or none,
exact handler first, then the ``*`` catch-all with the event name prepended).  Everything else
is real: :class:`RoomRegistry`, :class:`JoinNameIdentity` for anonymous sockets,
:class:`TokenIdentity` for sockets that connect with a token, :class:`Limits`,
:class:`SocketLimiter`.

Hypothesis drives several sockets through random connects (with fuzzed ``auth``), events with
JSON-like payloads, and disconnects; after every step it checks:

- every handler call returns ``{ok: true, ...}`` or ``{ok: false, error: {code, ...}}`` with a
  documented code (never ``internal-error``, which only a bug produces), and no exception
  escapes a handler;
- a refusal reaches only the requester, once (ack, or ``pr-room-error`` when no ack was asked
  for) and changes nothing: not the registry, not the Socket.IO rooms, no broadcast;
- registry invariants: every sid -> room entry is mirrored in the room's members and vice
  versa, typing marks only for members, no empty containers, caps respected;
- Socket.IO room membership mirrors the registry, and no state survives a disconnect
  (registry, identities, per-identity counts, rate-limit buckets);
- every broadcast carries the username its sender joined that room with;
- presence (one member per user, however many sockets) mirrors the registry: a user's first
  socket in a room announces ``pr-room-user-joined``, the last one ``pr-room-user-left``, and
  a new member gets ``pr-room-members`` (only it).

The random event names include ``connect``, ``disconnect``, ``*`` and python-socketio's other
reserved names (``RESERVED_EVENT_NAMES``): python-socketio would dispatch a client *event*
with one of those names straight to prroom's lifecycle / catch-all handlers, so prroom's
wrapper renames it to ``(reserved) <name>`` first, and a refusal reports that name.  Over
real sockets, ``test_an_event_named_star_touches_nobody_else`` and
``test_an_event_named_disconnect_keeps_the_token_identity`` in
``tests/integration/test_adversarial.py`` check the same.
"""
from __future__ import annotations

import itertools
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from socketio.exceptions import ConnectionRefusedError

from prroom.core import protocol
from prroom.core.identity import JoinNameIdentity, TokenIdentity, issue_token
from prroom.core.limits import STRIKE_WINDOW, Rate, SocketLimiter
from prroom.core.presence import MemoryPresence
from prroom.core.protocol import ErrorCode, Limits
from prroom.core.rooms import RoomRegistry
from prroom.internals import seams
from prroom.internals.socketio_hooks import RESERVED_EVENT_NAMES
from prroom.server.events import Caps, RoomEvents
from tests.support.clock import FakeClock

# The whole file runs in a few seconds; the bound is for a very busy 2-core machine.
pytestmark = pytest.mark.timeout(60)

NS = "/"
SECRET = "fuzz-secret"
MAX_ROOMS = 2           # small caps so the fuzzer reaches too-many-rooms / -connections
MAX_CONNECTIONS = 1     # slot 2 is carol: any second carol socket is refused
SLOTS = 4               # sockets the fuzzer plays with at once


# -- the fake python-socketio server -------------------------------------------------------

class _FakeTransport:
    def __init__(self, server, eio_sid) -> None:
        self.server, self.eio_sid = server, eio_sid

    def close(self, wait=True, abort=False, reason=None):
        self.server.closed_transports.append(self.eio_sid)


class _FakeSockets(Dict[str, Any]):
    """python-engineio's sessions by id: every id names a transport prroom may close."""

    def __init__(self, server) -> None:
        super().__init__()
        self.server = server

    def get(self, eio_sid, default=None):
        return _FakeTransport(self.server, eio_sid)


class _FakeEngine:
    """Just enough of python-engineio for prroom's compat layer: sockets to close."""

    def __init__(self, server) -> None:
        self.server = server
        self.handlers: Dict[str, Any] = {}
        self.sockets = _FakeSockets(server)


class _FakeManager:
    def eio_sid_from_sid(self, sid, namespace):
        return sid  # the fake uses one id for both

    def sid_from_eio_sid(self, eio_sid, namespace):
        return eio_sid


class FakeServer:
    """Records what prroom asks of python-socketio; dispatches events like python-socketio."""

    def __init__(self) -> None:
        self.handlers: Dict[str, Dict[str, Any]] = {}
        self.namespace_handlers: Dict[str, Any] = {}
        self.emits: List[dict] = []
        self.rooms: Dict[str, set] = {}           # sid -> Socket.IO rooms it was put in
        self.disconnects: List[tuple] = []
        self.tasks: List[tuple] = []
        self.closed_transports: List[str] = []    # connections prroom cut (abuse)
        self.eio = _FakeEngine(self)
        self.manager = _FakeManager()

    # the python-socketio API prroom uses
    def on(self, event, handler=None, namespace=None):
        self.handlers.setdefault(namespace or NS, {})[event] = handler

    def emit(self, event, data=None, to=None, room=None, skip_sid=None, namespace=None,
             callback=None, ignore_queue=False, **_ignored):
        self.emits.append({"event": event, "data": data, "to": to if to is not None else room,
                           "skip_sid": skip_sid, "namespace": namespace})

    def enter_room(self, sid, room, namespace=None):
        self.rooms.setdefault(sid, set()).add(room)

    def leave_room(self, sid, room, namespace=None):
        self.rooms.get(sid, set()).discard(room)
        if sid in self.rooms and not self.rooms[sid]:
            del self.rooms[sid]

    def disconnect(self, sid, namespace=None, ignore_queue=False, **_ignored):
        self.disconnects.append((sid, namespace))

    def start_background_task(self, target, *args, **kwargs):
        self.tasks.append((target, args, kwargs))  # recorded, never run

    def sleep(self, seconds=0):  # pragma: no cover - only the (never run) sweepers sleep
        pass

    # python-socketio's per-event entry point, which prroom's compat layer wraps
    def _handle_event_internal(self, server, sid, eio_sid, data, namespace, id):
        event, args = data[0], data[1:]
        table = self.handlers.get(namespace, {})
        if event in table:
            return table[event](sid, *args)
        if event not in ("connect", "disconnect") and "*" in table:
            return table["*"](event, sid, *args)
        raise AssertionError(f"no handler for {event!r}")  # prroom always has a catch-all

    # what the Socket.IO manager does when a socket goes away
    def forget(self, sid):
        self.rooms.pop(sid, None)


class MixedIdentity(JoinNameIdentity):
    """``none`` mode for sockets without a token; :class:`TokenIdentity` for the others."""

    def __init__(self) -> None:
        self.tokens = TokenIdentity(SECRET, max_age=3600)

    def authenticate(self, environ, auth):
        if isinstance(auth, dict) and "token" in auth:
            return self.tokens.authenticate(environ, auth)
        return None


# -- strategies ---------------------------------------------------------------------------

ROOM_IDS = [1, 2, 3, 4]     # a small pool, so sockets meet in the same rooms
NAMES = ["alice", "bob", "carol", "dave"]  # carol and dave are also token identities
CAROL = issue_token(SECRET, "carol")
DAVE = issue_token(SECRET, "dave", pull_requests=[1, 2])
FORGED = issue_token("another-secret", "carol")

EDGE_INTS = st.sampled_from([0, 1, -1, 2, protocol.MAX_PULL_REQUEST_ID,
                             protocol.MAX_PULL_REQUEST_ID + 1, 2 ** 63, -(2 ** 63), 10 ** 30,
                             10 ** 300])
EDGE_STRINGS = st.sampled_from([
    "", " ", "\t", "\n", "alice", " alice", "alice ", "al\x00ice", "al\u0085ice", "\x7f",
    "al\nice", "\ud800", "\U0001f600", "\u200b", "\u2028", "1", "pr:1", "null", "{}"])
LONG_STRINGS = st.builds(lambda char, size: char * size,
                         st.sampled_from(["x", "\u00e9", "\U0001f600", " ", "\x00", "\n"]),
                         st.sampled_from([63, 64, 65, 3999, 4000, 4001]) | st.integers(0, 5000))
STRINGS = st.text(max_size=12) | EDGE_STRINGS | LONG_STRINGS
SCALARS = (st.none() | st.booleans() | st.integers() | EDGE_INTS
           | st.floats(allow_nan=False, allow_infinity=False) | STRINGS)
KEYS = st.sampled_from(["pullRequestId", "username", "message"]) | st.text(max_size=8)
JSON = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(KEYS, children, max_size=4), max_leaves=10)

PR_VALUES = st.sampled_from(ROOM_IDS) | JSON
NAME_VALUES = st.sampled_from(NAMES) | JSON
GOOD_MESSAGES = st.sampled_from(["hi", "LGTM", "tab\tand\nnewline", "x" * 4000, "\ud800"])
MESSAGE_VALUES = GOOD_MESSAGES | JSON
# Well-formed-ish payloads first (they reach the room logic), then anything at all.
PAYLOADS = st.one_of(
    st.fixed_dictionaries({"pullRequestId": PR_VALUES},
                          optional={"username": NAME_VALUES, "message": MESSAGE_VALUES,
                                    "extra": JSON}),
    JSON)
# Positional arguments after the event name: none, the payload, or the payload and more.
ARGS = st.one_of(st.tuples(PAYLOADS), st.just(()), st.tuples(PAYLOADS, JSON))
# Mostly valid requests between a few sockets, names and rooms, so that joins, messages,
# typing and leaves succeed often enough to exercise the room logic.
ROOM_PAYLOADS = st.one_of(
    *[st.fixed_dictionaries({"pullRequestId": st.sampled_from(ROOM_IDS),
                             "username": st.sampled_from(NAMES)},
                            optional={"message": st.sampled_from(["hi", "LGTM", "a\tb\nc"])})
      ] * 3,
    st.fixed_dictionaries({"pullRequestId": st.sampled_from(ROOM_IDS),
                           "message": st.sampled_from(["hi", "x" * 4000, " "])}),
    PAYLOADS)
EVENT_NAMES = st.one_of(
    st.sampled_from(protocol.CLIENT_EVENTS),
    st.sampled_from(["pr-room-message", "pr-room-error", "connect_error", "message", "",
                     "JOIN-PR-ROOM", "join-pr-room "]),
    st.sampled_from(sorted(RESERVED_EVENT_NAMES)),  # lifecycle names a client may not use
    st.text(max_size=10),
    st.integers(), st.none(), st.booleans(), st.floats(allow_nan=False))
def reported_name(event) -> str:
    """The event name a refusal reports: reserved and non-string names are marked."""
    if isinstance(event, str) and event not in RESERVED_EVENT_NAMES:
        return event
    return f"(reserved) {str(event)[:50]}"


AUTHS = st.one_of(st.sampled_from([None, {"token": CAROL}, {"token": DAVE}]),
                  st.sampled_from([{"token": FORGED}, {"token": CAROL[:-3] + "abc"},
                                   {"token": ""}, {"token": None}, {"token": DAVE, "x": 1}]),
                  st.fixed_dictionaries({"token": JSON}), JSON)

OK_KEYS = {
    protocol.JOIN: {"ok", "pullRequestId", "room", "username"},
    protocol.LEAVE: {"ok", "pullRequestId", "room"},
    protocol.SEND_MESSAGE: {"ok", "pullRequestId", "id", "sentAt"},
    protocol.TYPING: {"ok", "pullRequestId", "expiresIn"},
    protocol.STOP_TYPING: {"ok", "pullRequestId"},
}
DOCUMENTED_ERRORS = set(protocol.ALL_ERROR_CODES) - {ErrorCode.INTERNAL_ERROR}
TO_THE_SENDER_ONLY = (protocol.ERROR, protocol.MEMBERS)
ROOM_EVENTS = (protocol.MESSAGE, protocol.TYPING, protocol.STOP_TYPING, protocol.USER_JOINED,
               protocol.USER_LEFT)


# -- the state machine ----------------------------------------------------------------------

class HandlerMachine(RuleBasedStateMachine):
    """Several sockets doing arbitrary things to one RoomEvents; invariants after each step."""

    RATES = {"message": Rate(1e9, 1_000_000), "typing": Rate(1e9, 1_000_000),
             "room": Rate(1e9, 1_000_000)}
    DISCONNECT_AFTER = 50

    def __init__(self) -> None:
        super().__init__()
        self.server = FakeServer()
        self.clock = FakeClock()
        self.registry = RoomRegistry(typing_timeout=5.0, clock=self.clock)
        self.limiter = SocketLimiter(self.RATES, disconnect_after=self.DISCONNECT_AFTER,
                                     clock=self.clock)
        self.presence = MemoryPresence()
        self.events = RoomEvents(self.server, registry=self.registry,
                                 identity=MixedIdentity(), limits=Limits(),
                                 limiter=self.limiter,
                                 caps=Caps(MAX_ROOMS, MAX_CONNECTIONS, 2000),
                                 presence=self.presence)
        # a stand-in server has none of the library's internals the protections reach
        self.events.register(accept_missing=tuple(seams.PROTECTIONS))
        self.sids: Dict[int, Optional[str]] = {slot: None for slot in range(SLOTS)}
        self.identity_of: Dict[str, Optional[str]] = {}   # sid -> token identity name
        self.scope_of: Dict[str, Optional[frozenset]] = {}
        self.model: Dict[str, Dict[int, str]] = {}       # sid -> {room: name joined with}
        # sid -> (rate-limited refusals, when the last was): counted until a quiet window
        self.rate_strikes: Dict[str, Tuple[int, float]] = {}
        self.cuts: Dict[str, int] = {}  # transports prroom cut for abuse, per sid
        self._serial = itertools.count(1)
        self._ack_ids = itertools.count(1)

    # -- helpers ------------------------------------------------------------------------

    @property
    def connected(self) -> List[str]:
        return [sid for sid in self.sids.values() if sid is not None]

    def snapshot(self) -> tuple:
        return (repr(sorted(self.registry._rooms_of.items())),
                repr(sorted(self.registry._members.items())),
                repr(sorted(self.registry._typing.items())),
                repr(sorted((sid, sorted(rooms)) for sid, rooms in self.server.rooms.items())),
                dict(self.events.identified), dict(self.events._connections_of),
                self.events.connected, repr(sorted(self.presence._counts.items())))

    def others_named(self, sid: str, pull_request_id: int, name: str) -> int:
        """How many other sockets are in the room under ``name`` (before this step)."""
        return sum(1 for other, rooms in self.model.items()
                   if other != sid and rooms.get(pull_request_id) == name)

    def check_broadcasts(self, emits: List[dict], sender: str, names: Dict[int, str]) -> None:
        """Room broadcasts carry the sender's joined name, and go to that room only."""
        for emit in emits:
            if emit["event"] in TO_THE_SENDER_ONLY:
                assert emit["to"] == sender, emit
                continue
            room, data = emit["to"], emit["data"]
            assert emit["event"] in ROOM_EVENTS, emit
            assert isinstance(room, str) and room.startswith("pr:"), emit
            pull_request_id = data["pullRequestId"]
            assert room == protocol.room_name(pull_request_id), emit
            assert data["username"] == names[pull_request_id], (emit, names)
            if sender in self.identity_of and self.identity_of[sender] is not None:
                assert data["username"] == self.identity_of[sender]
            if emit["event"] == protocol.MESSAGE:
                assert set(data) == {"pullRequestId", "username", "message", "id", "sentAt"}
                assert emit["skip_sid"] is None  # the sender gets its own message
            else:
                assert set(data) == {"pullRequestId", "username"}

    # -- rules --------------------------------------------------------------------------

    @initialize()
    def start(self) -> None:
        assert set(self.server.handlers[NS]) == {*protocol.CLIENT_EVENTS, "connect",
                                                 "disconnect", "*"}
        # two anonymous sockets and two token sockets to begin with
        for slot, auth in enumerate([None, None, {"token": CAROL}, {"token": DAVE}]):
            self.connect(slot, auth, None)
        assert len(self.connected) == SLOTS
        # and some rooms already shared: alice with two tabs, carol in two rooms
        for slot, pull_request_id, name in [(0, 1, "alice"), (1, 1, "alice"), (2, 1, None),
                                            (2, 2, None), (3, 2, None)]:
            payload: Dict[str, Any] = {"pullRequestId": pull_request_id}
            if name:
                payload["username"] = name
            self.send_event(slot, protocol.JOIN, (payload,), ack=True)
        assert all(self.model[sid] for sid in self.connected)

    @rule(slot=st.integers(0, SLOTS - 1), auth=AUTHS,
          forwarded=st.none() | STRINGS)
    def reconnect(self, slot: int, auth: Any, forwarded: Optional[str]) -> None:
        self.connect(slot, auth, forwarded)

    def connect(self, slot: int, auth: Any, forwarded: Optional[str]) -> None:
        if self.sids[slot] is not None:
            return
        sid = f"sid{slot}-{next(self._serial)}"
        environ = {"REMOTE_ADDR": "127.0.0.1"}
        if forwarded is not None:
            environ["HTTP_X_FORWARDED_FOR"] = forwarded
        before = self.snapshot()
        try:
            result = self.server.handlers[NS]["connect"](sid, environ, auth)
        except ConnectionRefusedError as err:
            code = err.error_args["data"]["code"]
            assert code in (ErrorCode.UNAUTHORIZED, ErrorCode.TOO_MANY_CONNECTIONS), code
            assert self.snapshot() == before  # a refused connection leaves no trace
            return
        assert result is None
        self.sids[slot] = sid
        identity = self.events.identified.get(sid)
        self.identity_of[sid] = identity.name if identity else None
        self.scope_of[sid] = identity.pull_requests if identity else None
        self.model[sid] = {}
        if isinstance(auth, dict) and auth.get("token") == CAROL:
            assert identity is not None and identity.name == "carol"
        elif isinstance(auth, dict) and auth.get("token") == DAVE:
            assert identity is not None and identity[:2] == ("dave", frozenset({1, 2}))
        else:
            assert identity is None

    @rule(slot=st.integers(0, SLOTS - 1))
    def disconnect(self, slot: int) -> None:
        sid = self.sids[slot]
        if sid is None:
            return
        typing_in = {pr for (typist, pr) in self.registry._typing if typist == sid}
        names = dict(self.model[sid])
        del self.server.emits[:]
        result = self.server.handlers[NS]["disconnect"](sid, "client disconnect")
        assert result is None
        self.server.forget(sid)
        emitted = list(self.server.emits)
        self.check_broadcasts(emitted, sid, names)
        assert all(e["skip_sid"] == sid for e in emitted)
        stopped = [e["data"]["pullRequestId"] for e in emitted
                   if e["event"] == protocol.STOP_TYPING]
        assert sorted(stopped) == sorted(typing_in)
        left = [e["data"]["pullRequestId"] for e in emitted if e["event"] == protocol.USER_LEFT]
        assert sorted(left) == sorted(pr for pr, name in names.items()
                                      if not self.others_named(sid, pr, name))
        assert len(emitted) == len(stopped) + len(left)
        self.sids[slot] = None
        del self.model[sid]
        self.rate_strikes.pop(sid, None)

    @rule(slot=st.integers(0, SLOTS - 1), event=st.sampled_from(protocol.CLIENT_EVENTS),
          payload=ROOM_PAYLOADS, ack=st.booleans())
    def send_room_event(self, slot: int, event: str, payload: Any, ack: bool) -> None:
        self.send_event(slot, event, (payload,), ack)

    @rule(data=st.data(), event=st.sampled_from(protocol.CLIENT_EVENTS), ack=st.booleans(),
          named=st.booleans())
    def member_acts(self, data: Any, event: str, ack: bool, named: bool) -> None:
        """A member acting in one of its rooms under its own name: the paths that succeed."""
        members = [slot for slot, sid in self.sids.items() if sid and self.model[sid]]
        if not members:
            return
        slot = data.draw(st.sampled_from(members), label="slot")
        sid = self.sids[slot]
        assert sid is not None
        pull_request_id = data.draw(st.sampled_from(sorted(self.model[sid])), label="room")
        payload: Dict[str, Any] = {"pullRequestId": pull_request_id}
        if named or self.identity_of[sid] is None:
            payload["username"] = self.model[sid][pull_request_id]
        if event == protocol.SEND_MESSAGE:
            payload["message"] = data.draw(GOOD_MESSAGES | STRINGS, label="message")
        self.send_event(slot, event, (payload,), ack)

    @rule(slot=st.integers(0, SLOTS - 1), event=EVENT_NAMES, args=ARGS, ack=st.booleans())
    def send_any_event(self, slot: int, event: Any, args: tuple, ack: bool) -> None:
        self.send_event(slot, event, args, ack)

    def send_event(self, slot: int, event: Any, args: tuple, ack: bool) -> None:
        sid = self.sids[slot]
        if sid is None:
            return  # python-socketio drops events of sockets not connected
        before = self.snapshot()
        names = dict(self.model[sid])
        del self.server.emits[:]
        tasks_before = len(self.server.tasks)
        ack_id = next(self._ack_ids) if ack else None

        result = self.server._handle_event_internal(self.server, sid, sid, [event, *args],
                                                    NS, ack_id)

        emitted = list(self.server.emits)
        errors = [e for e in emitted if e["event"] == protocol.ERROR]
        to_sender = [e for e in emitted if e["event"] == protocol.MEMBERS]
        broadcasts = [e for e in emitted if e["event"] not in TO_THE_SENDER_ONLY]
        assert isinstance(result, dict), result
        assert result.get("ok") in (True, False), result
        if result["ok"] is False:
            error = result["error"]
            assert set(result) == {"ok", "error"}
            assert error["code"] in DOCUMENTED_ERRORS, error
            assert isinstance(error["message"], str) and error["message"]
            # a refusal changes nothing for anybody and reaches only the requester, once
            assert self.snapshot() == before, (event, args)
            assert broadcasts == [] and to_sender == []
            if ack:
                assert errors == []
            else:
                assert len(errors) == 1 and errors[0]["to"] == sid, errors
                body = errors[0]["data"]
                assert body["ok"] is False and body["error"] == error
                assert body["event"] == reported_name(event)
            self.after_refusal(sid, error, tasks_before)
            if event not in protocol.CLIENT_EVENTS:
                assert error["code"] in (ErrorCode.UNKNOWN_EVENT, ErrorCode.RATE_LIMITED)
            return

        assert event in protocol.CLIENT_EVENTS, (event, result)
        assert errors == []
        assert set(result) == OK_KEYS[event], result  # no "warning": there is no queue here
        payload = args[0]
        pull_request_id = payload["pullRequestId"]
        assert result["pullRequestId"] == pull_request_id
        identity = self.identity_of[sid]
        if event == protocol.JOIN:
            expected = identity if identity is not None else payload["username"]
            assert result["username"] == expected
            assert result["room"] == protocol.room_name(pull_request_id)
            assert names.get(pull_request_id, expected) == expected  # joined again: same name
            scope = self.scope_of[sid]
            if scope is not None:
                assert pull_request_id in scope
            if pull_request_id in names:  # joined again: nothing happens, nobody is told
                assert emitted == []
            else:
                # the newcomer learns who is there; the others hear of a new user only
                first = not self.others_named(sid, pull_request_id, expected)
                assert len(to_sender) == 1 and to_sender[0]["to"] == sid
                assert to_sender[0]["data"] == {
                    "pullRequestId": pull_request_id,
                    "members": sorted({rooms[pull_request_id] for rooms in self.model.values()
                                       if pull_request_id in rooms} | {expected})}
                assert [e["event"] for e in broadcasts] == (
                    [protocol.USER_JOINED] if first else [])
                assert all(e["skip_sid"] == sid for e in broadcasts)
            self.model[sid][pull_request_id] = expected
            names = {**names, pull_request_id: expected}  # the name its broadcasts carry
        else:
            # only a member, speaking under its own name, gets this far
            assert pull_request_id in names, (event, payload, names)
            claimed = payload.get("username")
            if identity is None or claimed is not None:
                assert claimed == names[pull_request_id]
            if event == protocol.LEAVE:
                name = names[pull_request_id]
                announced = [e for e in broadcasts if e["event"] == protocol.USER_LEFT]
                assert len(announced) == (0 if self.others_named(sid, pull_request_id, name)
                                          else 1)
                del self.model[sid][pull_request_id]
            else:
                assert to_sender == []
        self.check_broadcasts(broadcasts, sid, names)
        if event == protocol.SEND_MESSAGE:
            messages = [e for e in broadcasts if e["event"] == protocol.MESSAGE]
            assert len(messages) == 1
            assert [e["event"] for e in broadcasts if e["event"] != protocol.MESSAGE] in (
                [], [protocol.STOP_TYPING])
            assert messages[0]["data"]["message"] == payload["message"]
            assert messages[0]["data"]["id"] == result["id"]
        elif event == protocol.TYPING:
            assert [e["event"] for e in broadcasts] == [protocol.TYPING]
            assert broadcasts[0]["skip_sid"] == sid

    def after_refusal(self, sid: str, error: dict, tasks_before: int) -> None:
        """High rates: never rate-limited, and nobody is scheduled for disconnection."""
        assert error["code"] != ErrorCode.RATE_LIMITED
        assert len(self.server.tasks) == tasks_before

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def registry_is_consistent(self) -> None:
        rooms_of, members, typing = (self.registry._rooms_of, self.registry._members,
                                     self.registry._typing)
        for sid, rooms in rooms_of.items():
            assert rooms, f"empty room map kept for {sid}"
            for pull_request_id, name in rooms.items():
                assert members[pull_request_id][sid] == name
        for pull_request_id, room in members.items():
            assert room, f"empty member map kept for {pull_request_id}"
            for sid, name in room.items():
                assert rooms_of[sid][pull_request_id] == name
        for sid, pull_request_id in typing:
            assert pull_request_id in rooms_of.get(sid, {}), "typing mark of a non-member"

    @invariant()
    def presence_mirrors_the_registry(self) -> None:
        counts: Dict[int, Dict[str, int]] = {}
        for rooms in self.model.values():
            for pull_request_id, name in rooms.items():
                users = counts.setdefault(pull_request_id, {})
                users[name] = users.get(name, 0) + 1
        assert self.presence._counts == counts
        for pull_request_id, users in counts.items():
            assert self.presence.members(pull_request_id) == sorted(users)

    @invariant()
    def state_matches_the_connected_sockets(self) -> None:
        connected = set(self.connected)
        for sid in connected:
            assert self.registry.rooms_of(sid) == self.model[sid]
            assert self.server.rooms.get(sid, set()) == {
                protocol.room_name(pr) for pr in self.model[sid]}, "Socket.IO rooms diverged"
            assert self.registry.room_count_of(sid) <= MAX_ROOMS
        assert set(self.registry._rooms_of) <= connected
        assert set(self.server.rooms) <= connected
        assert set(self.events.identified) <= connected
        assert set(self.limiter._buckets) <= connected
        assert set(self.limiter._strikes) <= connected
        assert self.events.connected == len(connected)
        counts: Dict[str, int] = {}
        for sid in connected:
            name = self.identity_of[sid]
            if name is not None:
                counts[name] = counts.get(name, 0) + 1
        assert self.events._connections_of == counts
        assert all(count <= MAX_CONNECTIONS for count in counts.values())

    @invariant()
    def the_handlers_start_no_background_task(self) -> None:
        # the sweepers are the app state's to start (PRRoomState), never the handlers'
        self.check_extra_tasks(self.server.tasks)

    def check_extra_tasks(self, tasks: List[tuple]) -> None:
        assert tasks == []


class RateLimitedMachine(HandlerMachine):
    """Tiny buckets on a clock that only the fuzzer moves: refusals, strikes, disconnects."""

    RATES = {"message": Rate(1.0, 3), "typing": Rate(1.0, 2), "room": Rate(0.5, 4)}
    DISCONNECT_AFTER = 4

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 3.0, 60.0]))
    def wait(self, seconds: float) -> None:
        self.clock.now += seconds

    def after_refusal(self, sid: str, error: dict, tasks_before: int) -> None:
        """A rate-limited refusal counts a strike; the limit-th within a window cuts it once."""
        assert self.server.tasks[tasks_before:] == []
        closed = self.server.closed_transports
        if error["code"] != ErrorCode.RATE_LIMITED:
            return  # the token was spent; the strikes stay (only a quiet window ends them)
        assert error["retryAfter"] > 0
        strikes, last = self.rate_strikes.get(sid, (0, self.clock.now))
        if self.clock.now - last >= STRIKE_WINDOW:
            strikes = 0
        strikes += 1
        self.rate_strikes[sid] = (strikes, self.clock.now)
        assert self.limiter.strikes(sid) == strikes
        # exactly once per streak, at the limit: later refusals do not cut it again
        assert closed.count(sid) == self.cuts.get(sid, 0) + (strikes == self.DISCONNECT_AFTER)
        self.cuts[sid] = closed.count(sid)

    def check_extra_tasks(self, tasks: List[tuple]) -> None:
        assert all(task[0] == self.server.disconnect for task in tasks)


# About 8 s of CPU for both machines together (well under the file's 15 s budget when the
# machine is not overloaded); raise max_examples locally for a deeper search.
FAST = settings(max_examples=200, stateful_step_count=20, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

TestHandlersUnderFuzz = HandlerMachine.TestCase
TestHandlersUnderFuzz.settings = FAST
TestRateLimitsUnderFuzz = RateLimitedMachine.TestCase
TestRateLimitsUnderFuzz.settings = settings(FAST, max_examples=100)
