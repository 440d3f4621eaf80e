"""Silent WebSocket connections held by their socket's event-loop watcher, under gunicorn.

Once a connection has read all its client sent, prroom's worker lets its greenlet go and
waits on the socket's watcher (prroom/transport/idle.py); what a user and an operator see
must not change: messages in both directions, gunicorn's connection count and graceful stop,
the access log, and a connection the server closes being gone soon after.
"""
from __future__ import annotations

import re
import socket
import time

import pytest

from tests.support import metrics, servers
from tests.support.metrics import value
from tests.support.raw import RawWebSocket, still_open
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TOKEN = "scrape"
held = servers.server_fixture(
    {"PRROOM_METRICS_PATH": "/metrics", "PRROOM_METRICS_TOKEN": TOKEN},
    variants={"loop": {}, "greenlet": {"PRROOM_IDLE_CONNECTIONS": "greenlet"}},
    doc="Metrics on; silent connections held by the loop (default) or by their greenlet.")


def loop_held(server) -> float:
    return value(metrics.scrape(server, TOKEN), "prroom_loop_held_connections")


def test_silent_clients_still_chat_in_both_directions(held, connect, pr_id):
    by_loop = "PRROOM_IDLE_CONNECTIONS" not in held.env
    before = loop_held(held)
    alice, bob, carol = connect.many(3, held)
    for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        client.join(pr_id, name)
    expected = before + 3 if by_loop else 0
    assert wait_until(lambda: loop_held(held) == expected, 10), loop_held(held)
    for round_ in range(3):  # each round wakes every connection, then it goes silent again
        for client, name in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
            client.say(pr_id, name, f"{name} {round_}")
            for each in (alice, bob, carol):
                assert each.expect("pr-room-message")["message"] == f"{name} {round_}"
    assert wait_until(lambda: loop_held(held) == expected, 10), loop_held(held)
    bob.close()  # a silent connection's end is seen: its slot and its count go
    assert wait_until(lambda: loop_held(held) == expected - (1 if by_loop else 0), 10)
    alice.say(pr_id, "alice", "after bob")
    assert carol.expect("pr-room-message")["message"] == "after bob"


def test_worker_connections_still_count_silent_connections(connect, pr_id):
    env = {"PRROOM_WORKER_CONNECTIONS": "3", "PRROOM_METRICS_PATH": "/metrics",
           "PRROOM_METRICS_TOKEN": TOKEN}
    with servers.running(env) as server:
        first, second = connect.many(2, server)
        first.join(pr_id, "first")
        second.join(pr_id, "second")
        assert wait_until(lambda: loop_held(server) == 2, 10)
        third = connect(server)  # the last slot
        third.join(pr_id, "third")
        waiting = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        waiting.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # gunicorn's pool is full (three silent connections): no answer while they stay
        assert wait_until(lambda: not still_open(waiting), 1.0) is False
        first.close()  # a slot frees: the waiting request is served
        waiting.setblocking(True)
        waiting.settimeout(10)
        assert waiting.recv(64).startswith(b"HTTP/1.1 200")
        waiting.close()
        second.say(pr_id, "second", "still here")
        assert third.expect("pr-room-message")["message"] == "still here"


def test_a_sessions_access_log_line_comes_at_its_end_with_its_duration(connect, pr_id):
    with servers.running({"PRROOM_ACCESS_LOG": "-"}) as server:
        client = connect(server, transports=["websocket"])
        client.join(pr_id, "sam")
        time.sleep(1.2)  # the session's length is what the line must show
        assert " 101 " not in server.log()
        client.close()
        line = wait_until(lambda: next((each for each in server.log().splitlines()
                                        if '" 101 ' in each), None), 10)
    assert line is not None and "sid=" not in line
    duration = re.search(r" (\d+)ms ", line)
    assert duration is not None and int(duration[1]) >= 1200, line


def test_a_client_that_ignores_the_servers_close_is_cut(pr_id):
    with servers.running({"PRROOM_PING_INTERVAL": "1", "PRROOM_PING_TIMEOUT": "1"}) as server:
        silent = RawWebSocket(server.url, answer_pings=False)
        assert silent.connect().startswith("0")
        started = time.monotonic()
        # no pong: the server closes the session, then the socket, though the client never
        # answers the close frame
        raw = silent.ws.sock
        assert raw is not None
        raw.setblocking(True)
        raw.settimeout(10)
        while raw.recv(4096):
            pass
        assert time.monotonic() - started < 8  # ping interval + timeout + the linger
        # the cut reached a connection the loop held: it ends cleanly, as a client's close
        assert wait_until(lambda: " 101 " in server.log(), 10), server.log()[-2000:]
        assert "Traceback" not in server.log(), server.log()[-3000:]
