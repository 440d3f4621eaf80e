"""Clustered mode on a Redis Cluster (``PRROOM_MESSAGE_QUEUE=redis+cluster://...``).

A private three-master Redis Cluster and two gunicorn processes, as production runs them.
Everything the deployment keeps in Redis is named in one hash tag (README, Clustered mode),
so these tests also look at the cluster itself: which node holds the keys and serves the
room channels, and what happens when that node restarts.
"""
from __future__ import annotations

import itertools
from typing import Iterator, List

import pytest

from prroom import post_message
from tests.support import servers
from tests.support.cluster import cluster_env, eventually, ready
from tests.support.node import NodeDriver
from tests.support.proxy import TcpProxy
from tests.support.redis_server import RedisClusterProcess

pytestmark = pytest.mark.integration

CHANNEL = "sharded"
TAG = "{" + CHANNEL + "}"
RECOVERY = {"PRROOM_RECOVERY_WINDOW": "30", "PRROOM_PRESENCE_GRACE": "3"}
_rooms = itertools.count(9800)


def room_channel(pull_request_id: int) -> str:
    """A room's channel on a Redis Cluster: inside the deployment's hash tag."""
    return f"prroom:{TAG}:pr:{pull_request_id}"


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterProcess]:
    cluster = RedisClusterProcess()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def pair(redis_cluster) -> Iterator[List[servers.ServerProcess]]:
    env = cluster_env(redis_cluster, CHANNEL, **RECOVERY)
    procs = [servers.gunicorn(env=env) for _ in range(2)]
    try:
        for proc in procs:
            proc.wait_ready()
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def connected(connect, proc, presence: bool = False):
    """A Python client of ``proc``, past the session event recovery sends first."""
    client = connect(proc, presence=presence)
    assert client.expect("pr-room-session")["recovered"] is False
    return client


def shard_subscribers(cluster: RedisClusterProcess, channel: str) -> int:
    """Subscribers of a sharded channel, as the node serving its slot counts them."""
    client = cluster.client(cluster.owner_of(channel))
    return int(client.execute_command("PUBSUB", "SHARDNUMSUB", channel)[1])


def test_messages_and_presence_cross_processes_through_the_cluster(pair, connect,
                                                                   redis_cluster):
    room = next(_rooms)
    ann, ben = connected(connect, pair[0], True), connected(connect, pair[1], True)
    ann.join(room, "ann")
    assert ann.expect("pr-room-members")["members"] == ["ann"]
    ben.join(room, "ben")
    assert ben.expect("pr-room-members")["members"] == ["ann", "ben"]  # presence in Redis
    assert ann.expect("pr-room-user-joined")["username"] == "ben"
    assert shard_subscribers(redis_cluster, room_channel(room)) == 2
    for n in range(5):
        ben.say(room, "ben", f"m{n}")
    for member in (ann, ben):  # every member once, in the sender's order
        assert [member.expect("pr-room-message")["message"] for _ in range(5)] == [
            f"m{n}" for n in range(5)]
    ben.close()
    assert ann.expect("pr-room-user-left", timeout=10)["username"] == "ben"
    eventually(lambda: shard_subscribers(redis_cluster, room_channel(room)) == 1,
               what="the process whose last member left unsubscribed")
    assert all(ready(proc) for proc in pair)


def test_a_post_from_outside_reaches_the_room(pair, connect, redis_cluster):
    room = next(_rooms)
    member = connected(connect, pair[1])
    member.join(room, "reader")
    post_message(room, "bot", "posted through the cluster",
                 message_queue=redis_cluster.url, channel=CHANNEL)
    assert member.expect("pr-room-message")["message"] == "posted through the cluster"


def test_every_key_of_the_deployment_is_in_one_slot_on_one_node(pair, connect,
                                                               redis_cluster):
    room = next(_rooms)
    member = connected(connect, pair[0])
    member.join(room, "keys")
    member.say(room, "keys", "kept for recovery")
    member.expect("pr-room-message")
    owner = redis_cluster.owner_of(TAG)
    keys = {node.port: [key.decode() for key in redis_cluster.client(node).keys("prroom:*")]
            for node in redis_cluster.nodes}
    assert keys[owner.port], "the owner holds the deployment's presence and streams"
    assert all(TAG in key for key in keys[owner.port]), keys[owner.port]
    assert not any(found for port, found in keys.items() if port != owner.port), keys
    assert redis_cluster.owner_of(room_channel(room)) is owner


def test_a_client_moved_to_the_other_process_gets_what_it_missed(pair) -> None:
    room = next(_rooms)
    driver = NodeDriver()
    proxy = TcpProxy(pair[0].port)
    try:
        driver.send("connect", name="alice", url=proxy.url)
        assert not driver.expect(lambda r: r["name"] == "alice"
                                 and r["ev"] == "connect")["recovered"]
        driver.send("connect", name="bob", url=pair[1].url)
        driver.expect(lambda r: r["name"] == "bob" and r["ev"] == "connect")
        for name in ("alice", "bob"):
            reply = driver.call(name, "join-pr-room", {"pullRequestId": room,
                                                       "username": name})
            assert reply["ok"], reply
        proxy.cut()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "disconnect")
        for n in range(3):
            reply = driver.call("bob", "send-message-to-pr-room", {
                "pullRequestId": room, "username": "bob", "message": f"missed {n}"})
            assert reply["ok"] and "warning" not in reply, reply
        proxy.target_port = pair[1].port
        proxy.reopen()
        assert driver.expect(lambda r: r["name"] == "alice"
                             and r["ev"] == "connect")["recovered"] is True
        eventually(lambda: len(driver.events("alice", "pr-room-message")) >= 3,
                   what="alice got what she missed")
        assert [args[0]["message"] for args in driver.events("alice", "pr-room-message")] == [
            "missed 0", "missed 1", "missed 2"]
    finally:
        proxy.close()
        driver.close()


def subscriptions_on(cluster: RedisClusterProcess, node) -> str:
    """What the node says of its clients' subscriptions (``sub``/``ssub`` counts), for a
    failure message."""
    clients = cluster.client(node).client_list()
    return "; ".join(f"{c['addr']} sub={c.get('sub')} ssub={c.get('ssub')} cmd={c.get('cmd')}"
                     for c in clients)


def test_after_the_owning_node_restarts_rooms_are_resubscribed_before_ready(connect):
    cluster = RedisClusterProcess()
    procs = [servers.gunicorn(env=cluster_env(cluster, "restart"))  # type: ignore[arg-type]
             for _ in range(2)]
    try:
        for proc in procs:
            proc.wait_ready()
        room = next(_rooms)
        channel = f"prroom:{{restart}}:pr:{room}"
        near, far = connect(procs[0]), connect(procs[1])
        near.join(room, "near")
        far.join(room, "far")
        owner = cluster.owner_of(channel)

        owner.stop()
        eventually(lambda: not ready(procs[0]) and not ready(procs[1]), timeout=10,
                   what="readiness reports the lost node")
        owner.start()  # it keeps its slots (its cluster config) but no subscription

        def settled() -> bool:
            # Readiness asked before and after counting: a process that says ready on both
            # sides of the count must be among the subscribers (one that lost its
            # connection again in between says not ready, and is waited for).
            before = all(ready(proc) for proc in procs)
            count = shard_subscribers(cluster, channel)
            after = all(ready(proc) for proc in procs)
            assert count == 2 or not (before and after), (
                f"both processes ready but {count} subscribed to {channel}: "
                f"{subscriptions_on(cluster, owner)}\n"
                + "\n".join(proc.log()[-3000:] for proc in procs))
            return before and after
        eventually(settled, timeout=20, what="both processes ready again")
        near.say(room, "near", "after the restart")
        assert far.expect("pr-room-message")["message"] == "after the restart"
    finally:
        connect.close()
        for proc in procs:
            proc.stop()
        cluster.stop()


def test_a_process_stopped_gracefully_leaves_no_trace_in_the_cluster(connect, redis_cluster):
    """SIGTERM takes the process out of the deployment's presence at once (its liveness
    key and its entry among the servers), instead of leaving them to expire."""
    proc = servers.gunicorn(env=cluster_env(redis_cluster, "leaving"))
    owner = redis_cluster.client(redis_cluster.owner_of("{leaving}"))
    try:
        proc.wait_ready()
        member = connect(proc, presence=True)
        member.join(next(_rooms), "leaver")
        member.expect("pr-room-members")
        assert owner.keys("prroom:{leaving}:alive:*"), "registered while running"
        assert owner.smembers("prroom:{leaving}:servers")
    finally:
        proc.stop()
    assert owner.keys("prroom:{leaving}:alive:*") == []
    assert owner.smembers("prroom:{leaving}:servers") == set()
    assert "could not deregister" not in proc.log()
