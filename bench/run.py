#!/usr/bin/env python3
"""Load benchmark for prroom, optionally side by side with the Node reference peer and the
plain Flask-SocketIO stack; or (``--cluster``) standalone vs clustered prroom processes.

    python bench/run.py [--quick] [--peer [--peer-dir DIR]] [--plain]
                        [--url URL [--server-pid PID]] [--runs K] [--loadgens K]
                        [--scenarios rooms,fanout,idle] [--wait-quiet SECONDS]
                        [--server-core CORE] [--clients socket.io|wire]
                        [--out bench/results/NAME.json]
    python bench/run.py --cluster [--quick] [--processes 2,3,4] [--no-observer] [--runs K]

It starts prroom exactly as production runs it (``gunicorn -c gunicorn.conf.py wsgi:app``
from the repository root) with rate limits raised out of the load generator's way and
logging at ``warning``; with ``--peer`` also the Node peer (a copy of ``--peer-dir``,
default $PRROOM_PEER_DIR or ../shared/peer beside the checkout, ``npm ci``,
``node server.js``); with ``--plain`` the plain stack (``bench/plain_app.py``).  Given
``--url`` it measures a server that is already running instead.  The load comes from
``bench/loadgen/loadgen.js``: npm socket.io-client 4.8 over WebSocket, what browsers run;
with ``--clients wire``, ``bench/loadgen/wire.js``, a minimal Socket.IO client over npm ws
that puts the same frames on the wire with less of the load generator's CPU (on two cores,
socket.io-client's load generator runs out of its core in scenario 4 before the server).

Scenarios (full sizes; ``--quick`` uses smaller ones and finishes well under a minute):

1. connections opened per second: 2,000 sockets, each joining a room of 10 (join acked);
2. memory per connected socket: worker RSS growth over those 2,000 sockets;
3. fan-out latency: one sender to a room of 500, 200 messages 10 ms apart, p50/p99 of
   receive - send time over all 100,000 deliveries;
4. delivered messages per second: 200 rooms x 10 members (the sockets of 1), each member
   sending with one acked message in flight, for 10 s;
5. 10,000 idle connections: memory held, and sockets lost over two ping intervals (the
   servers run with a 5 s ping interval and 5 s ping timeout for this one).

Beside each rate it reports what it cost the server: CPU ms per connect+join, CPU us per
delivery (scenarios 3 and 4), % of a core per 1,000 idle sockets.  Each run starts fresh
servers; a figure is the median of ``--runs`` runs, servers taking turns; a run whose timed
phases other processes disturbed is done again, at most ``--retries`` times.  With three or
more cores, two load generator processes on cores of their own share scenarios 1-5.
``--server-core`` moves the server to another core (the load generator to the others).
``--cluster``: see bench/harness/cluster.py.  Prints the CPU model, the kernel and the
server's Python build above the tables, the peer's absolute figures beside each ratio with
whether issue 26's targets hold, and writes JSON (those too) to ``bench/results/``.
Exits 1 only when a server or the load generator cannot run at all, never because of a
figure.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

from harness.base import (
    CLIENTS,
    FULL,
    LOADGEN_DIR,
    QUICK,
    SOCKETS_PER_LOADGEN,
    BenchError,
    Layout,
    Sizes,
    allowed_cores,
    log,
)
from harness.cluster import run_cluster
from harness.processes import resolve_peer_dir
from harness.standard import run_standard


def parse_args(argv: List[str]) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(
        description="Load benchmark: prroom under gunicorn (and the Node peer with --peer).")
    parser.add_argument("--quick", action="store_true",
                        help="small counts, 1 run, well under a minute (CI's regression guard)")
    parser.add_argument("--peer", action="store_true",
                        help="also measure the Node reference peer, side by side")
    parser.add_argument("--plain", action="store_true",
                        help="also measure the plain Flask-SocketIO stack (bench/plain_app.py)")
    parser.add_argument("--peer-dir", type=Path,
                        help="the peer's sources (default $PRROOM_PEER_DIR, else "
                        "../shared/peer beside the checkout when it exists)")
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
    parser.add_argument("--sockets", type=int, help="sockets of scenarios 1, 2, 4 "
                        "(default 2,000, --quick 400)")
    parser.add_argument("--idle-sockets", type=int, help="sockets of scenario 5 "
                        "(default 10,000, --quick 1,000)")
    parser.add_argument("--fanout-ack", action="store_true",
                        help="the fan-out's sender asks an ack for each message, as the chat "
                             "page does (clustered, its ack waits for Redis's reply)")
    parser.add_argument("--scenarios", default="rooms,fanout,idle",
                        help="comma-separated subset of rooms (1, 2, 4), fanout (3), idle (5)")
    parser.add_argument("--side-by-side", type=int, metavar="ROUNDS",
                        help="with --peer and the rooms scenario, or --cluster: rounds in "
                        "which the two sides (prroom and the peer; clustered and standalone) "
                        "run at once on the server core, for CPU ratios a drifting machine "
                        "cannot move (default 3, --quick 1; 0: none)")
    parser.add_argument("--server-core", type=int, metavar="CORE",
                        help="the core the server runs on (default the first allowed one); "
                        "the load generator takes the others: on 2 cores, --server-core 1 "
                        "swaps the two, to see whether a ratio depends on the placement")
    parser.add_argument("--clients", choices=CLIENTS, default=CLIENTS[0],
                        help="the load generator's clients: npm socket.io-client (default), or "
                        "wire.js's minimal client over npm ws (less load generator CPU per "
                        "delivery: on two cores, the server becomes the rooms scenario's limit)")
    parser.add_argument("--loadgens", type=int, help="load generator processes of the rooms "
                        "scenario (default 2 with 3+ cores, each on a core of its own; else 1)")
    parser.add_argument("--recovery", type=float, metavar="SECONDS",
                        help="also measure prroom with PRROOM_RECOVERY_WINDOW=SECONDS, side by "
                        "side (with --cluster: one clustered process, and Redis memory per "
                        "buffered packet)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the prroom server (repeatable)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="on a shared machine: before each run, wait up to SECONDS for "
                        "other processes to leave the cores below 25%% busy")
    parser.add_argument("--out", type=Path, help="JSON results file "
                        "(default bench/results/<timestamp>.json)")
    cluster = parser.add_argument_group("cluster benchmark")
    cluster.add_argument("--cluster", action="store_true",
                         help="standalone prroom vs clustered processes on a private Redis")
    cluster.add_argument("--processes", help="clustered process counts besides 1 (default "
                         "2,3,4; --quick 2)")
    cluster.add_argument("--no-observer", action="store_true",
                         help="leave out the extra clustered process that hosts no room")
    args = parser.parse_args(argv)
    scenarios = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    if not scenarios or scenarios - {"rooms", "fanout", "idle"}:
        parser.error("--scenarios takes rooms, fanout, idle")
    args.scenarios = scenarios
    if args.server_pid and not args.url:
        parser.error("--server-pid goes with --url")
    if any("=" not in item for item in args.server_env):
        parser.error("--server-env takes KEY=VALUE")
    args.server_env = [tuple(item.split("=", 1)) for item in args.server_env]
    if args.recovery is not None and not 0 < args.recovery <= 3600:
        parser.error("--recovery takes seconds from 0 to 3600 (not 0: that is off)")
    if args.recovery and args.url:
        parser.error("--recovery starts prroom itself: not with --url")
    if args.side_by_side is not None and args.side_by_side < 0:
        parser.error("--side-by-side takes 0 or more rounds")
    if args.loadgens is not None and args.loadgens < 1:
        parser.error("--loadgens takes 1 or more")
    if args.cluster:
        if args.peer or args.plain or args.url:
            parser.error("--cluster measures prroom only: no --peer, --plain or --url")
        try:
            args.processes = sorted({int(n) for n in (args.processes or (
                "2" if args.quick else "2,3,4")).split(",") if n.strip()})
        except ValueError:
            parser.error("--processes takes counts, e.g. 2,3,4")
        if any(n < 2 for n in args.processes):
            parser.error("--processes takes counts of 2 or more (1 is always measured)")
    elif args.processes or args.no_observer:
        parser.error("--processes and --no-observer go with --cluster")
    return args


def sizes_of(args: argparse.Namespace) -> Sizes:
    """The run's sizes: --quick or full, with the options given on top."""
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("runs", "retries", "duration", "sockets", "idle_sockets", "side_by_side"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    sizes["fanout_ack"] = args.fanout_ack
    return sizes


def preflight(sizes: Sizes) -> Optional[int]:
    """Node, npm, the open-file limit and the load generator's modules: the open-file limit
    the load generator processes get, or None (after saying why) when the run cannot go."""
    for tool in ("node", "npm"):
        if not shutil.which(tool):
            print(f"bench: {tool} is needed (Node 18+)", file=sys.stderr)
            return None
    per_loadgen = min(sizes["idle_sockets"], SOCKETS_PER_LOADGEN)
    nofile = max(per_loadgen, sizes["sockets"], sizes["fanout_members"]) + 200
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    needed_by_server = max(sizes["sockets"], sizes["idle_sockets"]) + 1100
    if hard != resource.RLIM_INFINITY and hard < max(nofile, needed_by_server):
        print(f"bench: the open-file hard limit ({hard}) is below the "
              f"{max(nofile, needed_by_server)} needed; raise it (ulimit -Hn) or pass a "
              f"smaller --idle-sockets", file=sys.stderr)
        return None
    if not (LOADGEN_DIR / "node_modules" / "socket.io-client").is_dir():
        log("npm ci in bench/loadgen")
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=LOADGEN_DIR, capture_output=True, text=True)
        if done.returncode:
            print(f"bench: npm ci in bench/loadgen failed:\n{done.stderr}", file=sys.stderr)
            return None
    return nofile


def main(argv: Optional[List[str]] = None) -> int:
    """Run the benchmark the command line asks for; the exit code."""
    given = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(given)
    sizes = sizes_of(args)
    if args.peer:
        try:
            args.peer_dir = resolve_peer_dir(args.peer_dir)
        except BenchError as error:
            print(f"bench: {error}", file=sys.stderr)
            return 1
    nofile = preflight(sizes)
    if nofile is None:
        return 1
    try:
        layout = Layout(allowed_cores(), args.loadgens, args.server_core, args.clients)
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    command = " ".join(["python", "bench/run.py"] + given)
    if args.cluster:
        return run_cluster(args, sizes, layout, nofile, command)
    return run_standard(args, sizes, layout, nofile, command)


if __name__ == "__main__":
    sys.exit(main())
