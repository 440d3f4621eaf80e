#!/usr/bin/env python3
"""Load benchmark for prroom, optionally side by side with the Node reference peer.

    python bench/run.py [--quick] [--peer] [--plain] [--url URL [--server-pid PID]] [--runs K]
                        [--scenarios rooms,fanout,idle] [--wait-quiet SECONDS]
                        [--out bench/results/NAME.json]

It starts prroom exactly as production runs it (``gunicorn -c gunicorn.conf.py wsgi:app``
from the repository root) with rate limits raised out of the load generator's way and
logging at ``warning``, and with ``--peer`` also the Node peer server (a copy of
../shared/peer, ``npm ci``, ``node server.js``), and with ``--plain`` the plain
Flask-SocketIO stack prroom started from (``bench/plain_app.py``, gunicorn's gevent-websocket
worker).  Given ``--url`` it measures a server
that is already running instead.  The load comes from ``bench/loadgen/loadgen.js``: npm
socket.io-client 4.8 over WebSocket, what browsers run.  With two or more cores the servers
run on the first allowed core and the load generator on the second (``taskset -c``).

Scenarios (full sizes; ``--quick`` uses smaller ones and finishes well under a minute):

1. connections opened per second: 2,000 sockets, each joining a room of 10 (join acked);
2. memory per connected socket: worker RSS growth over those 2,000 sockets;
3. fan-out latency: one sender to a room of 500, 200 messages 10 ms apart, p50/p99 of
   receive − send time over all 100,000 deliveries;
4. delivered messages per second: 200 rooms x 10 members (the sockets of 1), each member
   sending with one acked message in flight, for 10 s;
5. 10,000 idle connections: memory held, and sockets lost over two ping intervals (the
   servers run with a 5 s ping interval and 5 s ping timeout for this one).

Each run starts fresh servers; a figure is the median of ``--runs`` runs (3; 1 with
``--quick``), prroom and the peer taking turns; on a shared machine, a run whose timed phases
other processes disturbed is done again, at most ``--retries`` times (2; 0 with ``--quick``).  For every timed phase it records the
server's CPU% (/proc/<pid>/stat of the gunicorn worker or the node peer), the load
generator's CPU% and event-loop lag, and how busy each side's core was, and names the side
that was the limit (see ``limit_side``); other processes' use of the cores is reported under
"Problems".  Prints a table and writes JSON to ``bench/results/<timestamp>.json``.  Exits 1
only when a server or the load generator cannot run at all, never because of a figure.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
LOADGEN_DIR = BENCH / "loadgen"
PEER_PING_PRELOAD = BENCH / "peer_ping.js"
# the reference peer lives beside the checkout, in ../shared/peer
DEFAULT_PEER_DIR = Path(__file__).resolve().parents[2] / "shared" / "peer"

FULL = dict(runs=3, retries=2, sockets=2000, room_size=10, fanout_members=500, fanout_messages=200,
            fanout_interval_ms=10, duration=10.0, warmup=1.0, idle_sockets=10_000,
            idle_ping=5.0)
QUICK = dict(runs=1, retries=0, sockets=400, room_size=10, fanout_members=100, fanout_messages=50,
             fanout_interval_ms=10, duration=3.0, warmup=0.5, idle_sockets=1000,
             idle_ping=1.0)
SOCKETS_PER_LOADGEN = 5000   # idle scenario: more sockets are split over several processes
CONNECT_WINDOW = 200         # sockets connecting at once
SATURATED = 85.0             # CPU% of one core from which a side counts as the limit
HIGH = 1_000_000             # rate limits and bursts: out of the load generator's way

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A server or load generator could not run; the benchmark stops."""


# ---- /proc sampling ------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def core_times() -> dict:
    """Per core: (busy, total, softirq) jiffies from /proc/stat."""
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split() or [""]
            if name.startswith("cpu") and name != "cpu":
                # user nice system idle iowait irq softirq steal (guest is inside user)
                numbers = [int(v) for v in values[:8]]
                idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
                softirq = numbers[6] if len(numbers) > 6 else 0
                times[int(name[3:])] = (sum(numbers) - idle, sum(numbers), softirq)
    return times


def snapshot(pid) -> dict:
    snap = {"t": time.monotonic(), "cores": core_times()}
    if pid:
        try:
            snap["cpu"] = cpu_seconds(pid)
            snap["rss_kb"] = rss_kb(pid)
        except OSError:
            pass
    return snap


def between(a: dict, b: dict, cores: tuple) -> dict:
    """Server CPU% and the busy% of the server's and load generator's cores from a to b,
    with the part of it spent in softirq (on loopback: the sender's own packet processing)."""
    seconds = b["t"] - a["t"]
    out = {"seconds": round(seconds, 3)}
    if "cpu" in a and "cpu" in b and seconds > 0:
        out["server_cpu"] = round(100 * (b["cpu"] - a["cpu"]) / seconds, 1)
    for role, core in zip(("server", "loadgen"), cores):
        if core is not None and core in a["cores"] and core in b["cores"]:
            busy, total, softirq = (after - before for before, after
                                    in zip(a["cores"][core], b["cores"][core]))
            if total:
                out[f"{role}_core_busy"] = round(100 * busy / total, 1)
                out[f"{role}_core_softirq"] = round(100 * softirq / total, 1)
    return out


def background_busy(seconds: float = 2.0) -> dict:
    """Busy% of each core while the benchmark runs nothing: other people's load."""
    before = core_times()
    time.sleep(seconds)
    after = core_times()
    return {core: round(100 * (after[core][0] - before[core][0])
                        / max(after[core][1] - before[core][1], 1), 1) for core in after}


def start_time(pid: int):
    """A process's start time (clock ticks since boot): with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def children_of(pid: int) -> list:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


# ---- processes ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(command: list, core, nofile: int = 0):
    """``command`` pinned to ``core`` (taskset when present, else sched_setaffinity in the
    child), with the child's open-file soft limit raised to ``nofile`` (as ``ulimit -n``)."""
    use_taskset = core is not None and shutil.which("taskset")
    if use_taskset:
        command = ["taskset", "-c", str(core)] + command

    def setup():
        if core is not None and not use_taskset:
            os.sched_setaffinity(0, {core})
        if nofile:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft < nofile:
                wanted = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return command, setup


def wait_http(url: str, proc, seconds: float = 30.0) -> None:
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
        time.sleep(0.1)
    raise BenchError(f"no answer from {url} within {seconds:.0f} s")


def stop_process(proc, seconds: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def bench_ping_env(idle_ping) -> dict:
    """How the peer and the plain stack are told the idle scenario's ping interval/timeout."""
    if not idle_ping:
        return {}
    return {"BENCH_PING_INTERVAL_MS": str(int(idle_ping * 1000)),
            "BENCH_PING_TIMEOUT_MS": str(int(idle_ping * 1000))}


class Server:
    """A server under test: its URL and the pid whose CPU and RSS are measured."""

    name = "server"

    def __init__(self, url=None, pid=None, core=None):
        self.url = url
        self.pid = pid
        self.core = core   # the core it is pinned to, if any
        self.proc = None
        self.log_path = None

    def start(self, idle_ping=None) -> None:
        pass

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def _launch(self, command, cwd, env, core, logs: Path, label: str) -> None:
        command, setup = pinned(command, core)
        self.log_path = logs / f"{label}-{int(time.time() * 1000)}.log"
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log_file,
                                         stderr=subprocess.STDOUT, preexec_fn=setup,
                                         start_new_session=True)

    def failure(self, error: Exception) -> BenchError:
        return BenchError(f"{self.name}: {error}\n--- its log ({self.log_path}):\n"
                          f"{tail(self.log_path) if self.log_path else ''}")


class PrroomServer(Server):
    """``gunicorn -c gunicorn.conf.py wsgi:app`` from the repository root."""

    name = "prroom"

    def __init__(self, core, logs: Path, max_sockets: int, extra_env: dict):
        super().__init__(core=core)
        self.logs, self.max_sockets, self.extra_env = logs, max_sockets, extra_env
        local = Path(sys.executable).parent / "gunicorn"
        self.gunicorn = str(local) if local.exists() else shutil.which("gunicorn")
        if not self.gunicorn:
            raise BenchError("gunicorn not found next to this python nor on PATH")

    def environment(self, port: int, idle_ping) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PRROOM_") and k not in ("PORT", "WEB_CONCURRENCY")}
        env.update({
            "PRROOM_HOST": "127.0.0.1", "PRROOM_PORT": str(port),
            "PRROOM_LOG_LEVEL": "warning", "PRROOM_ACCESS_LOG": "",
            "PRROOM_WORKER_CONNECTIONS": str(self.max_sockets + 1000),
            "PRROOM_RATE_LIMIT_DISCONNECT_AFTER": str(HIGH),
        })
        for kind in ("MESSAGE", "TYPING", "ROOM"):
            env[f"PRROOM_{kind}_RATE"] = str(HIGH)
            env[f"PRROOM_{kind}_BURST"] = str(HIGH)
        if idle_ping:
            env["PRROOM_PING_INTERVAL"] = str(idle_ping)
            env["PRROOM_PING_TIMEOUT"] = str(idle_ping)
        env.update(self.extra_env)
        return env

    def start(self, idle_ping=None) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._launch([self.gunicorn, "-c", "gunicorn.conf.py", "wsgi:app"], REPO,
                     self.environment(port, idle_ping), self.core, self.logs, "prroom")
        self._wait_for_worker()

    def _wait_for_worker(self) -> None:
        """Wait until the server answers; measure its one gunicorn worker from then on."""
        try:
            wait_http(self.url + "/healthz", self.proc)
            deadline = time.monotonic() + 10
            workers = children_of(self.proc.pid)
            while not workers and time.monotonic() < deadline:
                time.sleep(0.1)
                workers = children_of(self.proc.pid)
            if len(workers) != 1:
                raise BenchError(f"expected one gunicorn worker, found {workers}")
        except BenchError as error:
            self.stop()
            raise self.failure(error) from None
        self.pid = workers[0]

    def stop(self) -> None:
        worker = self.pid
        started = start_time(worker) if worker else None
        super().stop()
        # the master waited for its worker; should the worker have outlived it, end it (only
        # if that pid is still the very process we started)
        if started is not None and start_time(worker) == started:
            os.kill(worker, signal.SIGKILL)
        self.pid = None


class PlainServer(PrroomServer):
    """The plain Flask-SocketIO stack (bench/plain_app.py) under gunicorn's gevent-websocket
    worker: the starting point prroom is compared with."""

    name = "plain"

    def start(self, idle_ping=None) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PRROOM_")}
        env.update(bench_ping_env(idle_ping))
        command = [self.gunicorn, "-k", "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
                   "-w", "1", "--worker-connections", str(self.max_sockets + 1000),
                   "-b", f"127.0.0.1:{port}", "--log-level", "warning", "bench.plain_app:app"]
        self._launch(command, REPO, env, self.core, self.logs, "plain")
        self._wait_for_worker()


class PeerServer(Server):
    """The Node reference peer: ``node server.js`` in a private copy with ``npm ci`` done."""

    name = "peer"

    def __init__(self, source: Path, core, logs: Path, workdir: Path):
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

    def start(self, idle_ping=None) -> None:
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
        self.pid = self.proc.pid


class ExternalServer(Server):
    """An already running server (``--url``); CPU and memory only with ``--server-pid``.
    It is not restarted between runs, so its memory figures are growth on a warm process."""

    name = "server"

    def __init__(self, url: str, pid):
        allowed = os.sched_getaffinity(pid) if pid else ()
        super().__init__(url.rstrip("/"), pid, core=next(iter(allowed)) if len(allowed) == 1
                         else None)

    def start(self, idle_ping=None) -> None:
        # any Engine.IO v4 server answers the long-polling handshake
        wait_http(self.url + "/socket.io/?EIO=4&transport=polling", None, 10)


# ---- the load generator ---------------------------------------------------------------------

class Loadgen:
    """One or more loadgen.js processes of one scenario, kept in step at every barrier."""

    def __init__(self, configs: list, core, logs: Path, nofile: int):
        self.procs = []
        self.buffers = {}
        self.stderr_paths = []
        self.selector = selectors.DefaultSelector()
        for number, config in enumerate(configs):
            command, setup = pinned(["node", str(LOADGEN_DIR / "loadgen.js"), json.dumps(config)],
                                    core, nofile)
            err_path = logs / f"loadgen-{config['scenario']}-{number}-{int(time.time() * 1000)}.log"
            self.stderr_paths.append(err_path)
            with open(err_path, "wb") as err:
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=err, preexec_fn=setup, start_new_session=True)
            os.set_blocking(proc.stdout.fileno(), False)
            self.selector.register(proc.stdout, selectors.EVENT_READ, proc)
            self.buffers[proc.pid] = b""
            self.procs.append(proc)

    def run(self, on_barrier, timeout: float) -> list:
        """Drive the processes to the end; ``on_barrier(name, [data per process])`` runs each
        time all of them reached the same barrier.  Returns their results."""
        deadline = time.monotonic() + timeout
        pending = {proc.pid: None for proc in self.procs}   # barrier each one waits at
        results = {}
        open_pipes = len(self.procs)
        try:
            while open_pipes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"load generator still running after {timeout:.0f} s")
                for key, _ in self.selector.select(timeout=min(left, 1.0)):
                    proc = key.data
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        self.selector.unregister(proc.stdout)
                        open_pipes -= 1
                        continue
                    self.buffers[proc.pid] += chunk
                    *lines, self.buffers[proc.pid] = self.buffers[proc.pid].split(b"\n")
                    for line in lines:
                        message = json.loads(line)
                        if message["event"] == "barrier":
                            pending[proc.pid] = message
                        elif message["event"] == "result":
                            results[proc.pid] = message
                        elif message["event"] == "error":
                            raise BenchError(f"load generator failed: {message['message']}")
                waiting = [m for m in pending.values() if m is not None]
                if len(waiting) == len(self.procs):
                    names = {m["name"] for m in waiting}
                    if len(names) != 1:
                        raise BenchError(f"load generators out of step: {names}")
                    on_barrier(names.pop(), waiting)
                    for proc in self.procs:
                        pending[proc.pid] = None
                        try:
                            proc.stdin.write(b"go\n")
                            proc.stdin.flush()
                        except BrokenPipeError:
                            pass   # it died; reported below as "without a result"
            for proc in self.procs:
                proc.wait(10)
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if len(results) != len(self.procs):
            codes = [proc.returncode for proc in self.procs]
            raise BenchError(f"load generator exited {codes} without a result:\n"
                             + "\n".join(tail(p) for p in self.stderr_paths))
        return [results[proc.pid] for proc in self.procs]


def quiesce(server: Server, seconds: float = 10.0) -> None:
    """Wait until the server is idle again (disconnects processed), at most ``seconds``."""
    if not server.pid:
        time.sleep(1.0)
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            before = cpu_seconds(server.pid)
            time.sleep(0.25)
            if (cpu_seconds(server.pid) - before) / 0.25 < 0.05:
                return
        except OSError:
            return


# ---- scenarios ------------------------------------------------------------------------------

class Bench:
    def __init__(self, sizes: dict, cores: tuple, logs: Path, nofile: int):
        self.sizes, self.cores, self.logs, self.nofile = sizes, cores, logs, nofile
        self.pr_base = 1000

    def next_pr_base(self) -> int:
        self.pr_base += 1_000_000   # rooms never shared between scenarios or runs
        return self.pr_base

    def loadgen(self, server: Server, configs: list, on_barrier, timeout: float) -> list:
        configs = [dict(url=server.url, window=CONNECT_WINDOW, **c) for c in configs]
        return Loadgen(configs, self.cores[1], self.logs, self.nofile).run(on_barrier, timeout)

    @staticmethod
    def sampler(server: Server, snaps: dict):
        """A barrier callback that snapshots the server's CPU, RSS and the cores."""
        return lambda name, data: snaps.__setitem__(name, snapshot(server.pid))

    def between(self, server: Server, snaps: dict, start: str, end: str) -> dict:
        return between(snaps[start], snaps[end], (server.core, self.cores[1]))

    @staticmethod
    def loadgen_side(result: dict, phase: str) -> dict:
        stats = result[phase]
        return {"loadgen_cpu": round(stats["cpuPercent"], 1),
                "loadgen_lag_p50_ms": round(stats["lagP50Ms"], 2),
                "loadgen_lag_p99_ms": round(stats["lagP99Ms"], 2),
                "loadgen_lag_max_ms": round(stats["lagMaxMs"], 2)}

    def warm_up(self, server: Server) -> None:
        """A few sockets connect, join, chat and leave, unmeasured: one-time costs (imports,
        JIT) stay out of the figures."""
        self.loadgen(server, [dict(scenario="rooms", sockets=20, roomSize=10,
                                   prBase=self.next_pr_base(), warmup=0.2, duration=0.5)],
                     lambda name, data: None, 60)
        quiesce(server)

    def rooms(self, server: Server) -> dict:
        """Scenarios 1, 2 and 4 on one set of sockets: connect and join, memory, throughput."""
        s = self.sizes
        snaps = {}
        [result] = self.loadgen(
            server, [dict(scenario="rooms", sockets=s["sockets"], roomSize=s["room_size"],
                          prBase=self.next_pr_base(), warmup=s["warmup"],
                          duration=s["duration"])],
            self.sampler(server, snaps),
            timeout=180 + s["duration"])
        out = {
            "sockets": s["sockets"], "joined": result["joined"], "errors": result["errors"],
            "sockets_per_s": round(result["socketsPerSecond"], 1),
            "connect_seconds": round(result["connectSeconds"], 3),
            "connect": {**self.between(server, snaps, "connect:start", "connect:end"),
                        **self.loadgen_side(result, "connect")},
            "deliveries_per_s": round(result["deliveriesPerSecond"], 1),
            "messages_per_s": round(result["messagesPerSecond"], 1),
            "refused": result["refused"],
            "throughput": {**self.between(server, snaps, "throughput:start",
                                          "throughput:end"),
                           **self.loadgen_side(result, "throughput")},
        }
        if "rss_kb" in snaps["connect:start"]:
            before, after = snaps["connect:start"]["rss_kb"], snaps["settled"]["rss_kb"]
            out.update(rss_before_mb=round(before / 1024, 1), rss_after_mb=round(after / 1024, 1),
                       kb_per_socket=round((after - before) / max(result["joined"], 1), 2))
        return out

    def fanout(self, server: Server) -> dict:
        s = self.sizes
        snaps = {}
        [result] = self.loadgen(
            server, [dict(scenario="fanout", members=s["fanout_members"],
                          messages=s["fanout_messages"], intervalMs=s["fanout_interval_ms"],
                          prBase=self.next_pr_base(), drainSeconds=15)],
            self.sampler(server, snaps),
            timeout=180)
        return {
            "members": s["fanout_members"], "joined": result["joined"],
            "errors": result["errors"], "expected": result["expected"],
            "received": result["received"], "late_sends": result["lateSends"],
            **{key: (round(result[src], 3) if result[src] is not None else None)
               for key, src in (("p50_ms", "p50Ms"), ("p90_ms", "p90Ms"), ("p99_ms", "p99Ms"),
                                ("max_ms", "maxMs"), ("mean_ms", "meanMs"))},
            "fanout": {**self.between(server, snaps, "fanout:start", "fanout:end"),
                       **self.loadgen_side(result, "fanout")},
        }

    def idle(self, server: Server) -> dict:
        s = self.sizes
        total = s["idle_sockets"]
        processes = max(1, math.ceil(total / SOCKETS_PER_LOADGEN))
        shares = [total // processes + (1 if i < total % processes else 0)
                  for i in range(processes)]
        snaps = {}
        hold = {}

        def on_barrier(name, data):
            snaps[name] = snapshot(server.pid)
            if name == "connect:end":
                interval = max((d.get("pingIntervalMs") or 0) for d in data) / 1000
                timeout = max((d.get("pingTimeoutMs") or 0) for d in data) / 1000
                # two ping rounds, plus the time a missing pong takes to be noticed
                hold["seconds"] = 2 * interval + timeout + 1
                hold["ping_interval"], hold["ping_timeout"] = interval, timeout
                log(f"  {sum(d['joined'] for d in data)} idle sockets up; holding "
                    f"{hold['seconds']:.0f} s (ping interval {interval:g} s, timeout {timeout:g} s)")
                time.sleep(hold["seconds"])

        results = self.loadgen(
            server, [dict(scenario="idle", sockets=share, roomSize=s["room_size"],
                          prBase=self.next_pr_base(), tag=f"p{number}")
                     for number, share in enumerate(shares)],
            on_barrier, timeout=300 + 3 * 60)
        joined = sum(r["joined"] for r in results)
        reasons = {}
        for r in results:
            for reason, count in r["disconnectReasons"].items():
                reasons[reason] = reasons.get(reason, 0) + count
        errors = {}
        for r in results:
            for kind, count in r["errors"].items():
                errors[kind] = errors.get(kind, 0) + count
        out = {
            "sockets": total, "loadgen_processes": processes, "joined": joined,
            "errors": errors, "failed_to_connect": total - joined,
            "disconnects": sum(r["disconnects"] for r in results),
            "disconnect_reasons": reasons,
            "still_connected": sum(r["stillConnected"] for r in results),
            "min_pings_per_socket": min((r["minPingsPerSocket"] for r in results
                                         if r["minPingsPerSocket"] is not None), default=None),
            **hold,
            "hold": {**self.between(server, snaps, "connect:end", "hold:end"),
                     "loadgen_cpu": round(sum(r["hold"]["cpuPercent"] for r in results), 1),
                     **{f"loadgen_lag_{p}_ms": round(max(r["hold"][f"lag{p.capitalize()}Ms"]
                                                        for r in results), 2)
                        for p in ("p50", "p99", "max")}},
        }
        if "rss_kb" in snaps["connect:start"]:
            before = snaps["connect:start"]["rss_kb"]
            held, after_hold = snaps["connect:end"]["rss_kb"], snaps["hold:end"]["rss_kb"]
            out.update(rss_before_mb=round(before / 1024, 1),
                       rss_held_mb=round((held - before) / 1024, 1),
                       rss_after_hold_mb=round(after_hold / 1024, 1),
                       kb_per_socket=round((held - before) / max(joined, 1), 2))
        return out


def guarded(scenario, server: Server) -> dict:
    """A scenario that overran its time limit is reported, not fatal."""
    try:
        return scenario(server)
    except TimeoutError as error:
        log(f"  {server.name} {scenario.__name__}: {error}")
        return {"error": str(error)}


def wait_for_quiet(max_seconds: float, threshold: float = 25.0) -> dict:
    """Busy% of each core from others' processes, after waiting up to ``max_seconds`` for
    every core to drop to ``threshold``% (0: just measure)."""
    deadline = time.monotonic() + max_seconds
    busy = background_busy(0.5)
    if max_seconds > 0 and max(busy.values()) > threshold:
        log(f"  waiting up to {max_seconds:.0f} s for the other processes to quiet down "
            f"(now {max(busy.values()):.0f}% busy)")
        while max(busy.values()) > threshold and time.monotonic() < deadline:
            busy = background_busy(2.0)
    return busy


def prroom_code() -> str:
    """The checkout's commit, "+changes" when prroom/ differs from it (people commit while a
    benchmark runs; every run records what it measured)."""
    git = lambda *args: subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                                       text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + (
        "+changes" if git("status", "--porcelain", "--", "prroom") else "")


def run_once(bench: Bench, server: Server, scenarios: set, wait_quiet: float) -> dict:
    out = {"background_core_busy": wait_for_quiet(wait_quiet)}
    if isinstance(server, PrroomServer):
        out["prroom_code"] = prroom_code()
    if scenarios & {"rooms", "fanout"}:
        server.start()
        try:
            bench.warm_up(server)
            if "rooms" in scenarios:
                log(f"  {server.name}: connect {bench.sizes['sockets']:,} sockets, then "
                    f"{bench.sizes['duration']:g} s of acked sending")
                out["rooms"] = guarded(bench.rooms, server)
                quiesce(server)
            if "fanout" in scenarios:
                log(f"  {server.name}: fan-out to {bench.sizes['fanout_members']}")
                out["fanout"] = guarded(bench.fanout, server)
        finally:
            server.stop()
    if "idle" in scenarios:
        server.start(idle_ping=bench.sizes["idle_ping"])
        try:
            bench.warm_up(server)
            log(f"  {server.name}: {bench.sizes['idle_sockets']:,} idle sockets")
            out["idle"] = guarded(bench.idle, server)
        finally:
            server.stop()
    return out


# ---- summary --------------------------------------------------------------------------------

def figures(sizes: dict) -> list:
    """(label, scenario, key, format, phase whose CPU names the limit, how runs combine)."""
    return [
        (f"1. connect+join: sockets/s ({sizes['sockets']:,}, rooms of {sizes['room_size']})",
         "rooms", "sockets_per_s", "{:,.0f}", "connect", "median"),
        (f"2. memory: KB per socket ({sizes['sockets']:,} joined)",
         "rooms", "kb_per_socket", "{:,.1f}", None, "median"),
        (f"3. fan-out p50 ms (1 -> {sizes['fanout_members']}, "
         f"{sizes['fanout_messages']} msgs {sizes['fanout_interval_ms']} ms apart)",
         "fanout", "p50_ms", "{:,.2f}", "fanout", "median"),
        ("3. fan-out p99 ms", "fanout", "p99_ms", "{:,.2f}", "fanout", "median"),
        (f"3. fan-out deliveries received (of "
         f"{sizes['fanout_members'] * sizes['fanout_messages']:,}, worst run)",
         "fanout", "received", "{:,.0f}", None, "min"),
        (f"4. deliveries/s ({sizes['sockets'] // sizes['room_size']} rooms x "
         f"{sizes['room_size']}, 1 acked in flight, {sizes['duration']:g} s)",
         "rooms", "deliveries_per_s", "{:,.0f}", "throughput", "median"),
        (f"5. idle {sizes['idle_sockets']:,}: RSS held MB", "idle", "rss_held_mb", "{:,.1f}",
         None, "median"),
        (f"5. idle {sizes['idle_sockets']:,}: KB per socket", "idle", "kb_per_socket",
         "{:,.1f}", None, "median"),
        ("5. idle: sockets lost over 2 pings (worst run)", "idle", "lost", "{:,.0f}",
         None, "max"),
    ]


def value_of(run: dict, scenario: str, key: str):
    result = run.get(scenario) or {}
    if key == "lost" and "joined" in result:
        return result["failed_to_connect"] + result["disconnects"]
    return result.get(key)


def combine(values: list, how: str):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median, "min": min, "max": max}[how](values)


def limit_side(phase: dict) -> str:
    """Which side ran out of CPU in a phase.  A side's use is its process's CPU plus the
    softirq time of its pinned core (on loopback, a sender's packets are processed there).
    A side using >= SATURATED% of a core was the limit; failing that, a side whose core was
    that busy because other processes on the machine took the rest was held back by them
    ("core shared")."""
    sides = []
    for role in ("server", "loadgen"):
        own, core = phase[f"{role}_cpu"], phase[f"{role}_core_busy"]
        used = None if own is None else own + (phase.get(f"{role}_core_softirq") or 0)
        others = core - used if used is not None and core is not None else 0
        if used is not None and used >= SATURATED:
            state = "saturated"
        elif core is not None and core >= SATURATED:
            state = "shared"
        else:
            state = "free"
        shown = "n/a" if own is None else f"{own:.0f}%"
        if others > 10:
            shown += f" (core {core:.0f}% busy)"
        sides.append((role, state, shown))
    saturated = [role for role, state, _ in sides if state == "saturated"]
    shared = [role for role, state, _ in sides if state == "shared"]
    if len(saturated) == 2:
        verdict = "both"
    elif saturated:
        verdict = saturated[0]
    elif shared:
        verdict = " & ".join(shared) + " core shared"
    else:
        verdict = "neither"
    return f"{verdict}: srv {sides[0][2]}, lg {sides[1][2]}"


def phase_medians(runs: list, scenario: str, phase: str) -> dict:
    keys = ("server_cpu", "server_core_busy", "server_core_softirq", "loadgen_cpu",
            "loadgen_core_busy", "loadgen_core_softirq",
            "loadgen_lag_p50_ms", "loadgen_lag_p99_ms", "loadgen_lag_max_ms", "seconds")
    return {key: combine([((run.get(scenario) or {}).get(phase) or {}).get(key)
                          for run in runs], "median") for key in keys}


def summarize(sizes: dict, runs: dict) -> list:
    rows = []
    names = list(runs)
    for label, scenario, key, fmt, phase, how in figures(sizes):
        if not any(scenario in run for name in names for run in runs[name]):
            continue   # not asked for (--scenarios)
        row = {"figure": label, "scenario": scenario, "key": key, "combine": how}
        for name in names:
            values = [value_of(run, scenario, key) for run in runs[name]]
            row[name] = combine(values, how)
            row[f"{name}_runs"] = values
            if phase:
                cpu = phase_medians(runs[name], scenario, phase)
                row[f"{name}_limit"] = limit_side(cpu)
                row[f"{name}_cpu"] = cpu
        for first, second in ratio_pairs(names):
            if row[first] is not None and row[second]:
                row[f"ratio {first}/{second}"] = round(row[first] / row[second], 3)
        if "ratio prroom/peer" in row or len(names) == 2:  # the JSON's historic key
            row["ratio"] = row.get(f"ratio {names[0]}/{names[-1]}")
        rows.append(row)
    return rows


def ratio_pairs(names: list) -> list:
    """Which ratios the table shows: every server against the peer, or first / second."""
    if "peer" in names:
        return [(name, "peer") for name in names if name != "peer"]
    return [(names[0], names[1])] if len(names) == 2 else []


def print_table(rows: list, names: list, sizes: dict) -> None:
    fmt_of = {label: fmt for label, _, _, fmt, _, _ in figures(sizes)}
    pairs = ratio_pairs(names)
    header = ["figure"] + names + [f"ratio {a}/{b}" for a, b in pairs]
    header += [f"limit ({name} run)" for name in names]
    table = []
    for row in rows:
        cells = [row["figure"]]
        for name in names:
            value = row.get(name)
            cells.append("n/a" if value is None else fmt_of[row["figure"]].format(value))
        for a, b in pairs:
            ratio = row.get(f"ratio {a}/{b}")
            cells.append(f"{ratio:.2f}" if ratio is not None else "-")
        cells += [row.get(f"{name}_limit", "-") for name in names]
        table.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + table) for i in range(len(header))]
    numeric = range(1, 1 + len(names) + len(pairs))   # values and the ratios

    def line(cells):
        return " | ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w)
                          for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(header))
    print("-|-".join("-" * w for w in widths))
    for cells in table:
        print(line(cells))


def print_detail(runs: dict) -> None:
    print("\nCPU per measured phase (median of runs; % of one core; lag = load generator "
          "event-loop delay beyond its 10 ms timer):")
    header = ["phase", "server", "server cpu%", "server core busy%", "loadgen cpu%",
              "loadgen core busy%", "lag p50 ms", "lag p99 ms", "lag max ms"]
    table = []
    for scenario, phase in (("rooms", "connect"), ("fanout", "fanout"),
                            ("rooms", "throughput"), ("idle", "hold")):  # in table order
        for name, name_runs in runs.items():
            if not any(scenario in run for run in name_runs):
                continue
            m = phase_medians(name_runs, scenario, phase)
            show = lambda v: "n/a" if v is None else f"{v:,.1f}"
            table.append([f"{scenario}/{phase}", name] + [show(m[k]) for k in (
                "server_cpu", "server_core_busy", "loadgen_cpu", "loadgen_core_busy",
                "loadgen_lag_p50_ms", "loadgen_lag_p99_ms", "loadgen_lag_max_ms")])
    widths = [max(len(r[i]) for r in [header] + table) for i in range(len(header))]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for cells in table:
        print(" | ".join(c.ljust(w) if i < 2 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))))


# phases whose figures are timings, which other processes on the machine would distort
TIMED_PHASES = {"rooms": ("connect", "throughput"), "fanout": ("fanout",)}


def problems(runs: dict) -> list:
    """Anything that makes a figure suspect: refused joins or messages, lost sockets, errors."""
    found = []
    for name, name_runs in runs.items():
        for number, run in enumerate(name_runs, 1):
            for scenario, result in run.items():
                if not isinstance(result, dict) or scenario == "background_core_busy":
                    continue
                where = f"{name} run {number} {scenario}"
                if "error" in result:
                    found.append(f"{where}: {result['error']}")
                    continue
                wanted = result.get("sockets", result.get("members"))
                if wanted is not None and result.get("joined", wanted) < wanted:
                    found.append(f"{where}: only {result['joined']} of {wanted} sockets joined")
                if result.get("refused"):
                    found.append(f"{where}: {result['refused']} messages refused (rate limits?)")
                if result.get("received", 0) < result.get("expected", 0):
                    found.append(f"{where}: {result['received']} of {result['expected']} "
                                 "deliveries arrived")
                if result.get("errors"):
                    found.append(f"{where}: errors {result['errors']}")
            found += [f"{name} run {number} {noise}" for noise in disturbed(run)]
        codes = sorted({run["prroom_code"] for run in name_runs if "prroom_code" in run})
        if len(codes) > 1:
            found.append(f"{name}: the code changed between runs ({', '.join(codes)})")
    return found


def disturbed(run: dict) -> list:
    """The timed phases of a run during which other processes on the machine took more than
    15% of the server's or the load generator's core."""
    found = []
    for scenario, phases in TIMED_PHASES.items():
        for phase in phases:
            stats = (run.get(scenario) or {}).get(phase) or {}
            taken = []
            for role in ("server", "loadgen"):
                core, own = stats.get(f"{role}_core_busy"), stats.get(f"{role}_cpu")
                if core is not None and own is not None:
                    others = core - own - (stats.get(f"{role}_core_softirq") or 0)
                    if others > 15:
                        taken.append(f"{others:.0f}% of the {role}'s core")
            if taken:
                found.append(f"{scenario}/{phase}: other processes took " + " and ".join(taken))
    return found


# ---- main -----------------------------------------------------------------------------------

def versions(peer_dir) -> dict:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("prroom", "gunicorn", "gevent", "gevent-websocket", "python-socketio",
                    "python-engineio", "Flask-SocketIO", "Flask", "wsaccel"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True)
    found["node"] = node.stdout.strip()
    for label, path in (("socket.io-client", LOADGEN_DIR / "node_modules/socket.io-client"),
                        ("peer socket.io", peer_dir / "node_modules/socket.io" if peer_dir else None)):
        try:
            found[label] = json.loads((path / "package.json").read_text())["version"]
        except (OSError, TypeError, ValueError):
            pass
    found["prroom code at the end"] = prroom_code()
    return found


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Load benchmark: prroom under gunicorn (and the Node peer with --peer).")
    parser.add_argument("--quick", action="store_true",
                        help="small counts, 1 run, well under a minute (CI's regression guard)")
    parser.add_argument("--peer", action="store_true",
                        help="also measure the Node reference peer, side by side")
    parser.add_argument("--plain", action="store_true",
                        help="also measure the plain Flask-SocketIO stack (bench/plain_app.py)")
    parser.add_argument("--peer-dir", type=Path, default=DEFAULT_PEER_DIR,
                        help=f"the peer's sources (default {DEFAULT_PEER_DIR})")
    parser.add_argument("--url", help="measure this already running server instead of "
                        "starting prroom (its rate limits must allow the load)")
    parser.add_argument("--server-pid", type=int,
                        help="with --url: the process whose CPU and RSS to read")
    parser.add_argument("--runs", type=int, help="runs per figure, median reported "
                        "(default 3, --quick 1)")
    parser.add_argument("--retries", type=int, help="runs again, at most this many times, a "
                        "run whose timings other processes disturbed (default 2, --quick 0)")
    parser.add_argument("--duration", type=float, help="seconds of scenario 4 (default 10, "
                        "--quick 3)")
    parser.add_argument("--idle-sockets", type=int, help="sockets of scenario 5 "
                        "(default 10,000, --quick 1,000)")
    parser.add_argument("--scenarios", default="rooms,fanout,idle",
                        help="comma-separated subset of rooms (1, 2, 4), fanout (3), idle (5)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the prroom server (repeatable)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="on a shared machine: before each run, wait up to SECONDS for "
                        "other processes to leave the cores below 25%% busy")
    parser.add_argument("--out", type=Path, help="JSON results file "
                        "(default bench/results/<timestamp>.json)")
    args = parser.parse_args(argv)
    scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    if not scenarios or scenarios - {"rooms", "fanout", "idle"}:
        parser.error("--scenarios takes rooms, fanout, idle")
    args.scenarios = scenarios
    if args.server_pid and not args.url:
        parser.error("--server-pid goes with --url")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes KEY=VALUE")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("runs", "retries", "duration", "idle_sockets"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            print(f"bench: {tool} is needed (Node 18+)", file=sys.stderr)
            return 1

    allowed = sorted(os.sched_getaffinity(0))
    cores = (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)
    per_loadgen = min(sizes["idle_sockets"], SOCKETS_PER_LOADGEN)
    nofile = max(per_loadgen, sizes["sockets"], sizes["fanout_members"]) + 200
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    needed_by_server = max(sizes["sockets"], sizes["idle_sockets"]) + 1100
    if hard != resource.RLIM_INFINITY and hard < max(nofile, needed_by_server):
        print(f"bench: the open-file hard limit ({hard}) is below the "
              f"{max(nofile, needed_by_server)} needed; raise it (ulimit -Hn) or pass a "
              f"smaller --idle-sockets", file=sys.stderr)
        return 1

    started_at = datetime.datetime.now()
    out_path = args.out or (BENCH / "results" /
                            f"{started_at:%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}.json")
    if not (LOADGEN_DIR / "node_modules" / "socket.io-client").is_dir():
        log("npm ci in bench/loadgen")
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=LOADGEN_DIR, capture_output=True, text=True)
        if done.returncode:
            print(f"bench: npm ci in bench/loadgen failed:\n{done.stderr}", file=sys.stderr)
            return 1

    extra_env = dict(item.split("=", 1) for item in args.server_env)
    with tempfile.TemporaryDirectory(prefix="prroom-bench-") as workdir:
        workdir = Path(workdir)
        logs = workdir / "logs"
        logs.mkdir()
        servers = []
        try:
            if args.url:
                servers.append(ExternalServer(args.url, args.server_pid))
            else:
                servers.append(PrroomServer(cores[0], logs,
                                            max(sizes["sockets"], sizes["idle_sockets"],
                                                sizes["fanout_members"]), extra_env))
            if args.plain and not args.url:
                servers.append(PlainServer(cores[0], logs, servers[0].max_sockets, {}))
            if args.peer:
                servers.append(PeerServer(args.peer_dir, cores[0], logs, workdir))
            bench = Bench(sizes, cores, logs, nofile)
            load_before = os.getloadavg()
            idle_busy = background_busy(1.0)
            pinning = ("taskset" if shutil.which("taskset") else "sched_setaffinity") \
                if cores[1] is not None else "none: one core"
            log(f"cores: server {cores[0]}, load generator {cores[1]} (pinning: {pinning}); "
                f"load average {load_before[0]:.2f}; busy before we start: "
                + ", ".join(f"core {c} {b:.0f}%" for c, b in idle_busy.items()))
            if max(idle_busy.values()) > 10:
                log("warning: other processes are using the CPU; timings may be disturbed "
                    "(see Problems at the end)")
            runs = {server.name: [] for server in servers}
            discarded = {server.name: [] for server in servers}
            for number in range(sizes["runs"]):
                for server in servers:   # interleaved: background noise hits both alike
                    for attempt in range(1 + sizes["retries"]):
                        log(f"run {number + 1}/{sizes['runs']}: {server.name}"
                            + (f" (again, {attempt + 1})" if attempt else ""))
                        run = run_once(bench, server, args.scenarios, args.wait_quiet)
                        noise = disturbed(run)
                        if not noise or attempt == sizes["retries"]:
                            break
                        log(f"  disturbed, run again: {'; '.join(noise)}")
                        discarded[server.name].append(run)
                    runs[server.name].append(run)
        except BenchError as error:
            print(f"bench: {error}", file=sys.stderr)
            return 1
        finally:
            for server in servers:
                server.stop()
        peer_dir = servers[-1].dir if args.peer else None
        meta = {
            "started": started_at.isoformat(timespec="seconds"),
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join(["python", "bench/run.py"] + (sys.argv[1:] if argv is None
                                                             else list(argv))),
            "machine": {"cpus": os.cpu_count(), "allowed_cores": allowed,
                        "server_core": servers[0].core, "loadgen_core": cores[1],
                        "pinning": pinning,
                        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                        "core_busy_before_start": idle_busy,
                        "kernel": platform.release()},
            "versions": versions(peer_dir),
            "sizes": sizes,
            "server_env": {"rate limits": HIGH, "PRROOM_LOG_LEVEL": "warning",
                           "PRROOM_ACCESS_LOG": "(off)", **extra_env},
            "saturated_cpu_percent": SATURATED,
        }
    rows = summarize(sizes, runs)
    names = list(runs)
    print()
    print_table(rows, names, sizes)
    print_detail(runs)
    trouble = problems(runs)
    if any(discarded.values()):
        print("\nRuns done again because other processes disturbed them: " + ", ".join(
            f"{name} {len(runs_)}" for name, runs_ in discarded.items()) + " (in the JSON)")
    if trouble:
        print("\nProblems (figures above may be off):\n  " + "\n  ".join(trouble))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps({"meta": meta, "summary": rows, "problems": trouble,
                                    "runs": runs, "discarded_runs": discarded}, indent=1))
    print(f"\nJSON: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
