"""What every part of the benchmark shares: paths, sizes, logging, the fatal error."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
LOADGEN_DIR = BENCH / "loadgen"
PEER_PING_PRELOAD = BENCH / "peer_ping.js"

Sizes = Dict[str, Any]

FULL: Sizes = dict(runs=3, retries=2, sockets=2000, room_size=10, fanout_members=500,
                   fanout_messages=200, fanout_interval_ms=10, duration=10.0, warmup=1.0,
                   idle_sockets=10_000, idle_ping=5.0, side_by_side=3)
QUICK: Sizes = dict(runs=1, retries=0, sockets=400, room_size=10, fanout_members=100,
                    fanout_messages=50, fanout_interval_ms=10, duration=3.0, warmup=0.5,
                    idle_sockets=1000, idle_ping=1.0, side_by_side=1)
SOCKETS_PER_LOADGEN = 5000   # idle scenario: more sockets are split over several processes
CONNECT_WINDOW = 200         # sockets connecting at once, over all load generator processes
SATURATED = 85.0             # CPU% of one core from which a side counts as the limit
HIGH = 1_000_000             # rate limits and bursts: out of the load generator's way
#: The load generator's clients: npm socket.io-client (what browsers run), or wire.js's
#: minimal Socket.IO client over npm ws (the same frames, less load generator CPU).
CLIENTS = ("socket.io", "wire")


def log(message: str) -> None:
    """A progress line on stderr (stdout carries the tables)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    """A server or load generator could not run; the benchmark stops."""


class Layout:
    """Which cores the servers and the load generator processes run on, and which client
    (:data:`CLIENTS`) the load generator runs.

    The load generator gets the last ``loadgens`` allowed cores (at most all but one), the
    servers the others; with one allowed core nothing is pinned.  On 2 cores that is the
    server on the first and one load generator process on the second; with 3 or more, two
    load generator processes on two cores of their own, so that the client side stops being
    the limit of the rooms scenario.
    """

    def __init__(self, allowed: Sequence[int], loadgens: Optional[int] = None,
                 server_core: Optional[int] = None, client: str = CLIENTS[0]) -> None:
        if client not in CLIENTS:
            raise BenchError(f"unknown load generator client {client!r} (one of "
                             f"{', '.join(CLIENTS)})")
        self.client = client
        self.allowed = sorted(allowed)
        if loadgens is None:
            loadgens = 2 if len(self.allowed) >= 3 else 1
        self.loadgens = max(1, loadgens)   # processes of the rooms scenario
        if server_core is not None and server_core not in self.allowed:
            raise BenchError(f"--server-core {server_core} is not one of the allowed cores "
                             f"({','.join(map(str, self.allowed))})")
        if len(self.allowed) < 2:
            self.server_cores: List[Optional[int]] = [None]
            self.loadgen_cores: List[Optional[int]] = [None]
        else:
            # --server-core puts that core first: the servers' share starts there, the load
            # generators take the last of the others (on 2 cores: the two swap)
            order = self.allowed if server_core is None else (
                [server_core] + [c for c in self.allowed if c != server_core])
            own = min(self.loadgens, len(order) - 1)
            self.server_cores = list(order[:-own])
            self.loadgen_cores = list(order[-own:])

    @property
    def pinned(self) -> bool:
        """Whether servers and load generators run on cores of their own."""
        return self.server_cores[0] is not None

    def server_core(self, number: int = 0) -> Optional[int]:
        """The core of the ``number``-th server process (round robin)."""
        return self.server_cores[number % len(self.server_cores)]

    def loadgen_core(self, number: int) -> Optional[int]:
        """The core of the ``number``-th load generator process (round robin)."""
        return self.loadgen_cores[number % len(self.loadgen_cores)]

    def describe(self) -> str:
        """One line for the log."""
        clients = f"clients: {self.client}"
        if not self.pinned:
            return f"one core: nothing pinned; {clients}"
        return (f"servers on core(s) {','.join(map(str, self.server_cores))}, load generator "
                f"on core(s) {','.join(map(str, self.loadgen_cores))}; {clients}")


def allowed_cores() -> List[int]:
    """The cores this process may run on."""
    return sorted(os.sched_getaffinity(0))


def prroom_code() -> str:
    """The checkout's commit, "+changes" when prroom/ differs from it (people commit while a
    benchmark runs; every run records what it measured)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + (
        "+changes" if git("status", "--porcelain", "--", "prroom") else "")
