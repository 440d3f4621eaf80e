"""Clustered mode's channel design: a room's traffic reaches only the processes hosting it.

Each prroom process subscribes to a room's Redis channel while it has members there (README,
Clustered mode).  These tests read Redis's own count of subscribers per channel, so "a
process with no member in a room receives none of its traffic" is checked where the traffic
would come from, and they drive real gunicorn processes with real clients.
"""
from __future__ import annotations

import itertools

import pytest
import requests
import socketio

from tests.support import servers
from tests.support.cluster import cluster_env, eventually, ready, room_channel, subscribers
from tests.support.redis_server import RedisProcess, SentinelProcess

pytestmark = pytest.mark.integration

CHANNEL = "rooms"
_rooms = itertools.count(9000)


@pytest.fixture(scope="module")
def pair(redis_server):
    """Two processes of one deployment, as production runs them."""
    procs = [servers.gunicorn(env=cluster_env(redis_server, CHANNEL)) for _ in range(2)]
    for proc in procs:
        proc.wait_ready()
    yield procs
    for proc in procs:
        proc.stop()


def test_a_process_is_subscribed_to_a_room_exactly_while_it_has_members_there(
        redis_server, pair, connect):
    room = next(_rooms)
    channel = room_channel(CHANNEL, room)
    assert subscribers(redis_server, channel) == 0  # nobody hosts it: nobody hears it
    ann = connect(pair[0])
    ann.join(room, "ann")
    # subscribed before the join was acked: no waiting here
    assert subscribers(redis_server, channel) == 1
    ben = connect(pair[1])
    ben.join(room, "ben")
    assert subscribers(redis_server, channel) == 2
    ben.say(room, "ben", "hello from the other process")
    assert ann.expect("pr-room-message")["message"] == "hello from the other process"
    assert ben.expect("pr-room-message")["message"] == "hello from the other process"

    ben.call("leave-pr-room", {"pullRequestId": room, "username": "ben"})
    eventually(lambda: subscribers(redis_server, channel) == 1,
               what="the second process unsubscribed after its last member left")
    ann.say(room, "ann", "only me now")  # still delivered on the hosting process
    assert ann.expect("pr-room-message")["message"] == "only me now"
    ann.close()
    eventually(lambda: subscribers(redis_server, channel) == 0,
               what="the first process unsubscribed after its last member disconnected")


def test_a_process_hears_none_of_the_busy_rooms_it_does_not_host(redis_server, pair,
                                                                 connect):
    busy = [next(_rooms) for _ in range(5)]
    members = []
    for room in busy:
        for name in ("a", "b"):
            client = connect(pair[0])
            client.join(room, name)
            members.append((client, room, name))
    lonely = connect(pair[1])  # the other process hosts only an unrelated room
    lonely.join(next(_rooms), "lonely")
    for client, room, name in members:
        client.say(room, name, "busy")
    for room in busy:
        assert subscribers(redis_server, room_channel(CHANNEL, room)) == 1
    # the deployment channel (shutdown-wide traffic, stock emitters) has both processes
    assert subscribers(redis_server, f"prroom:{CHANNEL}", sharded=False) == 2


def test_a_new_joiner_gets_every_message_sent_after_its_join_was_acked(pair, connect):
    sender = connect(pair[0])
    for attempt in range(15):  # each room is new to the joiner's process
        room = next(_rooms)
        sender.join(room, "sender")
        joiner = connect(pair[1])
        joiner.join(room, "joiner")
        sender.say(room, "sender", f"right after the join {attempt}")
        assert joiner.expect("pr-room-message")["message"] == f"right after the join {attempt}"
        joiner.close()


def test_a_stock_python_socketio_emitter_still_reaches_rooms_on_every_process(
        redis_server, pair, connect):
    room = next(_rooms)
    members = [connect(pair[0]), connect(pair[1])]
    for number, member in enumerate(members):
        member.join(room, f"m{number}")
    # e.g. a host app's worker using python-socketio's own write-only Redis manager
    emitter = socketio.RedisManager(redis_server.url, channel=f"prroom:{CHANNEL}",
                                    write_only=True)
    emitter.emit("pr-room-message", {"pullRequestId": room, "username": "bot",
                                     "message": "from a stock emitter", "id": "x",
                                     "sentAt": 0}, namespace="/", room=f"pr:{room}")
    for member in members:
        assert member.expect("pr-room-message")["message"] == "from a stock emitter"


def test_after_a_redis_restart_every_hosted_room_is_resubscribed_before_ready(connect):
    redis_server = RedisProcess()
    procs = [servers.gunicorn(env=cluster_env(redis_server, "restart")) for _ in range(2)]
    try:
        for proc in procs:
            proc.wait_ready()
        shared, only_second = next(_rooms), next(_rooms)
        near, far, far_alone = connect(procs[0]), connect(procs[1]), connect(procs[1])
        near.join(shared, "near")
        far.join(shared, "far")
        far_alone.join(only_second, "alone")

        redis_server.stop()
        eventually(lambda: not ready(procs[0]) and not ready(procs[1]),
                   what="readiness reports the lost queue")
        redis_server.start()  # empty: it remembers no subscription
        eventually(lambda: ready(procs[0]), timeout=10, what="first process ready again")
        assert subscribers(redis_server, room_channel("restart", shared)) >= 1
        eventually(lambda: ready(procs[1]), timeout=10, what="second process ready again")
        # ready means resubscribed, on every room the process hosts
        assert subscribers(redis_server, room_channel("restart", shared)) == 2
        assert subscribers(redis_server, room_channel("restart", only_second)) == 1

        for sender, name, receiver, text in ((near, "near", far, "after the restart"),
                                             (far, "far", near, "and back")):  # both ways
            sender.say(shared, name, text)
            assert sender.expect("pr-room-message")["message"] == text
            assert receiver.expect("pr-room-message")["message"] == text
        assert "subscribed to" in procs[0].log()  # the log says it resubscribed
    finally:
        for proc in procs:
            proc.stop()
        redis_server.stop()


def test_plain_pubsub_carries_rooms_where_sharded_is_not_wanted(connect):
    redis_server = RedisProcess()
    env = cluster_env(redis_server, "plain", PRROOM_QUEUE_PUBSUB="plain")
    procs = [servers.gunicorn(env=env) for _ in range(2)]
    try:
        for proc in procs:
            proc.wait_ready()
        room = next(_rooms)
        a, b = connect(procs[0]), connect(procs[1])
        a.join(room, "a")
        b.join(room, "b")
        channel = room_channel("plain", room)
        assert subscribers(redis_server, channel, sharded=False) == 2
        assert subscribers(redis_server, channel, sharded=True) == 0
        a.say(room, "a", "plain")
        assert b.expect("pr-room-message")["message"] == "plain"
        assert requests.get(procs[0].url + "/readyz", timeout=5).status_code == 200
    finally:
        for proc in procs:
            proc.stop()
        redis_server.stop()


def test_a_sentinel_url_finds_the_master_for_messages_and_presence(redis_server, connect):
    sentinel = SentinelProcess(redis_server)
    env = cluster_env(redis_server, "sentinel", PRROOM_MESSAGE_QUEUE=sentinel.url)
    procs = [servers.gunicorn(env=env) for _ in range(2)]
    try:
        for proc in procs:
            proc.wait_ready()
        room = next(_rooms)
        a, b = connect(procs[0], presence=True), connect(procs[1], presence=True)
        a.join(room, "a")
        assert a.expect("pr-room-members")["members"] == ["a"]
        b.join(room, "b")
        assert b.expect("pr-room-members")["members"] == ["a", "b"]  # presence in Redis
        assert a.expect("pr-room-user-joined")["username"] == "b"
        b.say(room, "b", "through the master Sentinel named")
        assert a.expect("pr-room-message")["message"] == "through the master Sentinel named"
        assert subscribers(redis_server, room_channel("sentinel", room)) == 2
        assert all(ready(proc) for proc in procs)
    finally:
        connect.close()  # while the processes still answer
        for proc in procs:
            proc.stop()
        sentinel.stop()
