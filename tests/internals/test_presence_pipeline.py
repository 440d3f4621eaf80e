"""Cluster presence (core/presence.py) on a real Redis, through a redis-py client and through
the publisher's pipelined connection, which a clustered server hands it.

Two :class:`RedisPresence` objects on one Redis stand for two processes of a cluster.
"""
from __future__ import annotations

import inspect
import threading
from typing import Any, Callable, List

import pytest
import redis

from prroom.cluster.channels import QueueUnavailable, pubsub_mode
from prroom.cluster.presence import RedisPresence
from prroom.cluster.publisher import Publisher

# the publisher's connection speaks RESP2, as the clustered manager's does (redis-py 4 has
# no protocol option: RESP2 is all it speaks)
_BASE = getattr(redis.connection, "AbstractConnection", redis.connection.Connection)
RESP2 = {"protocol": 2} if "protocol" in inspect.signature(_BASE.__init__).parameters else {}


class Recorded:
    """The publisher's ``call``, recording each command; ``fail`` makes the next ones fail
    as a batch that did not reach Redis does."""

    def __init__(self, url: str) -> None:
        client = redis.Redis.from_url(url, **RESP2)
        self.publisher = Publisher(client.connection_pool.make_connection, self._start,
                                   pubsub_mode("auto"))
        self.commands: List[tuple] = []
        self.fail = 0

    @staticmethod
    def _start(target: Callable[[], None]) -> None:
        threading.Thread(target=target, daemon=True).start()

    def __call__(self, *command: Any) -> Any:
        self.commands.append(command)
        if self.fail:
            self.fail -= 1
            return _Failed()
        return self.publisher.call(*command)


class _Failed:
    def wait(self) -> object:
        raise QueueUnavailable("message queue unreachable: connection reset")


def two_processes(url: str, pipelined: bool) -> list:
    """Two presences on a flushed Redis; when ``pipelined``, each sends through its own
    publisher (``.sent``)."""
    redis.Redis.from_url(url).flushall()
    made = []
    for _ in range(2):
        presence = RedisPresence(url, "test", ttl=30)
        presence.sent = None  # type: ignore[attr-defined]
        if pipelined:
            presence.sent = Recorded(url)  # type: ignore[attr-defined]
            presence.send_via(presence.sent)  # type: ignore[attr-defined]
        made.append(presence)
    return made


@pytest.fixture(params=["client", "pipeline"])
def cluster(request, redis_server):
    return two_processes(redis_server.url, request.param == "pipeline")


@pytest.fixture
def pipelined(redis_server):
    return two_processes(redis_server.url, True)


def test_presence_counts_users_across_processes(cluster):
    one, two = cluster
    assert one.join(7, "ann") == (True, ["ann"])
    assert two.join(7, "bob") == (True, ["ann", "bob"])
    assert two.join(7, "ann") == (False, ["ann", "bob"])  # a second tab elsewhere
    assert one.add(8, "ann") is True and one.members(8) == ["ann"]
    assert one.remove(7, "ann") is False  # her tab on two is still there
    assert two.remove(7, "ann") is True
    assert one.members(7) == ["bob"]


def test_a_join_is_one_command_on_the_pipeline(pipelined):
    one, _ = pipelined
    one.join(7, "ann")
    assert [command[0] for command in one.sent.commands] == ["EVAL"]


def test_after_redis_lost_everything_the_next_heartbeat_rewrites_the_share(cluster,
                                                                          redis_server):
    one, two = cluster
    one.join(7, "ann")
    two.join(7, "bob")
    one.heartbeat()
    redis.Redis.from_url(redis_server.url).flushall()  # as a restart without persistence
    # its alive key is gone: it rewrites what it has, and announces nothing (nobody was told
    # ann left: Redis lost her, no reaper took her away)
    assert one.heartbeat() == ([], [])
    assert one.members(7) == ["ann"]
    assert one.join(7, "cat") == (True, ["ann", "cat"])


def test_an_update_that_failed_is_repaired_by_the_next_heartbeat(pipelined):
    one, two = pipelined
    two.join(7, "bob")
    one.sent.fail = 1
    with pytest.raises(QueueUnavailable):
        one.join(7, "ann")  # counted here, not in Redis
    assert two.members(7) == ["bob"]
    one.heartbeat()
    assert two.members(7) == ["ann", "bob"]
    assert one.remove(7, "ann") is True and two.members(7) == ["bob"]


def stall(presence: RedisPresence) -> None:
    """As if ``presence``'s process stopped past its TTL: its heartbeat key expires."""
    presence.redis.delete(f"{presence._prefix}alive:{presence.server_id}")


def test_a_heartbeat_that_comes_back_after_the_check_is_not_reaped(cluster, monkeypatch):
    one, two = cluster
    one.join(7, "ann")
    one.heartbeat()
    stall(one)
    seen_by_two = two.redis.exists

    def missing_then_back(*keys: str) -> int:
        seen = seen_by_two(*keys)
        one.heartbeat()  # the stalled process beats again between the check and the reap
        return seen

    monkeypatch.setattr(two.redis, "exists", missing_then_back)
    assert two.reap_dead() == []
    assert two.members(7) == ["ann"]
    monkeypatch.undo()
    assert one.heartbeat() == ([], [])  # nothing to repair, nobody to tell
    assert two.reap_dead() == [] and two.members(7) == ["ann"]


def test_a_process_reaped_while_stalled_puts_its_users_back_and_says_who(cluster):
    one, two = cluster
    one.join(7, "ann")
    one.join(7, "bob")
    two.join(7, "bob")  # bob has a tab on each: nobody is told he left
    one.join(8, "cat")
    one.join(8, "cat")  # two tabs
    one.heartbeat()
    stall(one)
    assert two.reap_dead() == [(7, "ann"), (8, "cat")]
    assert two.reap_dead() == []  # once
    assert two.members(7) == ["bob"] and two.members(8) == []
    back, gone = one.heartbeat()
    assert (back, gone) == ([(7, "ann"), (8, "cat")], [])
    assert two.members(7) == ["ann", "bob"] and two.members(8) == ["cat"]
    assert one.heartbeat() == ([], [])
    assert one.remove(8, "cat") is False and one.remove(8, "cat") is True  # counts intact


def test_what_the_rooms_heard_during_the_stall_is_not_said_twice(cluster):
    one, two = cluster
    one.join(7, "ann")
    one.join(8, "cat")
    one.join(9, "dan")
    one.heartbeat()
    stall(one)
    assert two.reap_dead() == [(7, "ann"), (8, "cat"), (9, "dan")]
    assert two.join(7, "ann") == (True, ["ann"])  # she came back on two: announced there
    assert one.remove(8, "cat") is False  # cat's tab closed: he was announced as left already
    assert one.join(9, "dan") == (True, ["dan"])  # another tab of dan's: announced now
    assert one.heartbeat() == ([], [])  # so the repair has nobody left to announce
    assert two.members(7) == ["ann"] and two.members(8) == [] and two.members(9) == ["dan"]
    assert two.remove(7, "ann") is False  # her socket on one still counts
    assert one.remove(7, "ann") is True and two.members(7) == []
    assert one.remove(9, "dan") is False and one.remove(9, "dan") is True


def test_a_removal_that_never_reached_redis_is_announced_by_the_repair(pipelined):
    one, two = pipelined
    one.join(7, "ann")
    one.sent.fail = 1
    with pytest.raises(QueueUnavailable):
        one.remove(7, "ann")  # gone here, still counted in Redis: nobody was told
    assert two.members(7) == ["ann"]
    assert one.heartbeat() == ([], [(7, "ann")])
    assert two.members(7) == []


def test_a_disconnect_still_under_way_at_shutdown_counts_once(cluster):
    one, two = cluster
    one.join(7, "ann")
    one.join(7, "bob")
    two.join(7, "bob")
    one.heartbeat()
    one.forget_self()  # SIGTERM: ann's and bob's sockets here are still closing
    assert two.members(7) == ["bob"]
    assert one.remove(7, "ann") is True  # her last socket anywhere: the room hears she left
    assert one.remove(7, "bob") is False and two.members(7) == ["bob"]  # his tab on two
    assert two.reap_dead() == []
