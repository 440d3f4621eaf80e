"""Starting, pinning and stopping the servers under test, and a private redis-server."""
from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable, Collection, Dict, List, Optional, Set, Tuple, Union

from .base import HIGH, PEER_PING_PRELOAD, REPO, BenchError, log
from .sampling import children_of, start_time

Cores = Union[int, Collection[int], None]


#: Where the kernel picks the local ports of outgoing connections (Linux's default range
#: when it cannot be read).
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Ports handed out already: two servers started one after the other get different ones.
_GIVEN: Set[int] = set()


def free_port() -> int:
    """A TCP port on loopback that nothing uses right now, below the range the kernel takes
    outgoing connections' local ports from.

    A port the kernel hands out for ``bind(0)`` is in that range: between this call and the
    server's own bind, one of a load generator's thousands of connections may take it as its
    local port, and the server then fails with "Address already in use"."""
    try:
        low = int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    ports = list(range(max(1024, low - 12000), low))
    random.shuffle(ports)
    for port in ports[:200]:
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    with socket.socket() as s:  # nothing free below the range: the kernel's choice
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pinned(command: List[str], cores: Cores,
           nofile: int = 0) -> Tuple[List[str], Callable[[], None]]:
    """``command`` pinned to ``cores`` (one core or several; taskset when present, else
    sched_setaffinity in the child), with the child's open-file soft limit raised to
    ``nofile`` (as ``ulimit -n``)."""
    wanted = {cores} if isinstance(cores, int) else set(cores or ())
    use_taskset = bool(wanted) and shutil.which("taskset") is not None
    if use_taskset:
        command = ["taskset", "-c", ",".join(map(str, sorted(wanted)))] + command

    def setup() -> None:
        if wanted and not use_taskset:
            os.sched_setaffinity(0, wanted)
        if nofile:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft < nofile:
                limit = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    return command, setup


def wait_http(url: str, proc: Optional[subprocess.Popen], seconds: float = 30.0) -> None:
    """Wait until ``url`` answers 200; fail early when ``proc`` exits first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)   # a port that is not listening yet sends no event to wait for
    raise BenchError(f"no answer from {url} within {seconds:.0f} s")


def stop_process(proc: Optional[subprocess.Popen], seconds: float = 15.0,
                 first: int = signal.SIGTERM) -> None:
    """Signal ``first`` (SIGTERM), then SIGKILL after ``seconds``; only the process we
    started."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(first)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def bench_ping_env(idle_ping: Optional[float]) -> Dict[str, str]:
    """How the peer and the plain stack are told the idle scenario's ping interval/timeout."""
    if not idle_ping:
        return {}
    return {"BENCH_PING_INTERVAL_MS": str(int(idle_ping * 1000)),
            "BENCH_PING_TIMEOUT_MS": str(int(idle_ping * 1000))}


def resolve_peer_dir(given: Optional[Path]) -> Path:
    """The Node peer's sources: ``--peer-dir``, else $PRROOM_PEER_DIR, else ../shared/peer
    beside the checkout when it exists."""
    if given is not None:
        found = given
    elif os.environ.get("PRROOM_PEER_DIR"):
        found = Path(os.environ["PRROOM_PEER_DIR"])
    else:
        found = REPO.parent / "shared" / "peer"
        if not found.is_dir():
            raise BenchError("--peer needs the Node peer's sources: pass --peer-dir DIR (or "
                             f"set PRROOM_PEER_DIR); {found} does not exist")
    if not found.is_dir():
        raise BenchError(f"{found} does not exist: --peer-dir must name the peer's sources")
    if not (found / "server.js").is_file():
        raise BenchError(f"no server.js in {found}: --peer-dir must name the peer's sources")
    return found


class Server:
    """A server under test: its URL and the pid whose CPU and RSS are measured."""

    name = "server"

    def __init__(self, url: Optional[str] = None, pid: Optional[int] = None,
                 core: Optional[int] = None) -> None:
        self.url = url
        self.pid = pid
        self.core = core   # the core it is pinned to, if any
        self.proc: Optional[subprocess.Popen] = None
        self.log_path: Optional[Path] = None

    def start(self, idle_ping: Optional[float] = None) -> None:
        """Start a fresh process (and wait until it answers)."""

    def stop(self) -> None:
        """Stop the process started last, if any."""
        stop_process(self.proc)
        self.proc = None

    def _launch(self, command: List[str], cwd: Path, env: Dict[str, str], cores: Cores,
                logs: Path, label: str) -> None:
        command, setup = pinned(command, cores)
        self.log_path = logs / f"{label}-{int(time.time() * 1000)}.log"
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log_file,
                                         stderr=subprocess.STDOUT, preexec_fn=setup,
                                         start_new_session=True)

    def failure(self, error: Exception) -> BenchError:
        """The error with the tail of the server's log."""
        return BenchError(f"{self.name}: {error}\n--- its log ({self.log_path}):\n"
                          f"{tail(self.log_path) if self.log_path else ''}")


def find_gunicorn() -> str:
    """gunicorn next to this python (the virtualenv's), else on PATH."""
    local = Path(sys.executable).parent / "gunicorn"
    found = str(local) if local.exists() else shutil.which("gunicorn")
    if not found:
        raise BenchError("gunicorn not found next to this python nor on PATH")
    return found


class PrroomServer(Server):
    """``gunicorn -c gunicorn.conf.py wsgi:app`` from the repository root, with rate limits
    out of the way; ``extra_env`` (e.g. PRROOM_MESSAGE_QUEUE) goes on top."""

    name = "prroom"

    def __init__(self, core: Optional[int], logs: Path, max_sockets: int,
                 extra_env: Dict[str, str], name: Optional[str] = None) -> None:
        super().__init__(core=core)
        self.logs, self.max_sockets, self.extra_env = logs, max_sockets, extra_env
        if name:
            self.name = name
        self.gunicorn = find_gunicorn()

    def environment(self, port: int, idle_ping: Optional[float]) -> Dict[str, str]:
        """The server's environment: none of ours PRROOM_*, the bench's settings instead."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PRROOM_") and k not in ("PORT", "WEB_CONCURRENCY")}
        env.update({
            "PRROOM_HOST": "127.0.0.1", "PRROOM_PORT": str(port),
            "PRROOM_LOG_LEVEL": "warning", "PRROOM_ACCESS_LOG": "",
            "PRROOM_WORKER_CONNECTIONS": str(self.max_sockets + 1000),
            "PRROOM_RATE_LIMIT_DISCONNECT_AFTER": str(HIGH),
            # every load-generator socket comes from one loopback address
            "PRROOM_MAX_SESSIONS_PER_ADDRESS": "0",
        })
        for kind in ("MESSAGE", "TYPING", "ROOM"):
            env[f"PRROOM_{kind}_RATE"] = str(HIGH)
            env[f"PRROOM_{kind}_BURST"] = str(HIGH)
        if idle_ping:
            env["PRROOM_PING_INTERVAL"] = str(idle_ping)
            env["PRROOM_PING_TIMEOUT"] = str(idle_ping)
        env.update(self.extra_env)
        return env

    def launch(self, idle_ping: Optional[float] = None) -> None:
        """Start the process without waiting for it (several start side by side)."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._launch([self.gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"], REPO,
                     self.environment(port, idle_ping), self.core, self.logs, self.name)

    def start(self, idle_ping: Optional[float] = None) -> None:
        """Start and wait for the worker."""
        self.launch(idle_ping)
        self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the server answers; measure its one gunicorn worker from then on."""
        assert self.proc is not None and self.url is not None
        try:
            wait_http(self.url + "/healthz", self.proc)
            deadline = time.monotonic() + 10
            workers = children_of(self.proc.pid)
            while not workers and time.monotonic() < deadline:
                time.sleep(0.1)   # the master answers before /proc shows its child
                workers = children_of(self.proc.pid)
            if len(workers) != 1:
                raise BenchError(f"expected one gunicorn worker, found {workers}")
        except BenchError as error:
            self.stop()
            raise self.failure(error) from None
        self.pid = workers[0]

    def stop(self) -> None:
        """Stop master and worker."""
        worker = self.pid
        started = start_time(worker) if worker else None
        super().stop()
        # the master waited for its worker; should the worker have outlived it, end it (only
        # if that pid is still the very process we started)
        if worker is not None and started is not None and start_time(worker) == started:
            os.kill(worker, signal.SIGKILL)
        self.pid = None


class PlainServer(PrroomServer):
    """The plain Flask-SocketIO stack (bench/plain_app.py) under gunicorn's gevent-websocket
    worker: the starting point prroom is compared with."""

    name = "plain"

    def launch(self, idle_ping: Optional[float] = None) -> None:
        """Start the process without waiting for it."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRROOM_")}
        env.update(bench_ping_env(idle_ping))
        command = [self.gunicorn, "-k", "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
                   "-w", "1", "--worker-connections", str(self.max_sockets + 1000),
                   "-b", f"127.0.0.1:{port}", "--log-level", "warning", "bench.plain_app:app"]
        self._launch(command, REPO, env, self.core, self.logs, "plain")


class PeerServer(Server):
    """The Node reference peer: ``node server.js`` in a private copy with ``npm ci`` done."""

    name = "peer"

    def __init__(self, source: Path, core: Optional[int], logs: Path, workdir: Path) -> None:
        super().__init__(core=core)
        self.logs = logs
        self.dir = workdir / "peer"
        self.dir.mkdir()
        for item in source.iterdir():   # plain copies: the source is read-only
            if item.is_file():
                shutil.copyfile(item, self.dir / item.name)
        log(f"npm ci in a copy of {source}")
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=self.dir, capture_output=True, text=True)
        if done.returncode:
            raise BenchError(f"npm ci for the peer failed:\n{done.stderr[-2000:]}")

    def start(self, idle_ping: Optional[float] = None) -> None:
        """Start ``node server.js`` (with the ping preload for the idle scenario)."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PORT=str(port), HOST="127.0.0.1")
        command = ["node", "server.js"]
        if idle_ping:
            env.update(bench_ping_env(idle_ping))
            command = ["node", "-r", str(PEER_PING_PRELOAD), "server.js"]
        self._launch(command, self.dir, env, self.core, self.logs, "peer")
        try:
            wait_http(self.url + "/healthz", self.proc)
        except BenchError as error:
            self.stop()
            raise self.failure(error) from None
        assert self.proc is not None
        self.pid = self.proc.pid


class ExternalServer(Server):
    """An already running server (``--url``); CPU and memory only with ``--server-pid``.
    It is not restarted between runs, so its memory figures are growth on a warm process."""

    name = "server"

    def __init__(self, url: str, pid: Optional[int]) -> None:
        allowed = os.sched_getaffinity(pid) if pid else set()
        super().__init__(url.rstrip("/"), pid,
                         core=next(iter(allowed)) if len(allowed) == 1 else None)

    def start(self, idle_ping: Optional[float] = None) -> None:
        """Check that it answers (any Engine.IO v4 server answers the polling handshake)."""
        wait_http(f"{self.url}/socket.io/?EIO=4&transport=polling", None, 10)


class RedisServer:
    """A private ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self, cores: Cores, logs: Path) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            raise BenchError("the cluster benchmark needs redis-server on PATH "
                             "(apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = logs / f"redis-{self.port}.log"
        command, setup = pinned([binary, "--port", str(self.port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no",
                                 "--logfile", str(self.log_path)], cores)
        self.proc: Optional[subprocess.Popen] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=setup,
            start_new_session=True)
        self.pid = self._wait()

    def _wait(self, seconds: float = 10.0) -> int:
        """Wait until it answers PING; its pid (taskset execs it in place)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited: {tail(self.log_path)}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return self.proc.pid
            except OSError:
                time.sleep(0.05)   # not listening yet: nothing to await but the port
        self.stop()
        raise BenchError(f"redis-server did not answer within {seconds:.0f} s")

    def stop(self) -> None:
        """Stop it (SIGTERM) and wait."""
        stop_process(self.proc)
        self.proc = None

