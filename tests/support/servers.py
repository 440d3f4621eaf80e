"""Start prroom (or any WSGI server command) as a subprocess on a free loopback port.

:func:`running` is the one way a test starts a server it owns; :func:`server_fixture` makes
a pytest fixture of it, which is how conftest.py files and test modules declare the servers
they share.
"""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence

import pytest
import requests
from harness.processes import free_port as free_port  # one way to pick a port, for both

from tests.support.environ import without_settings
from tests.support.waiting import wait_until

Scope = Literal["session", "package", "module", "class", "function"]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARTIFACTS = ROOT / "tests" / "artifacts"

# The integration tests' shared server (tests/conftest.py).  A typing indicator lasts far
# longer than any client waits for an event, so one that goes away while a test waits went
# away because of what the test did, never by expiry (which test_chat.py checks on a server
# of its own).
SHARED_TYPING_TIMEOUT = 30.0
SHARED_SERVER_ENV = {"PRROOM_TYPING_TIMEOUT": str(SHARED_TYPING_TIMEOUT)}

# The token-mode server the integration tests share (tests/integration/conftest.py), with
# small limits so that the caps and the flood protection are reached in a few requests.
TOKEN_SECRET = "test-secret-not-for-production"
TOKEN_SERVER_ENV = {
    "PRROOM_AUTH_MODE": "token", "PRROOM_SECRET_KEY": TOKEN_SECRET,
    "PRROOM_MAX_ROOMS_PER_SOCKET": "3", "PRROOM_MAX_CONNECTIONS_PER_IDENTITY": "2",
    "PRROOM_MESSAGE_RATE": "2", "PRROOM_MESSAGE_BURST": "5",
    "PRROOM_RATE_LIMIT_DISCONNECT_AFTER": "10"}




class ServerProcess:
    """A server subprocess with its output in a log file; stops itself when closed."""

    def __init__(self, argv: List[str], port: int, env: Optional[Dict[str, str]] = None,
                 log_dir: Optional[Path] = None, health_path: str = "/healthz") -> None:
        self.port = port
        self.env = dict(env or {})  # what it was started with, beside the shell's
        self.url = f"http://127.0.0.1:{port}"
        self.health_path = health_path
        log_dir = log_dir or ARTIFACTS
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"server-{port}.log"
        full_env = without_settings(os.environ)
        full_env.update(env or {})
        full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> "ServerProcess":
        """Poll the health endpoint until it answers 200 (or fail with the server's log)."""
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return requests.get(self.url + self.health_path, timeout=1).status_code == 200
            except requests.RequestException:
                return False  # not listening yet

        if not wait_until(healthy, timeout):
            self.stop()
            raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")
        return self

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def worker_pid(self) -> int:
        """gunicorn's one worker: the only child of the master process."""
        master = self.proc.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code.  Idempotent."""
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
             extra_args: Optional[List[str]] = None, port: Optional[int] = None,
             health_path: str = "/healthz") -> ServerProcess:
    """prroom exactly as production runs it: ``gunicorn -c gunicorn.conf.py wsgi:app``.

    Started, not yet ready (see :meth:`ServerProcess.wait_ready`); for the tests that watch
    a server fail to start.  ``port``: listen there (e.g. to restart a stopped server in
    place); default a free one.  ``health_path``: what answers 200 once it is ready.
    """
    port = port or free_port()
    argv = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *(extra_args or []), app]
    # a short graceful timeout: tests leave idle sessions open, which gunicorn would wait for
    return ServerProcess(argv, port, env={"PRROOM_PORT": str(port),
                                          "PRROOM_GRACEFUL_TIMEOUT": "2", **(env or {})},
                         health_path=health_path)


@contextmanager
def running(env: Optional[Dict[str, str]] = None, app: str = "wsgi:app",
            extra_args: Optional[List[str]] = None, port: Optional[int] = None,
            health_path: str = "/healthz") -> Iterator[ServerProcess]:
    """:func:`gunicorn`, ready to serve inside the ``with``, stopped at its end."""
    proc = gunicorn(env=env, app=app, extra_args=extra_args, port=port,
                    health_path=health_path)
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def server_fixture(env: Optional[Dict[str, str]] = None, *, app: str = "wsgi:app",
                   scope: Scope = "module", variants: Optional[Dict[str, Dict[str, str]]] = None,
                   after: Sequence[str] = (), doc: str = "") -> Callable[..., Any]:
    """A pytest fixture yielding a ready :func:`running` server, shared within ``scope``.

    Assign it to the fixture's name: ``token_server = server_fixture({...})``.
    ``variants``: ``{id: more env}`` makes it a parametrized fixture, one server per variant
    (each test using it runs once per variant).  ``after``: fixtures to set up first, so
    that their failure or skip comes before a server is started for nothing.
    """
    @pytest.fixture(scope=scope, params=list(variants.values()) if variants else None,
                    ids=list(variants) if variants else None)
    def started(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
        for name in after:
            request.getfixturevalue(name)
        more = getattr(request, "param", None) or {}
        with running(env={**(env or {}), **more}, app=app) as proc:
            yield proc

    started.__doc__ = doc or f"prroom under gunicorn ({app}) with {env or 'default settings'}"
    return started
