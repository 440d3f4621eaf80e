"""From ``PRROOM_MESSAGE_QUEUE`` to redis-py clients: standalone, Sentinel, Redis Cluster.

Three URL forms:

- ``redis://``, ``rediss://``, ``unix://`` (and ``valkey://``): one server.
- ``redis+sentinel://[user:password@]host:port,.../db/service``: the Sentinels are asked for
  the service's current master on every connect.
- ``redis+cluster://[user:password@]host:port,...``: a Redis Cluster, found from any of the
  listed nodes.  Everything a deployment keeps in Redis, its keys and its pub/sub channels,
  is named inside one hash tag (:func:`keyspace`), so it lives in one hash slot: the Lua
  scripts that take the deployment's one message sequence and append to a room's stream
  touch keys of a single slot, as Redis Cluster requires, and the sharded room channels
  those scripts publish on are that slot's too.  A cluster then gives prroom failover and
  a Redis shared with other tenants, not more pub/sub throughput than one shard has.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlparse

CLUSTER_SCHEME = "redis+cluster://"
SENTINEL_SCHEME = "redis+sentinel://"


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return url.startswith(CLUSTER_SCHEME)


def keyspace(url: str, deployment: str) -> str:
    """The name a deployment's keys and channels start from on the queue at ``url``.

    On a Redis Cluster it is the deployment in a hash tag (``{name}``): every key and channel
    derived from it hashes to the same slot.  Elsewhere it is the name itself, so keys and
    the channel stock python-socketio emitters publish on keep their names.
    """
    return "{" + deployment + "}" if is_cluster_url(url) else deployment


def _hosts_and_credentials(url: str) -> Tuple[List[Tuple[str, int]], List[str], Dict[str, Any]]:
    parsed = urlparse(url)
    hosts = [host.rsplit(":", 1) for host in parsed.netloc.rpartition("@")[2].split(",")]
    options: Dict[str, Any] = {}
    if parsed.username:
        options["username"] = parsed.username
    if parsed.password:
        options["password"] = parsed.password
    path = [part for part in parsed.path.split("/") if part]
    return [(host, int(port)) for host, port in hosts], path, options


def redis_client(url: str, pool_size: Optional[int] = None, **options: Any) -> Any:
    """A redis-py client for ``url`` (any of the forms above).

    ``pool_size``: at most that many connections (per node, on a cluster), and a caller
    finding them all busy waits for one (up to the socket timeout) instead of failing: under
    gevent, every greenlet making a call at the same moment would otherwise open a
    connection of its own.
    """
    import redis

    blocking = {} if pool_size is None else {
        "max_connections": pool_size, "timeout": options.get("socket_timeout") or 2}
    if is_cluster_url(url):
        from redis.cluster import ClusterNode, RedisCluster

        hosts, _, credentials = _hosts_and_credentials(url)
        if blocking:
            options.update(blocking, connection_pool_class=redis.BlockingConnectionPool)
        host, port = hosts[0]
        return RedisCluster.from_url(
            f"redis://{host}:{port}", startup_nodes=[ClusterNode(h, p)  # type: ignore[no-untyped-call]
                                                     for h, p in hosts],
            **credentials, **options)
    if url.startswith(SENTINEL_SCHEME):
        from redis.sentinel import Sentinel

        hosts, path, credentials = _hosts_and_credentials(url)
        if len(path) < 2:
            raise ValueError("a redis+sentinel:// URL must end with /db/service_name")
        options.update(credentials, db=int(path[0]))
        return Sentinel(hosts, **options).master_for(path[1])
    if not blocking:
        return redis.Redis.from_url(url, **options)
    pool = redis.BlockingConnectionPool.from_url(url, **blocking, **options)
    return redis.Redis(connection_pool=pool)
