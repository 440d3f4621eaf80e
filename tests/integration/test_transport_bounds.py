"""Transport bounds against hostile clients (issue #24): oversized WebSocket frames, request
bodies that never finish, oversized request headers, session ids in the access log.

Each test speaks raw HTTP or raw WebSocket frames to ``gunicorn -c gunicorn.conf.py
wsgi:app`` on loopback and asserts what an operator notices: the worker's resident memory
(``/proc/<worker>/status``), connections still open, the close code or status a client
gets, the access-log line.  Figures are printed (``pytest -s``) next to their bounds.
"""
from __future__ import annotations

import json
import re
import socket
import time
from typing import Iterator, List, NamedTuple, Optional, Tuple

import pytest
import requests
from websocket import ABNF, WebSocketConnectionClosedException

from prroom.transport.worker import session_tag
from tests.integration.test_adversarial import rss_mb
from tests.support import servers
from tests.support.clients import RoomClient
from tests.support.raw import PollingSession, RawWebSocket, still_open
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MAX_FRAME_BYTES = 65536   # PRROOM_MAX_FRAME_BYTES' default, which these servers keep
BODY_TIMEOUT = 2          # PRROOM_BODY_TIMEOUT
MAX_HEADER_BYTES = 16384  # PRROOM_MAX_HEADER_BYTES' default
SLACK = 4                 # a shared, busy machine
HELD_BOUND_MB = 16        # what one hostile WebSocket may make the worker hold

DISCONNECT_AFTER = 5      # PRROOM_RATE_LIMIT_DISCONNECT_AFTER
ENV = {"PRROOM_BODY_TIMEOUT": str(BODY_TIMEOUT), "PRROOM_PING_INTERVAL": "2",
       "PRROOM_PING_TIMEOUT": "2", "PRROOM_MESSAGE_RATE": "0.1", "PRROOM_MESSAGE_BURST": "1",
       "PRROOM_RATE_LIMIT_DISCONNECT_AFTER": str(DISCONNECT_AFTER)}


@pytest.fixture(scope="module", params=["direct", "library"])
def server(request) -> Iterator[servers.ServerProcess]:
    """prroom with a short body deadline and short pings, on each event path."""
    with servers.running(env={**ENV, "PRROOM_EVENT_PATH": request.param}) as proc:
        yield proc


def waiting(conn: socket.socket) -> bool:
    """True while the server has neither answered nor closed ``conn`` (reads nothing)."""
    conn.setblocking(False)
    try:
        conn.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        conn.setblocking(True)
    return False


def settled_rss(pid: int) -> float:
    """The worker's resident memory once it stopped moving (a few samples, bounded)."""
    previous = rss_mb(pid)
    for _ in range(10):
        time.sleep(0.2)
        current = rss_mb(pid)
        if abs(current - previous) < 0.5:
            return current
        previous = current
    return previous


def close_code(raw: RawWebSocket, timeout: float = 5.0) -> Optional[int]:
    """The code of the close frame the server sends next (None: closed without one, or no
    close within ``timeout``)."""
    raw.ws.settimeout(timeout)
    try:
        while True:
            opcode, data = raw.ws.recv_data(control_frame=True)
            if opcode == ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big") if len(data) >= 2 else None
    except Exception:  # timed out, or reset: no close frame
        return None


def stream(conn: socket.socket, total: int, chunk: int = 1 << 16) -> int:
    """Send up to ``total`` bytes; return how many the connection took before it broke."""
    sent = 0
    block = b"\0" * chunk
    conn.settimeout(5)
    try:
        while sent < total:
            conn.sendall(block)
            sent += chunk
    except OSError:  # reset or timed out: the server stopped reading
        pass
    return sent


# -- WebSocket frames -----------------------------------------------------------------------

ANNOUNCED = 256 << 20  # what the attacker's frame header claims
STREAMED = 64 << 20    # what it then sends


class FrameAttack(NamedTuple):
    """What one unauthenticated WebSocket announcing a huge frame got, and cost."""

    code: Optional[int]  # the close code it received
    sent: int            # bytes the server took before the connection broke
    held: float          # MB of worker RSS gained
    open_after: bool     # whether the connection was still open after streaming


@pytest.fixture(scope="module")
def frame_attack(server) -> FrameAttack:
    """Announce a 256 MB frame, then stream 64 MB; once per server."""
    pid = server.worker_pid()
    before = settled_rss(pid)
    raw = RawWebSocket(server.url)  # an Engine.IO session, never authenticated
    try:
        header = b"\x82\xff" + ANNOUNCED.to_bytes(8, "big") + b"\x11\x22\x33\x44"
        assert raw.ws.sock is not None
        raw.ws.sock.sendall(header + b"\0" * 4096)
        code = close_code(raw)
        sent = stream(raw.ws.sock, STREAMED)
        held = settled_rss(pid) - before
        open_after = still_open(raw.ws.sock)
    finally:
        raw.close()
    print(f"\nframe header claiming {ANNOUNCED >> 20} MB: close code {code}; the server took "
          f"{sent / (1 << 20):.1f} of {STREAMED >> 20} MB streamed; worker RSS +{held:.1f} MB "
          f"(bound {HELD_BOUND_MB} MB)")
    return FrameAttack(code, sent, held, open_after)


def test_a_frame_announcing_256_mb_is_refused_at_its_header(server, frame_attack):
    assert frame_attack.code == 1009
    assert not frame_attack.open_after
    assert "WebSocket closed with 1009: frame of 268435456 bytes announced" in server.log()


@pytest.mark.stress  # a memory bound
def test_a_frame_announcing_256_mb_costs_the_worker_little(frame_attack):
    assert frame_attack.held < HELD_BOUND_MB
    assert frame_attack.sent < STREAMED


def test_a_fragmented_message_past_the_limit_is_refused_with_1009(server):
    raw = RawWebSocket(server.url)
    try:
        part = "4" + "x" * (MAX_FRAME_BYTES // 2)
        raw.ws.send_frame(ABNF.create_frame(part, ABNF.OPCODE_TEXT, fin=0))
        raw.ws.send_frame(ABNF.create_frame("x" * (MAX_FRAME_BYTES // 2), ABNF.OPCODE_CONT,
                                            fin=0))
        code = close_code(raw)
    finally:
        raw.close()
    assert code == 1009


def test_fragments_within_the_limit_still_make_a_message(server):
    raw = RawWebSocket(server.url)
    try:
        raw.ws.send_frame(ABNF.create_frame("40", ABNF.OPCODE_TEXT, fin=0))
        raw.ws.send_frame(ABNF.create_frame("", ABNF.OPCODE_CONT, fin=1))
        assert raw.recv_socketio().startswith("0{")  # the CONNECT was answered
    finally:
        raw.close()


# -- request bodies --------------------------------------------------------------------------

STALLED_POSTS = 200


class StalledPosts(NamedTuple):
    """What became of POSTs whose body never arrived."""

    cut: bool            # all answered or closed within the deadline and its slack
    elapsed: float       # seconds until then
    statuses: frozenset  # their status lines
    session_gone: bool   # their (never ponged) session closed despite them
    session_id: str


@pytest.fixture(scope="module")
def stalled_posts(server) -> Iterator[StalledPosts]:
    """STALLED_POSTS POSTs with a valid sid announcing 64 KB and sending 10 bytes."""
    session = PollingSession(server.url)
    request = (f"POST /socket.io/?EIO=4&transport=polling&sid={session.sid} HTTP/1.1\r\n"
               f"Host: x\r\nContent-Type: text/plain\r\nContent-Length: 65536\r\n\r\n"
               ).encode() + b"0123456789"
    conns: List[socket.socket] = []
    try:
        for _ in range(STALLED_POSTS):
            conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            conn.sendall(request)
            conns.append(conn)
        sent_at = time.monotonic()
        cut = wait_until(lambda: not any(waiting(conn) for conn in conns), BODY_TIMEOUT + SLACK)
        elapsed = time.monotonic() - sent_at
        statuses = set()
        for conn in conns:
            conn.settimeout(1)
            try:
                statuses.add(conn.recv(64).split(b"\r\n", 1)[0].decode())
            except OSError:
                statuses.add("reset")
        # never ponged: the stalled POSTs must not keep the session alive (pings 2 + 2 s)
        gone = wait_until(lambda: session.get(timeout=6).status_code == 400, 4 + SLACK)
        held = sum(waiting(conn) for conn in conns)
        print(f"\nbody deadline: {STALLED_POSTS} POSTs announcing 64 KB and sending 10 bytes: "
              f"{held} still held after {elapsed:.1f} s (deadline {BODY_TIMEOUT} s); answers "
              f"{sorted(statuses)}; their session gone: {gone}")
        yield StalledPosts(cut, elapsed, frozenset(statuses), gone, session.sid)
    finally:
        for conn in conns:
            conn.close()


def test_posts_whose_body_never_arrives_are_answered_408(server, stalled_posts):
    assert stalled_posts.statuses == {"HTTP/1.1 408 Request Timeout"}
    assert stalled_posts.session_gone
    log = server.log()
    tag = session_tag(stalled_posts.session_id)
    assert f'"POST /socket.io/?EIO=4&transport=polling&sid={tag} HTTP/1.1" 408' in log
    assert stalled_posts.session_id not in log  # nor in python-engineio's "Invalid session"


@pytest.mark.stress  # a deadline, within a bound
def test_posts_whose_body_never_arrives_are_cut_at_the_body_deadline(stalled_posts):
    assert stalled_posts.cut and stalled_posts.elapsed < BODY_TIMEOUT + SLACK


@pytest.mark.parametrize("framing", [b"Content-Length: 10000000", b"Transfer-Encoding: chunked"])
def test_a_body_the_application_leaves_unread_does_not_hold_the_connection(server, framing):
    # larger than the frame limit (python-engineio refuses it by its length, unread), or
    # chunked (python-engineio reads none of it): pywsgi read what was left to its end
    session = PollingSession(server.url)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(f"POST /socket.io/?EIO=4&transport=polling&sid={session.sid} HTTP/1.1\r\n"
                     "Host: x\r\nContent-Type: text/plain\r\n".encode() + framing
                     + b"\r\n\r\n" + (b"5\r\n" if b"chunked" in framing else b"") + b"x" * 5)
        answer = b""
        conn.settimeout(BODY_TIMEOUT + SLACK)
        try:
            while True:
                more = conn.recv(4096)
                if not more:
                    break  # closed: what is asserted
                answer += more
        except socket.timeout:
            pytest.fail(f"connection held after the answer {answer[:60]!r}")
    assert answer.startswith(b"HTTP/1.1 ")


def test_a_body_that_arrives_is_served(server):
    session = PollingSession(server.url)
    response = session.post("40")
    assert (response.status_code, response.text) == (200, "OK")
    assert session.packets()[0].startswith("40{")


# -- request headers -------------------------------------------------------------------------

def _status_of(conn: socket.socket) -> str:
    conn.settimeout(5)
    answer = b""
    try:
        while b"\r\n" not in answer:
            more = conn.recv(4096)
            if not more:
                break
            answer += more
    except OSError:
        pass
    return answer.split(b"\r\n", 1)[0].decode() or "(closed)"


@pytest.fixture(scope="module")
def oversized_headers(server) -> Tuple[str, bool, float]:
    """(status, still open, MB of worker RSS gained) for 100 header lines of 64 KB."""
    pid = server.worker_pid()
    before = settled_rss(pid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n")
        line = b"X-Pad-0: " + b"y" * (64 * 1024 - 12) + b"\r\n"
        conn.sendall(line)
        status = _status_of(conn)
        sent = stream(conn, 99 * len(line), chunk=len(line))  # the rest of 100 x 64 KB
        held = settled_rss(pid) - before
        open_after = still_open(conn)
    print(f"\nheaders: 100 lines of 64 KB -> {status!r}; the server took "
          f"{sent / (1 << 20):.1f} MB more; worker RSS +{held:.1f} MB")
    return status, open_after, held


def test_headers_past_the_total_cap_are_refused_with_431(server, oversized_headers):
    status, open_after, _ = oversized_headers
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"
    assert not open_after
    assert re.search(r'"GET /socket.io/\?EIO=4&transport=polling HTTP/1.1" 431', server.log())

    # many short lines count too; just under the cap is served
    small = b"".join(b"X-Pad-%d: %s\r\n" % (n, b"z" * 190) for n in range(60))
    assert len(small) < MAX_HEADER_BYTES < 2 * len(small)
    assert _request(server, small) == "HTTP/1.1 200 OK"
    assert _request(server, small + small.replace(b"X-Pad-", b"X-More-")) == (
        "HTTP/1.1 431 Request Header Fields Too Large")


@pytest.mark.stress  # a memory bound
def test_oversized_headers_cost_the_worker_little(oversized_headers):
    assert oversized_headers[2] < 8


def _request(server, headers: bytes) -> str:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        return _status_of(conn)


# -- the access log --------------------------------------------------------------------------

def _sessions_logged(server: servers.ServerProcess) -> Tuple[List[str], str]:
    sessions = [PollingSession(server.url) for _ in range(3)]
    for session in sessions:
        assert session.post("40").status_code == 200
        assert session.packets()[0].startswith("40{")
    ids = [session.sid for session in sessions]
    wait_until(lambda: all(f"sid={session_tag(sid)}" in server.log() for sid in ids), 5)
    return ids, server.log()


def test_the_access_log_carries_no_session_id(server):
    ids, log = _sessions_logged(server)
    lines = [line for line in log.splitlines() if "transport=polling" in line]
    assert lines and all(session_id not in log for session_id in ids)
    assert any(f"sid={session_tag(ids[0])}" in line and '" 200 ' in line
               for line in lines), lines[-3:]


def test_the_json_access_log_carries_no_session_id():
    with servers.running(env={"PRROOM_LOG_FORMAT": "json"}) as server:
        ids, log = _sessions_logged(server)
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(f"sid={session_tag(ids[0])}" in json.dumps(record) for record in records)
    assert all(session_id not in log for session_id in ids)


# -- rate limits that could be dodged ---------------------------------------------------------

def _event(name: str, payload: dict) -> str:
    return "42" + json.dumps([name, payload])


def test_accepted_events_in_between_do_not_save_a_flooder(server):
    raw = RawWebSocket(server.url)
    try:
        assert raw.connect().startswith("0{")
        message = _event("send-message-to-pr-room",
                         {"pullRequestId": 1, "username": "x", "message": "m"})
        typing = _event("typing", {"pullRequestId": 1, "username": "x"})
        raw.send(message)  # the burst of one
        closed = False
        for _ in range(DISCONNECT_AFTER + 2):
            try:
                raw.send(message)  # refused: rate-limited
                raw.send(typing)   # accepted by its own bucket (then not-a-member)
            except (WebSocketConnectionClosedException, ConnectionError):
                closed = True  # hung up on before the two spare rounds were sent
                break
        closed = closed or raw.closed_within(5)
    finally:
        raw.close()
    assert closed
    assert f"{DISCONNECT_AFTER} rate-limited events (the last: message)" in server.log()


QUEUED_BYTES = 65536  # PRROOM_MAX_QUEUED_BYTES, its smallest


@pytest.fixture(scope="module")
def bytes_server() -> Iterator[servers.ServerProcess]:
    """A small byte bound on queued packets, and a sender the rate limits let through."""
    with servers.running(env={"PRROOM_MAX_QUEUED_BYTES": str(QUEUED_BYTES),
                              "PRROOM_MESSAGE_RATE": "1000", "PRROOM_MESSAGE_BURST": "1000"}
                         ) as proc:
        yield proc


def test_a_client_that_stops_reading_is_dropped_by_the_bytes_queued(bytes_server, pr_id):
    server = bytes_server
    slow = RawWebSocket(server.url, rcvbuf=4096)  # joins, then never reads again
    sender = RoomClient(server.url)
    try:
        assert slow.connect().startswith("0{")
        slow.send(_event("join-pr-room", {"pullRequestId": pr_id, "username": "slow"})
                  .replace("42", "421", 1))
        while not slow.recv_socketio().startswith("31["):  # the members list may come first
            pass
        sender.join(pr_id, "fast")
        # each packet 8 to 24 KB (2 bytes in UTF-8, 6 as a JSON escape); far fewer packets
        # than PRROOM_MAX_QUEUED_PACKETS' 2000
        text = "\u00e9" * 4000
        sent = 0
        dropped = False
        while sent < 1000 and not dropped:
            sender.emit("send-message-to-pr-room",
                        {"pullRequestId": pr_id, "username": "fast", "message": text})
            sent += 1
            if sent % 50 == 0:
                time.sleep(0.2)  # let the sweep (once a second) look
                dropped = "dropping a client too slow to read" in server.log()
        dropped = dropped or wait_until(
            lambda: "dropping a client too slow to read" in server.log(), 5)
    finally:
        slow.close()
        sender.close()
    print(f"\nqueued bytes: a client that stopped reading was dropped: {dropped}, after "
          f"{sent} packets of 8-24 KB were sent to its room (packet bound 2000)")
    assert dropped and sent < 2000
    assert f"or {QUEUED_BYTES} bytes queued" in server.log()


# -- sessions per address, non-event packets ----------------------------------------------------

MAX_SESSIONS = 5


@pytest.fixture(scope="module")
def session_server() -> Iterator[servers.ServerProcess]:
    """A small per-address session cap and a small join/leave (so CONNECT) rate."""
    with servers.running(env={"PRROOM_MAX_SESSIONS_PER_ADDRESS": str(MAX_SESSIONS),
                              "PRROOM_ROOM_RATE": "0.1", "PRROOM_ROOM_BURST": "3",
                              "PRROOM_RATE_LIMIT_DISCONNECT_AFTER": "5"}) as proc:
        yield proc


def _handshake(server, forwarded_for: Optional[str] = None) -> Tuple[int, str]:
    """Open a long-polling session and close it again at once; (status, body) of the open."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    response = requests.get(server.url + "/socket.io/?EIO=4&transport=polling", timeout=5,
                            headers=headers)
    if response.status_code == 200:  # a CLOSE packet ends it (and frees its place)
        sid = json.loads(response.text[1:])["sid"]
        requests.post(f"{server.url}/socket.io/?EIO=4&transport=polling&sid={sid}",
                      data=b"1", timeout=5, headers=headers)
    return response.status_code, response.text


def test_sessions_per_address_are_capped(session_server):
    server = session_server
    opened = [PollingSession(server.url) for _ in range(MAX_SESSIONS)]
    try:
        status, body = _handshake(server)
        assert status == 401 and json.loads(body)["code"] == "too-many-sessions"
        assert _handshake(server)[0] == 401
        # behind the trusted proxy (loopback, by default) each forwarded client counts apart
        assert _handshake(server, "198.51.100.1, 203.0.113.7")[0] == 200
        # a session that ends frees its place
        assert opened.pop().post("1").status_code == 200
        assert wait_until(lambda: _handshake(server)[0] == 200, 5)
    finally:
        for session in opened:
            session.post("1")
    refusals = [line for line in server.log().splitlines()
                if "refusing Engine.IO sessions from addr=127.0.0.1" in line]
    print(f"\nsessions per address: cap {MAX_SESSIONS}; refusals logged {len(refusals)} time(s)")
    assert len(refusals) == 1


def test_no_session_cap_when_set_to_zero():
    # 0 is documented as "no cap": the server starts (the protection does not count as
    # missing) and still rate-limits control packets, the other half of the same seam
    with servers.running(env={"PRROOM_MAX_SESSIONS_PER_ADDRESS": "0",
                              "PRROOM_ROOM_RATE": "0.1", "PRROOM_ROOM_BURST": "3",
                              "PRROOM_RATE_LIMIT_DISCONNECT_AFTER": "5"}) as server:
        opened = [PollingSession(server.url) for _ in range(MAX_SESSIONS + 2)]
        try:
            assert _handshake(server)[0] == 200
        finally:
            for session in opened:
                session.post("1")
        assert "refusing Engine.IO sessions" not in server.log()
        _assert_control_flood_limited(server)


def test_connects_to_unknown_namespaces_are_rate_limited(session_server):
    _assert_control_flood_limited(session_server)


def _assert_control_flood_limited(session_server: servers.ServerProcess) -> None:
    raw = RawWebSocket(session_server.url)
    answers: List[str] = []
    try:
        for _ in range(20):
            raw.send("40/nope,")
            try:
                answers.append(str(raw.recv_socketio(2)))
            except Exception:  # closed
                break
        closed = raw.closed_within(3)
    finally:
        raw.close()
    invalid = [answer for answer in answers if "Invalid namespace" in answer]
    limited = [json.loads(answer[answer.index("{"):]) for answer in answers
               if "rate-limited" in answer]
    print(f"\nCONNECT flood to an unknown namespace: {len(invalid)} answered 'Invalid "
          f"namespace', {len(limited)} 'rate-limited', then closed: {closed}")
    assert len(invalid) == 3  # the burst
    assert limited and limited[0]["data"]["code"] == "rate-limited"
    assert limited[0]["data"]["retryAfter"] > 0
    assert closed and len(answers) < 20
    assert "rate-limited Socket.IO control packets" in session_server.log()
