#!/usr/bin/env python3
"""Instructions per WebSocket connect+join, and per close, in prroom's real server: figures
that two revisions can be compared by on a noisy machine.

    python bench/connect_cost.py [--base REV|DIR] [--branch REV|DIR] [--sockets N]
                                 [--room-size N] [--repeat K] [--close]

``bench/run.py`` times the connect+join scenario: on a shared virtual machine its figure
moves by a tenth from one run to the next, so a change worth a few per cent cannot be seen
there.  This script counts instead.  ``gunicorn wsgi:app`` of a tree, with the tree's own
settings, runs under valgrind's cachegrind (no cache simulation), and npm socket.io-client
(``bench/loadgen/connects.js``) opens sockets over WebSocket, each joining a room of
``--room-size`` with an ack, as the rooms scenario connects but one at a time (so that runs
write in the same batches, as far as timing lets them).  Then the worker is made to exit at
once (``os._exit`` on SIGUSR2, a hook of this script's own config file), so that its count
holds the connects and nothing after them: accepting each connection, its HTTP upgrade
request, the Engine.IO handshake, the Socket.IO CONNECT, the join with its announcements
and ack, and their writes.
Counted with ``--sockets`` sockets and with twice as many, the difference divided by
``--sockets`` is what one connect+join costs the worker, as ``bench/run.py`` times it.

``--close`` also counts runs in which the client closes every socket and the worker stops as
it does in production: the difference from the first figure is what a connection's end
costs (its close frame, the session's end, the room's "left" announcements).

Not in it: the kernel's work (system calls are counted as the instructions that make
them), and what caches and branch prediction do to time.  Where timing drives the work (the
event loop's turns, its timers, slowed by valgrind), runs of one tree spread by a few per
cent: a change must be larger than that to show.

Each side is a tree, as in ``bench/compare.py``: a directory, or a git revision checked out
into a temporary worktree; ``--branch`` defaults to this working tree.  Needs valgrind
(Debian: ``apt-get install valgrind``) and the load generator's npm modules
(``npm ci`` in ``bench/loadgen``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

from harness.ab_runs import Tree, print_counts, with_trees
from harness.base import BenchError, log
from harness.processes import PrroomServer, find_gunicorn, free_port, wait_http

#: "==PID== I refs: N" lines of the processes valgrind ran.
_REFS = re.compile(r"==(\d+)==\s+I\s+refs:\s+([\d,]+)")
#: Seconds the server may take to start and to stop under valgrind.
START_SECONDS, STOP_SECONDS = 240.0, 120.0


def server_environment(tree: Tree, port: int, sockets: int) -> Dict[str, str]:
    """The settings ``bench/run.py`` gives prroom (:class:`PrroomServer`), ``tree`` first on
    the import path, one string hashing for every run (so set and dict layouts are the same),
    and no Engine.IO pings while counting (slowed by valgrind, a run outlasts a ping
    interval, and the longer run would count more pings)."""
    server = PrroomServer(None, Path(), sockets, {"PRROOM_PING_INTERVAL": "3600"})
    return {**server.environment(port, None), "PYTHONHASHSEED": "0",
            "PYTHONPATH": tree.environment()["PYTHONPATH"]}


#: The config file the measured server runs with: the tree's settings, and a way to make
#: its worker exit at once, counted so far (valgrind reports at any exit but SIGKILL).
CONFIG = """\
import os as _os
import signal as _signal

from prroom.gunicorn_config import *  # noqa: F401,F403 - the tree's own settings
from prroom.gunicorn_config import post_worker_init as _post_worker_init


def post_worker_init(worker):
    _post_worker_init(worker)
    _signal.signal(_signal.SIGUSR2, lambda *_: _os._exit(0))
"""


#: The command the server runs under: cachegrind, counting instructions only.
VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]


def worker_instructions(tree: Tree, sockets: int, room_size: int, close: bool,
                        config: Path) -> int:
    """Instructions of the gunicorn worker of ``tree`` once it served ``sockets``
    connect+joins (and, with ``close``, their closes and its own stop)."""
    worker, stderr = serve(tree, sockets, room_size, close, config, VALGRIND)
    counts = instruction_counts(stderr)
    if worker not in counts:
        raise BenchError(f"{tree.side}: no count for the worker: {stderr.strip()[-800:]}")
    return counts[worker]


def instruction_counts(stderr: str) -> Dict[int, int]:
    """Each process's instructions, by pid, from valgrind's summaries in ``stderr``."""
    return {int(found[1]): int(found[2].replace(",", "")) for found in _REFS.finditer(stderr)}


def serve(tree: Tree, sockets: int, room_size: int, close: bool, config: Path,
          prefix: List[str]) -> Tuple[int, str]:
    """Run ``tree``'s server under ``prefix`` for ``sockets`` connect+joins (then their
    closes, with ``close``; else its worker exits at once after them); the worker's pid and
    the server's stderr."""
    port = free_port()
    command = [*prefix, sys.executable, find_gunicorn(), "-c", str(config), "wsgi:app"]
    proc = subprocess.Popen(command, cwd=tree.path, env=server_environment(tree, port, sockets),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, START_SECONDS)
        worker = _worker_of(proc.pid)
        client = subprocess.Popen(
            ["node", str(Path(__file__).parent / "loadgen" / "connects.js"),
             json.dumps({"url": f"http://127.0.0.1:{port}", "sockets": sockets,
                         "roomSize": room_size, "window": 1, "hold": not close})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None and client.stdin is not None
        joined = client.stdout.readline()
        if not close:
            os.kill(worker, signal.SIGUSR2)  # counted up to here
        client.stdin.write("\n")
        client.stdin.close()
        client.stdout.read()
        client.wait(timeout=600)
        if client.returncode or f'"joined":{sockets}' not in joined:
            raise BenchError(f"connects failed: {joined.strip()}")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=STOP_SECONDS)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    # held: the master may find the worker it started in place of the one that exited still
    # booting when told to stop, and say so in its exit status
    if close and proc.returncode:
        raise BenchError(f"{tree.side}: the server failed: {stderr.strip()[-800:]}")
    return worker, stderr


def _worker_of(master: int) -> int:
    """The pid of the gunicorn worker ``master`` started."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.2)
    raise BenchError("the gunicorn master started no worker")


def per_socket(tree: Tree, args: argparse.Namespace, close: bool, config: Path) -> float:
    """Instructions one connect+join (and with ``close`` its close) costs ``tree``'s worker."""
    fewer = worker_instructions(tree, args.sockets, args.room_size, close, config)
    more = worker_instructions(tree, 2 * args.sockets, args.room_size, close, config)
    counted: int = args.sockets
    return (more - fewer) / counted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="compare with this revision or directory")
    parser.add_argument("--branch", help="the tree measured (default: this working tree)")
    parser.add_argument("--sockets", type=int, default=400,
                        help="sockets counted (default 400)")
    parser.add_argument("--room-size", type=int, default=10, help="sockets per room (10)")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per side")
    parser.add_argument("--close", action="store_true",
                        help="also count each connection's close")
    args = parser.parse_args()
    kinds = ["connect+join"] + (["close"] if args.close else [])

    def measure(trees: List[Tree]) -> None:
        figures: Dict[str, Dict[str, List[float]]] = {
            tree.side: {kind: [] for kind in kinds} for tree in trees}
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="prroom-connect-cost-") as temp:
            config = Path(temp) / "gunicorn_counted.py"
            config.write_text(CONFIG)
            for _ in range(args.repeat):
                for tree in trees:
                    joins = per_socket(tree, args, False, config)
                    got = {"connect+join": joins}
                    if args.close:
                        got["close"] = per_socket(tree, args, True, config) - joins
                    for kind, value in got.items():
                        figures[tree.side][kind].append(value)
                    log(f"{tree.side} ({tree.describe()}): " + ", ".join(
                        f"{value:,.0f} per {kind}" for kind, value in got.items()))
        print(f"\ninstructions of the worker per WebSocket socket (rooms of "
              f"{args.room_size}; {args.sockets:,} counted; "
              f"{time.monotonic() - started:.0f} s):")
        for kind in kinds:
            print(f"  {kind}:")
            print_counts(trees, {side: got[kind] for side, got in figures.items()}, "    ")
    return with_trees("connect_cost", args.base, args.branch, measure)


if __name__ == "__main__":
    sys.exit(main())
