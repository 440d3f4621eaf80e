"""Cheap denial of service, closed (issue #16): stalled requests, idle keep-alives, sessions
that never connect, log flooding.

Each test holds a few hundred loopback connections or sessions the way an attacker would, and
checks two things a user would notice: the server lets go of them within its timeouts, and a
real client connects and chats meanwhile.  Everything is bounded in count and time; figures
are printed (``pytest -s``) next to the bounds they are checked against.  The server runs as
production does (``gunicorn -c gunicorn.conf.py wsgi:app``) with short timeouts so the tests
wait seconds, not the defaults' minutes.
"""
from __future__ import annotations

import socket
import time
from typing import Iterator, List

import pytest
import requests

from tests.support import servers
from tests.support.clients import RoomClient
from tests.support.raw import PollingSession, RawWebSocket, still_open
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

HEADER_TIMEOUT = 2      # PRROOM_HEADER_TIMEOUT
KEEPALIVE = 1           # gunicorn's --keep-alive
CONNECT_TIMEOUT = 2     # PRROOM_CONNECT_TIMEOUT
# Timeouts are checked at most a second late (the connect-timeout sweep runs every second at
# most); the machine is shared with other test runs.
SLACK = 4

STALLED = 300
NEVER_CONNECTED = 100


@pytest.fixture(scope="module")
def server() -> Iterator[servers.ServerProcess]:
    """prroom with short header, keep-alive and connect timeouts."""
    with servers.running(env={"PRROOM_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
                              "PRROOM_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT)},
                         extra_args=["--keep-alive", str(KEEPALIVE)]) as proc:
        yield proc


@pytest.fixture
def sockets() -> Iterator[List[socket.socket]]:
    """TCP connections a test opens; all closed after it."""
    opened: List[socket.socket] = []
    yield opened
    for conn in opened:
        conn.close()


def chat_works(server: servers.ServerProcess, pull_request_id: int) -> float:
    """A real client connects, joins and hears its own message; returns how long it took."""
    started = time.monotonic()
    client = RoomClient(server.url)
    try:
        client.join(pull_request_id, "real")
        client.say(pull_request_id, "real", "still here")
        assert client.expect("pr-room-message")["message"] == "still here"
    finally:
        client.close()
    return time.monotonic() - started


# -- slow requests ------------------------------------------------------------------------

PARTIAL_REQUESTS = [
    b"GET /socket.io/?EIO=4&transport=polling HTT",                     # half a request line
    b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n",  # headers never end
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ",                     # one header, half
]


@pytest.mark.stress  # asserts the deadline, within a bound
def test_stalled_requests_are_cut_and_real_clients_still_connect(server, sockets, pr_id):
    for number in range(STALLED):
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        conn.sendall(PARTIAL_REQUESTS[number % len(PARTIAL_REQUESTS)])
        sockets.append(conn)
    opened_at = time.monotonic()
    took = chat_works(server, pr_id)  # during the attack
    # nothing announces "the server closed every one of these": polled
    cut = wait_until(lambda: not any(still_open(conn) for conn in sockets), HEADER_TIMEOUT + SLACK)
    elapsed = time.monotonic() - opened_at

    # a slowloris proper: never silent for long, never done
    drip = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sockets.append(drip)
    dripped, drip_cut = 0, False
    try:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"y" * 400:
            drip.sendall(bytes([byte]))
            dripped += 1
            time.sleep(0.05)  # the attacker's pace: one byte every 50 ms
            if dripped * 0.05 > HEADER_TIMEOUT + SLACK:
                break
    except OSError:
        drip_cut = True
    drip_cut = drip_cut or not still_open(drip)
    print(f"\nslowloris: {STALLED} stalled requests all cut: {cut}, {elapsed:.1f} s after they "
          f"were opened (header timeout {HEADER_TIMEOUT} s); a real client connected, joined "
          f"and chatted in {took * 1000:.0f} ms meanwhile; a one-byte-per-50-ms drip was cut "
          f"after {dripped} bytes")
    assert cut, f"{sum(still_open(conn) for conn in sockets[:STALLED])} still held"
    assert elapsed < HEADER_TIMEOUT + SLACK
    assert drip_cut and dripped * 0.05 < HEADER_TIMEOUT + SLACK
    assert took < 5
    assert chat_works(server, pr_id) < 5  # and after it


def test_an_idle_kept_alive_connection_is_closed(server, sockets):
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sockets.append(conn)
    for _ in range(2):  # a second request within the keep-alive timeout is served
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            response += conn.recv(4096)
        assert response.startswith(b"HTTP/1.1 200")
    answered_at = time.monotonic()
    conn.settimeout(KEEPALIVE + SLACK)
    assert conn.recv(1) == b""  # the server closes it
    idle = time.monotonic() - answered_at
    print(f"\nkeep-alive: an idle connection was closed after {idle:.1f} s "
          f"(keep-alive {KEEPALIVE} s)")
    assert KEEPALIVE * 0.8 < idle < KEEPALIVE + SLACK


def test_a_slow_long_poll_or_websocket_is_not_a_stalled_request(server):
    # the header timeout is about reading requests: a poll that waits for packets, and a
    # WebSocket that stays quiet, are served longer than it
    client = RoomClient(server.url, transports=["polling"])
    raw = RawWebSocket(server.url)
    try:
        assert raw.connect().startswith("0{")
        deadline = time.monotonic() + HEADER_TIMEOUT + 1
        while time.monotonic() < deadline:  # quiet, but answering pings (25 s apart)
            assert not raw.closed_within(0.5)
        assert client.call("stop-typing", {"pullRequestId": 1, "username": "x"})["error"][
            "code"] == "not-a-member"
        assert client.transport == "polling"
    finally:
        raw.close()
        client.close()


# -- sessions that never connect ------------------------------------------------------------

def gone(session: PollingSession) -> bool:
    """Whether a long-polling session is closed rather than waiting for packets.

    Closed already: the poll is a 400. Closed while this poll waits: it carries the CLOSE
    packet ("1") -- how Engine.IO ends a polling session that is being polled.
    """
    try:
        response = session.get(timeout=CONNECT_TIMEOUT + SLACK)
    except requests.Timeout:
        return False
    return response.status_code == 400 or (
        response.status_code == 200 and "1" in response.text.split("\x1e"))


@pytest.mark.stress  # asserts the deadline, within a bound
def test_sessions_that_never_send_a_connect_are_closed(server, pr_id):
    raws = [RawWebSocket(server.url) for _ in range(NEVER_CONNECTED // 2)]
    polls = [PollingSession(server.url) for _ in range(NEVER_CONNECTED - len(raws))]
    keeper = RawWebSocket(server.url)  # this one connects: it is kept
    try:
        assert keeper.connect().startswith("0{")
        opened_at = time.monotonic()
        took = chat_works(server, pr_id)
        websockets_closed = sum(raw.closed_within(CONNECT_TIMEOUT + SLACK) for raw in raws)
        elapsed = time.monotonic() - opened_at
        # Polled only now, once each: a poll of a live session would wait for its next ping,
        # and a second one would close it (a duplicate poll) -- not what is tested here.
        polls_gone = all(gone(poll) for poll in polls)
        kept = not keeper.closed_within(0.5)
        print(f"\nconnect timeout: {websockets_closed} of {len(raws)} WebSocket and "
              f"{len(polls) if polls_gone else 'not all'} of {len(polls)} polling sessions "
              f"without a CONNECT closed within {elapsed:.1f} s (timeout {CONNECT_TIMEOUT} s); "
              f"a connected session kept: {kept}; a real client chatted in "
              f"{took * 1000:.0f} ms meanwhile")
        assert websockets_closed == len(raws) and polls_gone
        assert elapsed < CONNECT_TIMEOUT + 2 * SLACK
        assert kept
        assert "sent no Socket.IO CONNECT" in server.log()
    finally:
        for raw in [*raws, keeper]:
            raw.close()


# -- log flooding ---------------------------------------------------------------------------

MALFORMED_POSTS = 50


def test_malformed_polls_cost_one_log_line_each(server):
    before = len(server.log().splitlines())
    sessions = [PollingSession(server.url) for _ in range(MALFORMED_POSTS)]
    statuses = [session.post("abc").status_code for session in sessions]
    gone = [session.get().status_code for session in sessions]
    new_lines = [line for line in server.log().splitlines()[before:]
                 if '"GET ' not in line and '"POST ' not in line]  # not the access log
    print(f"\nlog flooding: {MALFORMED_POSTS} malformed polls -> {len(new_lines)} error-log "
          f"lines")
    assert statuses == [400] * MALFORMED_POSTS and gone == [400] * MALFORMED_POSTS
    # one line per request, plus python-engineio's once-per-server "Invalid session"
    assert len(new_lines) <= MALFORMED_POSTS + 1, new_lines[:5]
    assert "Traceback" not in server.log()
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
