"""A private redis-server on a free loopback port, which tests may stop and restart."""
from __future__ import annotations

import shutil
import subprocess
import time

import redis

from tests.support.servers import ROOT, free_port


class RedisProcess:
    """``redis-server`` without persistence, owned by the test that started it."""

    def __init__(self, port: int = 0) -> None:
        self.binary = shutil.which("redis-server")
        assert self.binary, "redis-server is not installed: apt-get install redis-server"
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None
        self.start()

    def start(self) -> "RedisProcess":
        """Start (again, on the same port) and wait until it answers PING."""
        log = ROOT / "tests" / "artifacts" / f"redis-{self.port}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--logfile", str(log)], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.RedisError:
                time.sleep(0.05)  # not listening yet: nothing to await but the port
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class SentinelProcess:
    """A Redis Sentinel on a free loopback port watching ``master`` as ``service``."""

    def __init__(self, master: RedisProcess, service: str = "prroom-test") -> None:
        self.port = free_port()
        self.service = service
        directory = ROOT / "tests" / "artifacts"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / f"sentinel-{self.port}.conf"  # Sentinel rewrites its config
        config.write_text(f"port {self.port}\nbind 127.0.0.1\n"
                          f"sentinel monitor {service} 127.0.0.1 {master.port} 1\n")
        self.url = f"redis+sentinel://127.0.0.1:{self.port}/0/{service}"
        self.proc = subprocess.Popen(
            [master.binary, str(config), "--sentinel", "--logfile",
             str(directory / f"sentinel-{self.port}.log")], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service):
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)  # not listening yet: nothing to await but the port
        raise RuntimeError("redis sentinel did not start")

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
