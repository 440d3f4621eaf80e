"""Adversarial traffic over real sockets against gunicorn + gevent-websocket (issue #3).

Malformed frames, floods, connection churn, abandoned handshakes and a client that stops
reading.  After every attack a normal client still chats and no other room saw anything.
All traffic goes to 127.0.0.1; every loop is bounded in count and time; figures are printed
(``pytest -s``) so they can be compared with the bounds written next to each assertion.

The functional tests only wait, generously, for what must happen.  How soon, how fast and
how much memory are ``stress`` tests (``pytest -m stress``), whose bounds a busy machine can
miss; where both look at one attack, a module-scoped fixture runs it once for both.
"""
from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Iterator, List, NamedTuple, Optional

import pytest
import requests
import websocket

from prroom.core.identity import issue_token
from prroom.transport.worker import session_tag
from tests.support import servers
from tests.support.clients import Clients, RoomClient, new_pull_request_id
from tests.support.raw import Closed, PollingSession, RawSocket
from tests.support.servers import TOKEN_SECRET
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

MAX_FRAME_BYTES = 65536  # PRROOM_MAX_FRAME_BYTES' default, which these servers keep


# -- servers with special settings -----------------------------------------------------

short_ping_server = servers.server_fixture(
    {"PRROOM_PING_INTERVAL": "1", "PRROOM_PING_TIMEOUT": "1"},
    doc="Engine.IO pings every second and gives up after one more: dead sessions go fast.")


def rss_mb(pid: int) -> float:
    """The resident memory of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def health(server) -> dict:
    """What /healthz says."""
    return requests.get(server.url + "/healthz", timeout=5).json()


def percentile(values: List[float], fraction: float) -> float:
    """The ``fraction`` (0.99: p99) percentile of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# -- reading what a raw client got ------------------------------------------------------

def event_of(packet) -> list:
    """``2["name",{...}]`` -> ``["name", {...}]``."""
    assert isinstance(packet, str) and packet.startswith("2["), packet
    return json.loads(packet[1:])


# -- after every attack ------------------------------------------------------------------

def assert_room_saw_nothing(client: RoomClient, pull_request_id: int, username: str,
                            *others: RoomClient) -> None:
    """Barrier: the member's next event is its own new message, so nothing came before.

    ``others`` (members of the same room) must also get that message as their next event.
    """
    text = f"barrier {time.monotonic()}"
    client.say(pull_request_id, username, text)
    for member in (client, *others):
        received = member.expect("pr-room-message")
        assert (received["username"], received["message"]) == (username, text), received



def assert_still_serving(connect: Clients, server: servers.ServerProcess,
                         pull_request_id: int) -> None:
    """A newcomer joins, speaks and is heard by a second newcomer."""
    speaker, listener = connect.many(2, server)
    speaker.join(pull_request_id, "newcomer")
    listener.join(pull_request_id, "listener")
    speaker.say(pull_request_id, "newcomer", "still serving")
    assert listener.expect("pr-room-message")["message"] == "still serving"
    assert speaker.expect("pr-room-message")["message"] == "still serving"


# -- a. frames that are not valid Engine.IO / Socket.IO packets ----------------------------

SEND = '"send-message-to-pr-room"'
# (id, frames sent after the attacker joined its room, what the server does)
#   closed          the server hangs up on that one connection
#   error:CODE      the server answers with pr-room-error CODE and keeps the connection
#   acked:CODE      the same, as an ack to the id the frame carried
#   ignored         the packet is dropped and the connection keeps working: the next acked
#                   request is answered first
#   swallowed       a binary event waits for its attachment: the next frame becomes it
#   wedged          the connection stays open but is deaf from then on
# prroom closes a connection that sends binary or undecodable Socket.IO packets (its protocol
# is JSON text), so the last two no longer happen; the classifier still tells them apart.
MALFORMED = [
    ("garbage-text", ["hello, server"], "closed"),
    ("empty-text", [""], "closed"),
    ("truncated-json", ['42["join-pr-room",{'], "closed"),
    ("engineio-type-9", ["9"], "ignored"),
    ("socketio-type-9", ["49"], "closed"),
    ("socketio-type-x", ["4x"], "closed"),
    ("event-name-int", ["42[1,2]"], "error:unknown-event"),
    ("event-name-null", ["42[null]"], "error:unknown-event"),
    ("event-name-list", ["42[[1],2]"], "error:unknown-event"),
    ("event-empty-array", ["42[]"], "closed"),
    ("event-object", ["42{}"], "closed"),
    ("event-without-payload", ['42["join-pr-room"]'], "error:invalid-payload"),
    ("unknown-namespace", ['42/nope,["join-pr-room",{"pullRequestId":1,"username":"x"}]'],
     "ignored"),
    ("huge-ack-id", ["42" + "9" * 30 + '["no-such-event"]'], "acked:unknown-event"),
    ("huge-integer", ['42["join-pr-room",{"pullRequestId":' + "9" * 5000 + "}]"], "closed"),
    ("deep-nesting", ["42[" + "[" * 20000 + "]" * 20000 + "]"], "closed"),
    ("attachment-never-sent", ["451-[" + SEND + ',{"_placeholder":true,"num":0}]'],
     "closed"),
    ("three-attachments-for-one", ["451-[" + SEND + ',{"_placeholder":true,"num":0}]',
                                   b"one", b"two", b"three"], "closed"),
    ("attachment-index-out-of-range", ["451-[" + SEND + ',{"_placeholder":true,"num":5}]',
                                       b"one"], "closed"),
    ("binary-junk", [bytes(range(256)) * 4], "closed"),
    ("text-above-frame-limit", ['42["x","' + "x" * (MAX_FRAME_BYTES + 1000) + '"]'],
     "closed"),
    ("binary-above-frame-limit", [b"\x04" + b"x" * (MAX_FRAME_BYTES + 1000)], "closed"),
    # shapes at the edge of prroom's direct event path (prroom/transport/event_path.py)
    ("ack-id-16-digits", ["42" + "1" * 16 + '["stop-typing",{}]'], "acked:missing-field"),
    ("ack-id-arabic-digit", ['42\u0663["stop-typing",{}]'], "acked:missing-field"),
    ("ack-id-superscript", ['42\u00b2["stop-typing",{}]'], "closed"),
    ("space-before-array", ['42 ["stop-typing",{}]'], "error:missing-field"),
    ("own-event-extra-args", ['42["stop-typing",{"pullRequestId":1,"username":"x"},"more",3]'],
     "error:not-a-member"),
    ("own-event-huge-integer-ack", ["427" + '["join-pr-room",{"pullRequestId":' + "9" * 5000
                                    + "}]"], "closed"),
    ("own-event-slash-namespace", ['42/,["stop-typing",{}]'], "error:missing-field"),
]


def what_happened(raw: RawSocket) -> str:
    """Send a valid acked probe after the attack and classify what the server did."""
    ack_id = next(raw._ack_ids)
    probe = f"42{ack_id}" + json.dumps(["stop-typing", {"pullRequestId": 1,
                                                      "username": "probe"}])
    try:
        raw.send(probe)
    except (BrokenPipeError, ConnectionResetError, websocket.WebSocketException):
        return "closed"
    before: List[str] = []
    while True:
        try:
            packet = raw.next_packet(timeout=5)
        except Closed:
            return "closed"
        except websocket.WebSocketTimeoutException:
            return "wedged"  # 5 s without an answer to a valid request
        assert isinstance(packet, str), packet  # prroom never sends binary
        if packet.startswith(f"3{ack_id}["):
            ack = json.loads(packet[len(f"3{ack_id}"):])[0]
            assert ack["ok"] is False and ack["error"]["code"] == "not-a-member", ack
            break
        if packet.startswith("2[") and "got str" in packet:
            return "swallowed"  # the probe frame was taken as the awaited attachment
        before.append(packet)
    if not before:
        return "ignored"
    assert len(before) == 1, before
    if before[0].startswith("3"):  # an ack for the attacker's own (odd) ack id
        return "acked:" + json.loads(before[0][before[0].index("["):])[0]["error"]["code"]
    error = event_of(before[0])
    assert error[0] == "pr-room-error", before
    return "error:" + error[1]["error"]["code"]


event_path_server = servers.server_fixture(
    variants={"direct-path": {"PRROOM_EVENT_PATH": "direct"},
              "library-path": {"PRROOM_EVENT_PATH": "library"}},
    doc="Default settings, once with prroom's direct event path and once without: every "
        "frame must be answered alike by both.")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("frames,expected", [pytest.param(frames, expected, id=name)
                                             for name, frames, expected in MALFORMED])
def test_malformed_frames_affect_only_their_connection(event_path_server, connect, pr_id,
                                                       frames, expected):
    server = event_path_server
    other_room = pr_id + 500_000
    member, bystander = connect.many(2, server)
    member.join(pr_id, "member")
    bystander.join(other_room, "bystander")
    raw = RawSocket(server)
    try:
        raw.connect_namespace()
        raw.join(pr_id, "attacker")
        for frame in frames:
            try:
                raw.send(frame)
            except (BrokenPipeError, ConnectionResetError,
                    websocket.WebSocketConnectionClosedException):
                break  # the server hung up while a large frame was still being written
        outcome = what_happened(raw)
        if outcome == "swallowed":
            # the probe became the attachment; the connection works again after that
            assert what_happened(raw) == "ignored"
    finally:
        raw.close()
    assert outcome == expected
    assert_room_saw_nothing(member, pr_id, "member")
    assert_room_saw_nothing(bystander, other_room, "bystander")
    assert_still_serving(connect, server, pr_id)


class QuietMember(NamedTuple):
    """What a member that only listens saw over 4.5 s on the 1 s ping server."""

    pings: int
    messages: int
    answer: dict  # the ack of its own message at the end


@pytest.fixture(scope="module")
def quiet_member(short_ping_server: servers.ServerProcess) -> QuietMember:
    # prroom sends pings from an event-loop timer, not engine.io's sleeping greenlet
    # (prroom/transport/writes.py): each one must still come, once per interval,
    # with messages still flowing around them.
    pull_request_id = new_pull_request_id()
    with Clients(short_ping_server) as connect:
        talker = connect()
        talker.join(pull_request_id, "talker")
        raw = RawSocket(short_ping_server)
        try:
            raw.connect_namespace()
            raw.join(pull_request_id, "quiet")
            pings, messages = 0, 0
            started = next_say = time.monotonic()
            while time.monotonic() - started < 4.5:
                if time.monotonic() >= next_say:  # a message every half second, within limits
                    talker.say(pull_request_id, "talker", "still here?")
                    next_say += 0.5
                raw.ws.settimeout(0.5)
                try:
                    opcode, data = raw.ws.recv_data()
                except websocket.WebSocketTimeoutException:
                    continue
                if data == b"2":
                    pings += 1
                    raw.ws.send("3")
                elif data.startswith(b"42"):
                    messages += 1
            answer, _ = raw.call("send-message-to-pr-room",
                                 {"pullRequestId": pull_request_id, "username": "quiet",
                                  "message": "yes"})
        finally:
            raw.close()
    print(f"\nquiet member: {pings} pings, {messages} messages in 4.5 s")
    return QuietMember(pings, messages, answer)


@pytest.mark.timeout(60)
def test_pings_keep_coming_to_a_quiet_member_and_keep_it_connected(quiet_member):
    assert quiet_member.pings >= 2  # not just the first one
    assert quiet_member.messages >= 3
    assert quiet_member.answer["ok"] is True  # still connected after 4 ping intervals


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_pings_come_once_per_interval(quiet_member):
    # a 1 s interval over 4.5 s: 4 pings, give or take one at each end
    assert 3 <= quiet_member.pings <= 5


class Ghost(NamedTuple):
    """A member whose connection a malformed frame killed, as a watcher in its room saw it."""

    pull_request_id: int
    left: dict     # the pr-room-user-left the watcher got
    after: float   # seconds from the frame to it
    watcher: RoomClient


@pytest.fixture(scope="module")
def ghost(short_ping_server: servers.ServerProcess) -> Iterator[Ghost]:
    """python-engineio drops the socket without closing its session; the ping timeout must."""
    pull_request_id = new_pull_request_id()
    with Clients(short_ping_server) as connect:
        watcher = connect(presence=True)
        watcher.join(pull_request_id, "watcher")
        assert watcher.expect("pr-room-members")["members"] == ["watcher"]
        raw = RawSocket(short_ping_server)
        try:
            raw.connect_namespace()
            raw.join(pull_request_id, "ghost")
            assert watcher.expect("pr-room-user-joined")["username"] == "ghost"
            started = time.monotonic()
            raw.send("garbage")
            with pytest.raises(Closed):
                raw.next_packet(timeout=5)
        finally:
            raw.close()
        # With the defaults (ping interval 25 s + timeout 20 s) the ghost would stay a member
        # for 45-60 s: a wait of 30 s tells the two apart.
        left = watcher.expect("pr-room-user-left", timeout=30)
        after = time.monotonic() - started
        print(f"\nghost left its room {after:.1f} s after its connection was dropped")
        yield Ghost(pull_request_id, left, after, watcher)


@pytest.mark.timeout(60)
def test_a_connection_killed_by_a_malformed_frame_leaves_its_room(ghost):
    assert ghost.left == {"pullRequestId": ghost.pull_request_id, "username": "ghost"}
    assert_room_saw_nothing(ghost.watcher, ghost.pull_request_id, "watcher")


@pytest.mark.stress
@pytest.mark.timeout(60)
def test_a_killed_connection_leaves_its_room_within_the_ping_timeout(ghost):
    # PRROOM_PING_INTERVAL=1 + PRROOM_PING_TIMEOUT=1, plus one sweep of Engine.IO's service
    # task and slack for a busy machine (observed about 2-4 s)
    assert ghost.after < 15


# -- b. a flood in one room while another room talks -------------------------------------

flood_server = servers.server_fixture(
    doc="Default settings (5 messages/s, burst 20, dropped after 50 refusals in a row), but a "
        "server of its own: the flood's backlog and log lines disturb no other test.")


class Flooder(threading.Thread):
    """Sends fire-and-forget messages in one room as fast as it can; reconnects when dropped.

    Stops after ``seconds`` or ``max_messages`` messages, whichever comes first.
    """

    def __init__(self, server, room: int, seconds: float, max_messages: int) -> None:
        super().__init__(daemon=True)
        self.server, self.room = server, room
        self.seconds, self.max_messages = seconds, max_messages
        self.sent = self.rate_limited = self.other_errors = 0
        self.connections = self.dropped = 0
        self.started = threading.Event()
        self.failure: Optional[BaseException] = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline and self.sent < self.max_messages:
                self._one_connection(deadline)
        except BaseException as exc:  # reported by the test
            self.failure = exc

    def _one_connection(self, deadline: float) -> None:
        raw = RawSocket(self.server)
        raw.connect_namespace()
        raw.join(self.room, "flooder")
        self.connections += 1
        dropped = threading.Event()

        def read() -> None:
            while True:
                try:
                    packet = raw.next_packet(timeout=self.seconds + 30)
                except websocket.WebSocketTimeoutException:  # silent: give up on it
                    dropped.set()
                    return
                except Exception:  # the server closed the transport: dropped
                    self.dropped += 1
                    dropped.set()
                    return
                if packet == "1":  # Socket.IO DISCONNECT: the server dropped the flooder
                    self.dropped += 1
                    dropped.set()
                    return
                if isinstance(packet, str) and packet.startswith('2["pr-room-error"'):
                    if '"rate-limited"' in packet:
                        self.rate_limited += 1
                    else:
                        self.other_errors += 1

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        frame = "42" + json.dumps(["send-message-to-pr-room",
                                   {"pullRequestId": self.room, "username": "flooder",
                                    "message": "spam " * 20}])
        try:
            while not dropped.is_set() and time.monotonic() < deadline and \
                    self.sent < self.max_messages:
                raw.send(frame)
                self.sent += 1
                if self.sent >= 100:
                    self.started.set()
        except (OSError, websocket.WebSocketException):
            pass  # the server closed the connection under us
        dropped.wait(30)  # the server works through the backlog, then drops the flooder
        raw.close()
        reader.join(5)


class Flood(NamedTuple):
    """Room A flooded while room B's two members talk, one message every 100 ms."""

    server: servers.ServerProcess
    room_a: int
    room_b: int
    b1: RoomClient
    b2: RoomClient
    flooder: Flooder
    acks: List[dict]          # room B's 50 acks, in order
    delivered: List[dict]     # what the other member of room B got for each
    echoed: List[dict]        # what the sender got back for each
    latencies: List[float]    # send to delivery, seconds


@pytest.fixture(scope="module")
def flood(flood_server: servers.ServerProcess) -> Iterator[Flood]:
    server = flood_server
    room_a = new_pull_request_id()
    room_b = room_a + 500_000
    with Clients(server) as connect:
        b1, b2 = connect.many(2)
        b1.join(room_b, "b1")
        b2.join(room_b, "b2")
        flooder = Flooder(server, room_a, seconds=5, max_messages=3000)
        flooder.start()
        assert flooder.started.wait(10), "the flood did not start"

        # 50 acked messages, alternating senders, one every 100 ms: within each socket's
        # default budget (burst 20, then 5/s), so the only thing slowing room B would be A.
        acks, delivered, echoed, latencies = [], [], [], []
        began = time.monotonic()
        for number in range(50):
            (sender, sender_name), receiver = ((b1, "b1"), b2) if number % 2 == 0 else \
                ((b2, "b2"), b1)
            sent_at = time.perf_counter()
            # generous timeouts: how long it took is the stress test's business
            acks.append(sender.call("send-message-to-pr-room",
                                    {"pullRequestId": room_b, "username": sender_name,
                                     "message": f"b-message {number}"}, timeout=15))
            delivered.append(receiver.expect("pr-room-message", timeout=15))
            latencies.append(time.perf_counter() - sent_at)
            echoed.append(sender.expect("pr-room-message", timeout=15))
            time.sleep(max(0.0, began + 0.1 * (number + 1) - time.monotonic()))  # pacing
        flooder.join(40)
        print(f"\nflood: {flooder.sent} messages over {flooder.connections} connection(s), "
              f"{flooder.rate_limited} rate-limited errors, {flooder.dropped} disconnect(s); "
              f"room B delivery p50 {statistics.median(latencies) * 1000:.1f} ms, "
              f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms")
        yield Flood(server, room_a, room_b, b1, b2, flooder, acks, delivered, echoed,
                    latencies)


@pytest.mark.timeout(120)
def test_a_flood_is_refused_dropped_and_kept_out_of_other_rooms(flood, connect):
    flooder = flood.flooder
    assert not flooder.is_alive()
    assert flooder.failure is None, flooder.failure
    assert [ack["ok"] for ack in flood.acks] == [True] * 50
    # room B's members see exactly room B's messages, in order
    sent = [(flood.room_b, f"b-message {number}") for number in range(50)]
    assert [(got["pullRequestId"], got["message"]) for got in flood.delivered] == sent
    assert [(got["pullRequestId"], got["message"]) for got in flood.echoed] == sent
    assert flooder.rate_limited > 0 and flooder.other_errors == 0
    # PRROOM_RATE_LIMIT_DISCONNECT_AFTER=50 refusals in a row: the flooder is dropped, each
    # time it comes back
    assert flooder.dropped >= 1 and flooder.dropped >= flooder.connections - 1
    assert "rate-limited events (the last: message)" in flood.server.log()
    assert_room_saw_nothing(flood.b1, flood.room_b, "b1", flood.b2)
    assert_still_serving(connect, flood.server, flood.room_a)


# Observed on the shared 2-core machine (other test runs going), 3000-message flood:
# room B delivery p50 1.6-2.2 ms, p99 0.43-1.43 s.  The p99 is room B's first message,
# which waits until the server has worked through the flooder's whole backlog (the other
# 49 stay under ~50 ms): see the sustained-flood test below.  Bound: ~3x the worst p99 seen.
B_LATENCY_P99_BOUND = 4.5
# What room B should see however hard room A is flooded (~3x a quiet server's p99).
B_LATENCY_GOAL = 0.25


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_a_flood_in_one_room_barely_slows_another(flood):
    assert percentile(flood.latencies, 0.99) < B_LATENCY_P99_BOUND, flood.latencies


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_a_sustained_flood_does_not_stall_other_rooms(flood_server, connect, pr_id):
    server = flood_server
    room_a, room_b = pr_id, pr_id + 500_000
    b1, b2 = connect.many(2, server)
    b1.join(room_b, "b1")
    b2.join(room_b, "b2")
    flooder = Flooder(server, room_a, seconds=3, max_messages=100_000)
    flooder.start()
    try:
        assert flooder.started.wait(10), "the flood did not start"
        sent_at = time.perf_counter()
        ack = b1.call("send-message-to-pr-room",
                      {"pullRequestId": room_b, "username": "b1", "message": "anyone?"},
                      timeout=60)
        delivered = b2.expect("pr-room-message", timeout=60)
        latency = time.perf_counter() - sent_at
        print(f"\nsustained flood: room B waited {latency:.2f} s for one message")
        assert ack["ok"] and delivered["message"] == "anyone?"
    finally:
        flooder.join(90)  # the server is given time to drain the backlog before others go
    assert latency < B_LATENCY_GOAL


# -- c. connect / join / send / disconnect churn -----------------------------------------

WARM_UP_CYCLES = 200
CYCLES = 2000
CYCLES_SECONDS = 60  # a cap on the measured loop; 2000 cycles took 6-10 s when measured
# Observed: RSS ~54.5 MB after the warm-up, +2.1-4.2 MB after 2000 more cycles (flat over
# 3 x 2000 cycles).  Bound: about 3x that.
RSS_GROWTH_BOUND_MB = 12
# Each connection's Engine.IO socket lives on until its next ping is due (PRROOM_PING_INTERVAL
# seconds after the connection is gone); with the default 25 s, 2000 cycles in 8 s would
# still be held at the second measurement - transient, not a leak.  A 1 s interval keeps that
# out of the measurement.
CHURN_ENV = {"PRROOM_PING_INTERVAL": "1", "PRROOM_PING_TIMEOUT": "2"}


def one_cycle(server, pull_request_id: int, number: int) -> None:
    raw = RawSocket(server)
    try:
        raw.connect_namespace()
        raw.join(pull_request_id, f"cycler-{number % 7}")
        ack, before = raw.call("send-message-to-pr-room",
                               {"pullRequestId": pull_request_id,
                                "username": f"cycler-{number % 7}", "message": "hello"})
        assert ack["ok"] is True, ack
        assert [event_of(packet)[0] for packet in before] == ["pr-room-message"]
    finally:
        raw.close()


def settled_rss(server, pid: int) -> float:
    """RSS once every room is empty again, i.e. the server has seen every disconnect."""
    assert wait_until(lambda: health(server)["rooms"] == 0, timeout=30), health(server)
    return rss_mb(pid)


@pytest.mark.stress
@pytest.mark.timeout(150)
def test_connection_churn_does_not_grow_memory():
    with servers.running(env=CHURN_ENV) as server:
        pid = server.worker_pid()
        for number in range(WARM_UP_CYCLES):
            one_cycle(server, 1 + number % 10, number)
        before = settled_rss(server, pid)
        started = time.monotonic()
        done = 0
        while done < CYCLES and time.monotonic() - started < CYCLES_SECONDS:
            one_cycle(server, 1 + done % 10, done)
            done += 1
        elapsed = time.monotonic() - started
        after = settled_rss(server, pid)
        print(f"\nchurn: {done} cycles in {elapsed:.1f} s; worker RSS {before:.1f} MB after "
              f"{WARM_UP_CYCLES} warm-up cycles, {after:.1f} MB after; growth "
              f"{after - before:+.1f} MB (bound {RSS_GROWTH_BOUND_MB} MB)")
        assert done >= CYCLES // 2, f"only {done} cycles in {CYCLES_SECONDS} s"
        assert after - before < RSS_GROWTH_BOUND_MB
        assert "Traceback" not in server.log()


# -- d. handshakes opened and never finished ---------------------------------------------

def _session_open(server, sid: str) -> bool:
    """Whether Engine.IO still has session ``sid`` (a closed one answers 400)."""
    try:
        response = requests.get(server.url + "/socket.io/",
                                params={"EIO": "4", "transport": "polling", "sid": sid},
                                timeout=3)
    except requests.Timeout:  # a long poll waiting for the next ping: alive
        return True
    return response.status_code != 400


def _still_open(conn: socket.socket) -> bool:
    """True while the server has neither closed nor answered it (nothing to read yet)."""
    conn.setblocking(False)
    try:
        conn.recv(1)  # b"": closed; anything else: an answer to half a request line
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


HALF_OPEN_TCP = 200
ABANDONED_POLLING = 100


@pytest.mark.timeout(90)
def test_abandoned_handshakes_do_not_block_others_and_are_cleaned_up(short_ping_server,
                                                                      connect, pr_id):
    server = short_ping_server
    half_open: List[socket.socket] = []
    try:
        # 200 connections that send part of a request line and nothing more
        for _ in range(HALF_OPEN_TCP):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            conn.sendall(b"GET /socket.io/?EIO=4&transport=polling HTT")
            half_open.append(conn)
        # 100 Engine.IO sessions opened over long-polling and never used again
        abandoned = []
        for _ in range(ABANDONED_POLLING):
            response = requests.get(server.url + "/socket.io/?EIO=4&transport=polling",
                                    timeout=5)
            assert response.status_code == 200 and response.text.startswith("0{")
            abandoned.append(json.loads(response.text[1:])["sid"])
        opened_at = time.monotonic()

        # meanwhile a normal client connects and chats
        member = connect(server)
        member.join(pr_id, "member")
        assert_room_saw_nothing(member, pr_id, "member")
        assert_still_serving(connect, server, pr_id + 500_000)

        # The abandoned sessions are closed by the ping timeout.  /healthz reports rooms, not
        # sockets, so each session is asked for directly: a GET on a live session returns
        # its pending packets (the unanswered ping; a GET is not a pong, so it does not keep
        # the session alive), on a closed one "400 Invalid session".  Expected within ~3 s
        # (ping interval 1 s + ping timeout 1 s + Engine.IO's sweep, 1 s for all sockets):
        # a generous wait.
        alive = list(abandoned)

        def all_closed() -> bool:
            alive[:] = [sid for sid in alive if _session_open(server, sid)]
            return not alive

        wait_until(all_closed, timeout=max(0.0, opened_at + 30 - time.monotonic()),
                   interval=0.2)
        cleaned_after = time.monotonic() - opened_at
        print(f"\nhandshakes: {HALF_OPEN_TCP} half-open TCP requests sent; "
              f"{ABANDONED_POLLING} abandoned Engine.IO sessions, "
              f"{ABANDONED_POLLING - len(alive)} closed within {cleaned_after:.1f} s")
        assert alive == [], f"{len(alive)} abandoned sessions still open"

        # The half-open requests did not stop anyone.  How many the server still holds is
        # printed, not asserted: the worker cuts them after PRROOM_HEADER_TIMEOUT (10 s by
        # default), which tests/integration/test_dos.py checks.
        still_held = sum(1 for conn in half_open if _still_open(conn))
        print(f"handshakes: {still_held} of {HALF_OPEN_TCP} half-open requests still held "
              f"{time.monotonic() - opened_at:.1f} s later")
        assert_room_saw_nothing(member, pr_id, "member")
    finally:
        for conn in half_open:
            conn.close()


# -- e. a client that stops reading ------------------------------------------------------

SLOW_ENV = {"PRROOM_MESSAGE_RATE": "1000", "PRROOM_MESSAGE_BURST": "1000",
            "PRROOM_MAX_QUEUED_PACKETS": "200"}
SLOW_FLOOD_RATE = 500        # messages per second from the flooding member, paced
SLOW_FLOOD_MAX = 6000        # and at most this many (12 s)
SLOW_MESSAGE = "y" * 3000    # large-ish: ~3 KB per packet
# Observed: the drop came 3.1-4.4 s after the flood began (the kernel buffers of the
# connection fill first, then 200 packets queue up, then the once-a-second check runs);
# the worker's RSS peaked 1.5-4.1 MB above its level before the flood.  Bounds: ~3x, and the
# RSS bound is below what holding the whole flood for the slow member would take (~18 MB).
SLOW_DROP_BOUND_S = 10
SLOW_RSS_BOUND_MB = 10
# The third member's round trip through the same (flooded) room: observed p50 110-140 ms,
# p99 0.24-0.97 s, mostly the test's own Python client decoding 1.5 MB/s of flood ahead of
# its message.  Bound: ~3x the worst p99 seen.
SLOW_THIRD_P99_BOUND = 3.0


slow_server = servers.server_fixture(
    SLOW_ENV, doc="Rate limits out of the way; a member may have 200 packets queued.")


class SlowConsumer(NamedTuple):
    """A room member that stopped reading while another floods the room."""

    server: servers.ServerProcess
    connect: Clients
    pull_request_id: int
    slow_sid: str
    dropped_after: Optional[float]  # seconds into the flood, None if never dropped
    rss_growth_mb: float            # the worker's peak RSS above its level before the flood
    latencies: List[float]          # the third member's round trips through the room
    bystander: RoomClient           # a member of another room


@pytest.fixture(scope="module")
def slow_consumer(slow_server: servers.ServerProcess) -> Iterator[SlowConsumer]:
    server = slow_server
    pull_request_id = new_pull_request_id()
    with Clients(server) as connect:
        pid = server.worker_pid()
        flooder, third, bystander = connect.many(3)
        flooder.join(pull_request_id, "flooder")
        third.join(pull_request_id, "third")
        bystander.join(pull_request_id + 500_000, "bystander")
        # a member that never reads again, with the smallest receive buffer it can have
        slow = RawSocket(server, rcvbuf=4096)
        try:
            slow.connect_namespace()
            slow.join(pull_request_id, "slow")
            dropped_line = ("dropping a client too slow to read: eio_sid="
                            + session_tag(slow.eio_sid))
            baseline = peak = rss_mb(pid)

            payload = {"pullRequestId": pull_request_id, "username": "flooder",
                       "message": SLOW_MESSAGE}
            latencies: List[float] = []
            sent = 0
            started = time.monotonic()
            dropped_after = None
            while sent < SLOW_FLOOD_MAX and time.monotonic() - started < SLOW_FLOOD_MAX / \
                    SLOW_FLOOD_RATE:
                for _ in range(SLOW_FLOOD_RATE // 10):  # one tenth of a second's worth
                    flooder.emit("send-message-to-pr-room", payload)
                    sent += 1
                # the third member's own message, through the flooded room
                sent_at = time.perf_counter()
                ack = third.say(pull_request_id, "third", f"third {sent}")
                for _ in range(sent + 10):  # skip the flood already delivered to it
                    event = third.expect("pr-room-message", timeout=10)
                    if event["id"] == ack["id"]:
                        break
                latencies.append(time.perf_counter() - sent_at)
                peak = max(peak, rss_mb(pid))
                if dropped_line in server.log():
                    dropped_after = time.monotonic() - started
                    break
                time.sleep(max(0.0, started + sent / SLOW_FLOOD_RATE - time.monotonic()))
            print("\nslow consumer: dropped "
                  + (f"{dropped_after:.1f} s" if dropped_after else "NOT dropped")
                  + f" after the flood began ({sent} messages of {len(SLOW_MESSAGE)} chars "
                  f"sent); worker RSS {baseline:.1f} MB before, peak {peak:.1f} MB "
                  f"(+{peak - baseline:.1f}); third member's round trip p50 "
                  f"{statistics.median(latencies) * 1000:.1f} ms, "
                  f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms")
            yield SlowConsumer(server, connect, pull_request_id, slow.sid, dropped_after,
                               peak - baseline, latencies, bystander)
        finally:
            slow.close()


@pytest.mark.timeout(120)
def test_a_client_that_stops_reading_is_dropped_and_others_carry_on(slow_consumer):
    run = slow_consumer
    assert run.dropped_after is not None, "never dropped while the flood lasted"
    # dropped means gone: prroom saw the disconnect (its rooms and presence are updated)
    assert wait_until(lambda: f"disconnect sid={run.slow_sid}" in run.server.log(), timeout=10)
    # the others carry on; nobody outside the room saw anything
    assert_room_saw_nothing(run.bystander, run.pull_request_id + 500_000, "bystander")
    assert_still_serving(run.connect, run.server, run.pull_request_id + 600_000)


@pytest.mark.stress
@pytest.mark.timeout(120)
def test_a_client_that_stops_reading_costs_others_little(slow_consumer):
    run = slow_consumer
    assert run.dropped_after is not None and run.dropped_after < SLOW_DROP_BOUND_S
    assert run.rss_growth_mb < SLOW_RSS_BOUND_MB
    assert percentile(run.latencies, 0.99) < SLOW_THIRD_P99_BOUND, run.latencies


@pytest.mark.timeout(60)
def test_a_long_polling_member_that_stops_polling_is_dropped_too(slow_server):
    # every other connection of the server is a WebSocket that reads: the watchdog must
    # still look at a long-polling session's queue
    server = slow_server
    pull_request_id = new_pull_request_id()
    with Clients(server) as connect:
        flooder = connect(server)
        flooder.join(pull_request_id, "flooder")
        polling = PollingSession(server.url)
        polling.post("40")
        assert any(packet.startswith("40") for packet in polling.packets())
        polling.post('421["join-pr-room",{"pullRequestId":%d,"username":"poller"}]'
                     % pull_request_id)
        assert wait_until(lambda: any('"ok":true' in packet for packet in polling.packets()),
                          timeout=10)
        # it stops polling; the room gets more than PRROOM_MAX_QUEUED_PACKETS messages
        payload = {"pullRequestId": pull_request_id, "username": "flooder", "message": "z"}
        for _ in range(300):
            flooder.emit("send-message-to-pr-room", payload)
        dropped = "dropping a client too slow to read: eio_sid=" + session_tag(polling.sid)
        # within a few of the watchdog's seconds: long before a missed ping would end it
        assert wait_until(lambda: dropped in server.log(), timeout=8), server.log()[-2000:]
        assert_still_serving(connect, server, pull_request_id + 600_000)


# -- bugs this suite found in prroom (now fixed): each stays as a regression test ----------

@pytest.mark.timeout(60)
def test_an_event_named_star_touches_nobody_else(server, connect, pr_id):
    victim = connect(server)
    victim.join(pr_id, "victim")
    raw = RawSocket(server)
    try:
        raw.connect_namespace()
        raw.send(f'42["*","pr:{pr_id}",{{"pullRequestId":{pr_id}}}]')  # at a room
        for _ in range(60):  # more than PRROOM_RATE_LIMIT_DISCONNECT_AFTER at one socket
            raw.send(f'42["*","{victim.sid}"]')
        ack, _ = raw.call("stop-typing", {"pullRequestId": pr_id, "username": "x"})
        assert ack["error"]["code"] == "not-a-member"  # the server has handled them all
    finally:
        raw.close()
    assert_room_saw_nothing(victim, pr_id, "victim")


@pytest.mark.timeout(60)
def test_an_event_named_disconnect_keeps_the_token_identity(token_server, pr_id):
    token = issue_token(TOKEN_SECRET, "mallory", pull_requests=[pr_id])
    raw = RawSocket(token_server)
    try:
        raw.connect_namespace({"token": token})
        as_alice = {"pullRequestId": pr_id + 1, "username": "alice"}
        refused, _ = raw.call("join-pr-room", as_alice)
        assert refused["error"]["code"] == "identity-mismatch"
        raw.send('42["disconnect"]')
        ack, _ = raw.call("join-pr-room", as_alice)
    finally:
        raw.close()
    assert ack["ok"] is False, ack  # the bug: {"ok": true, ..., "username": "alice"}


@pytest.mark.stress
@pytest.mark.timeout(90)
def test_lying_attachment_counts_cannot_make_the_server_hoard(server):
    pid = server.worker_pid()
    before = rss_mb(pid)
    raw = RawSocket(server)
    closed = False
    try:
        raw.connect_namespace()
        raw.send('459999999-["send-message-to-pr-room",{"_placeholder":true,"num":0}]')
        blob = bytes(60_000)
        for _ in range(500):  # 30 MB
            try:
                raw.send(blob)
            except (OSError, websocket.WebSocketException):
                closed = True  # refusing the connection is a fine answer
                break
        # The frames are never answered, so growth is polled (bounded): the bug shows as
        # soon as the worker holds 15 MB more; a fixed server never gets there.
        hoarding = wait_until(lambda: rss_mb(pid) - before > 15, timeout=10, interval=0.2)
        print(f"\nlying attachment count: worker RSS {before:.1f} -> {rss_mb(pid):.1f} MB")
    finally:
        raw.close()
    assert closed or not hoarding
