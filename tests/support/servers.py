"""Start prroom (or any WSGI server command) as a subprocess on a free loopback port."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server subprocess with its output in a log file; stops itself when closed."""

    def __init__(self, argv: List[str], port: int, env: Optional[Dict[str, str]] = None,
                 log_dir: Optional[Path] = None, health_path: str = "/healthz") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.health_path = health_path
        log_dir = log_dir or ROOT / "tests" / "artifacts"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"server-{port}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> "ServerProcess":
        """Poll the health endpoint until it answers 200 (or fail with the server's log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + self.health_path, timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)  # polling a port that is not open yet: nothing to await
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def gunicorn(env: Optional[Dict[str, str]] = None, app: str = "wsgi:app",
             extra_args: Optional[List[str]] = None,
             port: Optional[int] = None) -> ServerProcess:
    """prroom exactly as production runs it: ``gunicorn -c gunicorn.conf.py wsgi:app``.

    ``port``: listen there (e.g. to restart a stopped server in place); default a free one.
    """
    port = port or free_port()
    argv = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *(extra_args or []), app]
    # a short graceful timeout: tests leave idle sessions open, which gunicorn would wait for
    return ServerProcess(argv, port, env={"PRROOM_PORT": str(port),
                                          "PRROOM_GRACEFUL_TIMEOUT": "2", **(env or {})})
