"""Connection state recovery across a Redis cluster: a client comes back to another process.

Two gunicorn processes share one real Redis (``PRROOM_MESSAGE_QUEUE``).  alice reaches the
cluster through a :class:`TcpProxy` standing in for the load balancer: cutting it is a
blip, and pointing it at the other process is the load balancer moving her (or her process
going away in a rolling deploy).  The npm socket.io-client recovers on its own.
"""
from __future__ import annotations

import itertools
from typing import Iterator, Tuple

import pytest
import redis

from tests.support import servers
from tests.support.cluster import cluster_env, eventually, ready
from tests.support.node import NodeDriver
from tests.support.proxy import TcpProxy
from tests.support.raw import RawWebSocket
from tests.support.redis_server import RedisProcess

SEND = "send-message-to-pr-room"
MESSAGE = "pr-room-message"
RECOVERY = {"PRROOM_RECOVERY_WINDOW": "30", "PRROOM_PRESENCE_GRACE": "3",
            "PRROOM_RECOVERY_BUFFER": "50"}

_rooms = itertools.count(9600)


@pytest.fixture(scope="module")
def cluster(redis_server: RedisProcess
            ) -> Iterator[Tuple[servers.ServerProcess, servers.ServerProcess]]:
    env = cluster_env(redis_server, "recovery", **RECOVERY)
    with servers.running(env=env) as first, servers.running(env=env) as second:
        yield first, second


def _recovered(driver: NodeDriver, name: str) -> bool:
    return driver.expect(lambda r: r["name"] == name and r["ev"] == "connect")["recovered"]


def test_a_client_moved_to_the_other_process_gets_what_it_missed(cluster, driver) -> None:
    first, second = cluster
    room = next(_rooms)
    proxy = TcpProxy(first.port)
    try:
        driver.connect("alice", proxy.url)
        driver.join("alice", room)
        driver.connect("bob", second.url)
        driver.join("bob", room)
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == "pr-room-user-joined")
        assert "warning" not in driver.say("bob", room, "before")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE)
        proxy.cut()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "disconnect")
        for n in range(3):
            assert "warning" not in driver.say("bob", room, f"missed {n}")
        driver.send("emit", name="alice", event=SEND,
                    payload={"pullRequestId": room, "username": "alice",
                             "message": "written offline"})
        proxy.target_port = second.port  # the load balancer sends her to the other process
        proxy.reopen()
        assert _recovered(driver, "alice") is True
        driver.expect(lambda r: r["name"] == "bob" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "written offline")
        assert "warning" not in driver.say("bob", room, "after")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "after")
        assert driver.texts("alice") == ["missed 0", "missed 1", "missed 2",
                                           "written offline"]
        # no flicker: within the grace nobody heard alice leave or come back
        assert not driver.events("bob", "pr-room-user-left")
        assert not driver.events("bob", "pr-room-user-joined")
        # her first process's grace passes without a word either (she is back)
        driver.call("bob", "typing", {"pullRequestId": room, "username": "bob"})
    finally:
        proxy.close()


def test_a_stolen_pid_gets_nothing_on_any_process(cluster, driver) -> None:
    first, second = cluster
    room = next(_rooms)
    proxy = TcpProxy(first.port)
    try:
        driver.connect("alice", proxy.url)
        driver.join("alice", room)
        driver.connect("bob", first.url)
        driver.join("bob", room)
        assert "warning" not in driver.say("bob", room, "secret")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE)
        proxy.cut()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "disconnect")
        driver.send("snapshot", name="alice")
        assert driver.expect(lambda r: r["ev"] == "snapshot")["has_pid"]
        assert "warning" not in driver.say("bob", room, "while away")
        proxy.reopen()
        assert _recovered(driver, "alice") is True
        # mallory presents what alice presented, to the other process: a fresh session
        driver.send("steal", name="mallory", victim="alice", url=second.url)
        assert _recovered(driver, "mallory") is False
        assert "warning" not in driver.say("bob", room, "after")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "after")
        assert driver.texts("mallory") == []
        assert driver.texts("alice") == ["while away"]
    finally:
        proxy.close()


def test_sessions_and_packets_in_redis_are_bounded_and_expire(
        cluster, driver, redis_server: RedisProcess) -> None:
    first, _ = cluster
    room = next(_rooms)
    driver.connect("bob", first.url)
    driver.join("bob", room)
    for n in range(60):  # more than PRROOM_RECOVERY_BUFFER (50)
        driver.send("emit", name="bob", event=SEND,
                    payload={"pullRequestId": room, "username": "bob", "message": str(n)})
    assert "warning" not in driver.say("bob", room, "last")
    client = redis.Redis.from_url(redis_server.url)
    try:
        stream = f"prroom:recovery:recovery:room:{room}"
        assert client.xlen(stream) == 50
        assert 0 < client.pttl(stream) <= (30 + 60) * 1000  # the window and a margin
        # the pid never reaches Redis: sessions are stored under its hash
        names = [key.split(b":session:")[1].split(b":")[0]
                 for key in client.scan_iter("prroom:recovery:recovery:session:*")]
        assert all(len(name) == 64 and int(name, 16) >= 0 for name in names)
    finally:
        client.close()


def test_a_rolling_restart_loses_nothing(redis_server: RedisProcess, driver) -> None:
    # alice's process is SIGTERMed while carol, on the other one, keeps talking; the load
    # balancer sends alice to the survivor, where she gets every message once, in order
    env = cluster_env(redis_server, "rolling", **RECOVERY)
    room = next(_rooms)
    with servers.running(env=env) as survivor:
        leaving = servers.gunicorn(env=env).wait_ready()
        proxy = TcpProxy(leaving.port)
        try:
            driver.connect("alice", proxy.url)
            driver.join("alice", room)
            driver.connect("carol", survivor.url)
            driver.join("carol", room)
            for n in range(5):
                assert "warning" not in driver.say("carol", room, f"m{n}")
            proxy.target_port = survivor.port
            for n in range(5, 10):  # in flight while alice's process stops
                driver.send("emit", name="carol", event=SEND,
                            payload={"pullRequestId": room, "username": "carol",
                                     "message": f"m{n}"})
            leaving.stop()  # SIGTERM: goodbye, transports closed
            for n in range(10, 15):
                assert "warning" not in driver.say("carol", room, f"m{n}")
            assert _recovered(driver, "alice") is True
            assert "warning" not in driver.say("carol", room, "after")
            driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                          and r["args"][0]["message"] == "after")
            assert driver.texts("alice") == [f"m{n}" for n in range(15)]
            assert not driver.events("carol", "pr-room-user-left")
        finally:
            proxy.close()
            leaving.stop()


def test_after_a_restart_a_client_that_never_returns_is_announced_left_once(
        redis_server: RedisProcess, driver) -> None:
    # the stopped process cannot finish alice's presence grace: a survivor does, once
    env = cluster_env(redis_server, "handoff", **RECOVERY)
    room = next(_rooms)
    with servers.running(env=env) as survivor, servers.running(env=env) as other:
        leaving = servers.gunicorn(env=env).wait_ready()
        proxy = TcpProxy(leaving.port)
        try:
            driver.connect("alice", proxy.url)
            driver.join("alice", room)
            driver.connect("carol", survivor.url)
            driver.join("carol", room)
            driver.connect("dave", other.url)
            driver.join("dave", room)
            proxy.cut()  # alice's network is gone for good
            leaving.stop()
            left = driver.expect(lambda r: r["name"] == "carol"
                                 and r.get("event") == "pr-room-user-left", timeout=15)
            assert left["args"][0]["username"] == "alice"
            driver.expect(lambda r: r["name"] == "dave" and r.get("event") == "pr-room-user-left")
            # the roster agrees: a newcomer is not told alice is there
            driver.connect("erin", other.url)
            driver.join("erin", room)
            members = driver.expect(lambda r: r["name"] == "erin"
                                    and r.get("event") == "pr-room-members")
            assert sorted(members["args"][0]["members"]) == ["carol", "dave", "erin"]
            assert "warning" not in driver.say("carol", room, "is alice gone?")
            driver.expect(lambda r: r["name"] == "dave" and r.get("event") == MESSAGE)
            assert len(driver.events("carol", "pr-room-user-left")) == 0  # said once only
        finally:
            proxy.close()
            leaving.stop()


def test_a_flood_of_lost_connections_keeps_redis_bounded(redis_server: RedisProcess) -> None:
    env = cluster_env(redis_server, "flood", **RECOVERY, PRROOM_RECOVERY_SESSIONS="20")
    client = redis.Redis.from_url(redis_server.url)
    try:
        with servers.running(env=env) as server:
            for _ in range(60):
                raw = RawWebSocket(server.url)
                assert '"pid"' in raw.connect()
                raw.close()

            def stored() -> int:
                return len(list(client.scan_iter("prroom:flood:recovery:session:*")))
            eventually(lambda: stored() == 20, what="only the newest 20 sessions are kept")
            assert stored() == 20
    finally:
        client.close()


def test_a_process_cut_off_from_redis_catches_up_from_the_streams(
        redis_server: RedisProcess, driver) -> None:
    # process A reaches Redis through a proxy that is cut for a while (a network blip
    # between a process and Redis); what B's members said meanwhile reaches A's members
    # once A is back, in order, once, and B's acks never warned
    redis_link = TcpProxy(redis_server.port)
    room = next(_rooms)
    base = cluster_env(redis_server, "blip", **RECOVERY)
    try:
        with servers.running(env={**base, "PRROOM_MESSAGE_QUEUE":
                                  f"redis://127.0.0.1:{redis_link.port}/0"}) as first, \
                servers.running(env=base) as second:
            driver.connect("alice", first.url)
            driver.join("alice", room)
            driver.connect("bob", second.url)
            driver.join("bob", room)
            assert "warning" not in driver.say("bob", room, "before")
            driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE)
            redis_link.cut()
            eventually(lambda: not ready(first), what="A sees Redis gone")
            for n in range(5):
                assert "warning" not in driver.say("bob", room, f"during {n}")
            redis_link.reopen()
            eventually(lambda: ready(first), timeout=10, what="A back on Redis")
            assert "warning" not in driver.say("bob", room, "after")
            driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                          and r["args"][0]["message"] == "after")
            assert driver.texts("alice") == [f"during {n}" for n in range(5)]
            assert "published while this process was not subscribed" in first.log()
    finally:
        redis_link.close()


def _alice_on_both(cluster, driver: NodeDriver) -> int:
    """A new room with bob and alice on the first process, alice again on the second."""
    first, second = cluster
    room = next(_rooms)
    for name, server in (("bob", first), ("alice", first), ("alice-again", second)):
        driver.connect(name, server.url)
        reply = driver.call(name, "join-pr-room", {"pullRequestId": room, "username": "alice"
                                                   if name.startswith("alice") else name})
        assert reply["ok"], reply
    return room


def test_a_retried_send_reaching_the_other_process_is_delivered_once(cluster, driver) -> None:
    # socket.io-client retries a send whose ack it lost; after a reconnect the retry may
    # reach the other process: same clientMessageId, same ack, one broadcast
    room = _alice_on_both(cluster, driver)
    payload = {"pullRequestId": room, "username": "alice", "message": "merge it",
               "clientMessageId": "c-1"}
    sent = driver.call("alice", SEND, payload)
    again = driver.call("alice-again", SEND, payload)
    assert sent["ok"] and again == sent  # the original ack: same id and sentAt
    assert "warning" not in driver.say("bob", room, "done")
    driver.expect(lambda r: r["name"] == "bob" and r.get("event") == MESSAGE
                  and r["args"][0]["message"] == "done")
    assert driver.texts("bob") == ["merge it"]


def test_a_retry_racing_its_first_send_on_the_other_process_is_delivered_once(
        cluster, driver) -> None:
    # A rolling restart: the first send is still in flight on the stopping process when
    # the client's retry reaches the other one.  Whichever is numbered first is the send;
    # the other gets its ack and publishes nothing.
    room = _alice_on_both(cluster, driver)
    for n in range(10):
        payload = {"pullRequestId": room, "username": "alice", "message": f"race {n}",
                   "clientMessageId": f"race-{n}"}
        for seq, name in ((2 * n, "alice"), (2 * n + 1, "alice-again")):
            driver.send("emit", name=name, event=SEND, ack=True, seq=seq, payload=payload)
        acks = [driver.expect(lambda r, s=seq: r["ev"] == "ack" and r.get("seq") == s)
                for seq in (2 * n, 2 * n + 1)]
        assert acks[0]["reply"]["ok"], acks
        assert acks[0]["reply"] == acks[1]["reply"]  # one id, one sentAt
    assert "warning" not in driver.say("bob", room, "done")
    driver.expect(lambda r: r["name"] == "bob" and r.get("event") == MESSAGE
                  and r["args"][0]["message"] == "done")
    assert driver.texts("bob") == [f"race {n}" for n in range(10)]
