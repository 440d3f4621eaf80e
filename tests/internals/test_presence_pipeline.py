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

from prroom.core.presence import RedisPresence
from prroom.internals.redis_channels import Publisher, QueueUnavailable, pubsub_mode

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
        presence.sent = None
        if pipelined:
            presence.sent = Recorded(url)
            presence.send_via(presence.sent)
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
    one.heartbeat()  # its alive key is gone: it rewrites what it has
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
