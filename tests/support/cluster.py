"""Helpers for clustered-mode tests: server settings and what Redis says about channels."""
from __future__ import annotations

from typing import Callable, Dict

import redis
import requests

from tests.support.redis_server import RedisProcess
from tests.support.waiting import wait_until


def cluster_env(redis_server: RedisProcess, channel: str, **extra: str) -> Dict[str, str]:
    """Settings for a prroom process of deployment ``channel`` on ``redis_server``."""
    return {"PRROOM_MESSAGE_QUEUE": redis_server.url, "PRROOM_CHANNEL": channel,
            "PRROOM_PRESENCE_TTL": "3", "PRROOM_MESSAGE_BURST": "100", **extra}


def room_channel(channel: str, pull_request_id: int) -> str:
    """The pub/sub channel of a pull request's room (README, Clustered mode)."""
    return f"prroom:{channel}:pr:{pull_request_id}"


def subscribers(redis_server: RedisProcess, channel: str, sharded: bool = True) -> int:
    """How many connections Redis has subscribed to ``channel`` (one per prroom process)."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB" if sharded else "NUMSUB",
                                       channel)
    finally:
        client.close()
    return int(reply[1])  # [channel, count]


def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``check`` (state in another process, with nothing to await) until it holds."""
    assert wait_until(check, timeout), f"not within {timeout} s: {what}"


def ready(server) -> bool:
    """Whether the server's /readyz answers 200."""
    try:
        return requests.get(server.url + "/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
