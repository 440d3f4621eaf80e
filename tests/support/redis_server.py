"""A private redis-server on a free loopback port, which tests may stop and restart."""
from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator, List, Optional, Sequence

import pytest
import redis

from tests.support.servers import ARTIFACTS, free_port
from tests.support.waiting import wait_until

# Set by tools/run-tests when redis-server is missing and it cannot install it: the clustered
# tests then skip with this reason (one line) instead of failing one by one.
SKIP_REASON = os.environ.get("PRROOM_TEST_SKIP_REDIS", "")


class RedisProcess:
    """``redis-server`` without persistence, owned by the test that started it."""

    def __init__(self, port: int = 0, extra_args: Sequence[str] = ()) -> None:
        if SKIP_REASON:  # one line saying how to get Redis, rather than a failure per test
            pytest.skip(SKIP_REASON)
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: apt-get install redis-server"
        self.binary: str = binary
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: Optional[subprocess.Popen] = None
        self.extra_args = list(extra_args)
        self.start()

    def start(self) -> "RedisProcess":
        """Start (again, on the same port) and wait until it answers PING."""
        log = ARTIFACTS / f"redis-{self.port}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--logfile", str(log), *self.extra_args],
            stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False  # not listening yet

        if not wait_until(answers, timeout=10):
            raise RuntimeError("redis-server did not start")
        return self

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextmanager
def running_redis() -> Iterator[RedisProcess]:
    """A :class:`RedisProcess` for the ``with``, stopped at its end."""
    proc = RedisProcess()
    try:
        yield proc
    finally:
        proc.stop()


class SentinelProcess:
    """A Redis Sentinel on a free loopback port watching ``master`` as ``service``."""

    def __init__(self, master: RedisProcess, service: str = "prroom-test") -> None:
        self.port = free_port()
        self.service = service
        directory = ARTIFACTS
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / f"sentinel-{self.port}.conf"  # Sentinel rewrites its config
        config.write_text(f"port {self.port}\nbind 127.0.0.1\n"
                          f"sentinel monitor {service} 127.0.0.1 {master.port} 1\n")
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/0/{service}"
        self.proc = subprocess.Popen(
            [master.binary, str(config), "--sentinel", "--logfile",
             str(directory / f"sentinel-{self.port}.log")], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def watching() -> bool:
            try:
                return bool(client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                                   service))
            except redis.RedisError:
                return False  # not listening yet

        if not wait_until(watching, 10):
            raise RuntimeError("redis sentinel did not start")

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class RedisClusterProcess:
    """A Redis Cluster of ``masters`` private redis-servers (no replicas), slots split evenly.

    Made with redis-py's commands (``CLUSTER ADDSLOTSRANGE``, ``CLUSTER MEET``), so it needs
    nothing but redis-server 7.
    """

    SLOTS = 16384

    def __init__(self, masters: int = 3) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.nodes: List[RedisProcess] = []
        self._bus_ports: List[int] = []
        try:
            for _ in range(masters):
                port, bus_port = free_port(), free_port()
                self._bus_ports.append(bus_port)
                config = ARTIFACTS / f"redis-cluster-{port}.conf"  # the node writes it
                config.unlink(missing_ok=True)
                self.nodes.append(RedisProcess(port, [
                    "--cluster-enabled", "yes", "--cluster-config-file", str(config),
                    # the bus port is port + 10000 unless told: past 65535 for high ports
                    "--cluster-port", str(bus_port), "--cluster-node-timeout", "2000"]))
            self._form()
        except BaseException:
            self.stop()
            raise
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def client(self, node: RedisProcess) -> redis.Redis:
        """A plain client of one node."""
        return redis.Redis(port=node.port, socket_connect_timeout=1)

    def _form(self) -> None:
        share = self.SLOTS // len(self.nodes)
        for index, node in enumerate(self.nodes):
            last = self.SLOTS - 1 if index == len(self.nodes) - 1 else (index + 1) * share - 1
            self.client(node).execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
        first = self.client(self.nodes[0])
        for node, bus_port in zip(self.nodes[1:], self._bus_ports[1:]):
            first.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)

        def formed() -> bool:
            for node in self.nodes:
                info = self.client(node).execute_command("CLUSTER", "INFO")
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text or \
                        f"cluster_known_nodes:{len(self.nodes)}" not in text:
                    return False
            return True

        if not wait_until(formed, timeout=20):
            raise RuntimeError("the redis cluster did not form")

    def owner_of(self, key: str) -> RedisProcess:
        """The node serving ``key``'s hash slot."""
        slot = self.client(self.nodes[0]).execute_command("CLUSTER", "KEYSLOT", key)
        share = self.SLOTS // len(self.nodes)
        return self.nodes[min(int(slot) // share, len(self.nodes) - 1)]

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes:
            node.stop()
