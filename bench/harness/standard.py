"""The standard benchmark: every server in turn through the five scenarios, runs repeated
and disturbed runs done again, then the table and the JSON."""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from . import machine as machine_info
from .base import BENCH, HIGH, SATURATED, BenchError, Layout, Sizes, log
from .processes import ExternalServer, PeerServer, PlainServer, PrroomServer, Server, find_gunicorn
from .report import (
    print_against_peer,
    print_detail,
    print_machine,
    print_side_by_side,
    print_table,
    versions,
    write_json,
)
from .sampling import background_busy
from .scenarios import Bench, run_once
from .side_by_side import rounds_of
from .stats import Runs, disturbed, problems, summarize


def servers_of(args: argparse.Namespace, sizes: Sizes, layout: Layout, logs: Path,
               workdir: Path) -> List[Server]:
    """The servers this run measures, in turn: prroom (or --url), --plain, --peer."""
    servers: List[Server] = []
    max_sockets = max(sizes["sockets"], sizes["idle_sockets"], sizes["fanout_members"])
    core = layout.server_core(0)
    if args.url:
        servers.append(ExternalServer(args.url, args.server_pid))
    else:
        servers.append(PrroomServer(core, logs, max_sockets, dict(args.server_env)))
        if args.recovery:
            servers.append(PrroomServer(core, logs, max_sockets, {
                **dict(args.server_env), "PRROOM_RECOVERY_WINDOW": f"{args.recovery:g}"},
                name="prroom+recovery"))
    if args.plain and not args.url:
        servers.append(PlainServer(core, logs, max_sockets, {}))
    if args.peer:
        servers.append(PeerServer(args.peer_dir, core, logs, workdir))
    return servers


def pinning(layout: Layout) -> str:
    """How processes are pinned, for the log and the JSON."""
    if not layout.pinned:
        return "none: one core"
    return "taskset" if shutil.which("taskset") else "sched_setaffinity"


def run_standard(args: argparse.Namespace, sizes: Sizes, layout: Layout, nofile: int,
                 command: str) -> int:
    """Measure every server; print the figures and write the JSON.  Returns the exit code."""
    started_at = datetime.datetime.now()
    out_path = args.out or (BENCH / "results" /
                            f"{started_at:%Y%m%d-%H%M%S}{'-quick' if args.quick else ''}.json")
    runs: Runs = {}
    discarded: Runs = {}
    side_by_side: List[Dict[str, Any]] = []
    described = machine_info.describe(None if args.url else find_gunicorn())
    for line in machine_info.lines(described):
        log(line)
    with tempfile.TemporaryDirectory(prefix="prroom-bench-") as tmp:
        workdir = Path(tmp)
        logs = workdir / "logs"
        logs.mkdir()
        servers: List[Server] = []
        try:
            servers = servers_of(args, sizes, layout, logs, workdir)
            bench = Bench(sizes, layout, logs, nofile)
            load_before = os.getloadavg()
            idle_busy = background_busy(1.0)
            log(f"cores: {layout.describe()} (pinning: {pinning(layout)}); "
                f"{layout.loadgens} load generator process(es) for rooms; load average "
                f"{load_before[0]:.2f}; busy before we start: "
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
            peer_server = next((s for s in servers if isinstance(s, PeerServer)), None)
            if peer_server is not None and not args.url and sizes["side_by_side"]:
                # the rooms' CPU figures, the fan-out's latency, the idle sockets' CPU and
                # memory, each side by side
                for shape, scenario in (("peer", "rooms"), ("fanout", "fanout"),
                                        ("idle", "idle")):
                    if scenario in args.scenarios:
                        side_by_side.append(rounds_of(shape, layout, logs, sizes, nofile,
                                                      dict(args.server_env), peer=peer_server))
        except BenchError as error:
            print(f"bench: {error}", file=sys.stderr)
            return 1
        finally:
            for server in servers:
                server.stop()
        peer = next((s for s in servers if isinstance(s, PeerServer)), None)
        meta = {
            "started": started_at.isoformat(timespec="seconds"),
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": command,
            "client": layout.client,
            "machine": {**machine(layout, load_before, idle_busy, servers[0].core),
                        **described},
            "versions": versions(peer.dir if peer else None),
            "sizes": sizes,
            "server_env": {"rate limits": HIGH, "PRROOM_LOG_LEVEL": "warning",
                           "PRROOM_ACCESS_LOG": "(off)", **dict(args.server_env)},
            "saturated_cpu_percent": SATURATED,
        }
    rows = summarize(sizes, runs)
    print()
    print_machine(machine_info.lines(described) + [f"cores: {layout.describe()}"])
    print()
    print_table(rows, list(runs), sizes)
    print_against_peer(rows, list(runs), sizes, side_by_side)
    for result in side_by_side:
        print_side_by_side(result)
    print_detail(runs)
    trouble = problems(runs)
    if any(discarded.values()):
        print("\nRuns done again because other processes disturbed them: " + ", ".join(
            f"{name} {len(runs_)}" for name, runs_ in discarded.items()) + " (in the JSON)")
    if trouble:
        print("\nProblems (figures above may be off):\n  " + "\n  ".join(trouble))
    write_json(out_path, {"meta": meta, "summary": rows, "problems": trouble, "runs": runs,
                          "discarded_runs": discarded, "side_by_side": side_by_side})
    return 0


def machine(layout: Layout, load_before: Any, idle_busy: Dict[int, float],
            server_core: Any) -> Dict[str, Any]:
    """The machine's part of the JSON's meta."""
    return {"cpus": os.cpu_count(), "allowed_cores": layout.allowed,
            "server_core": server_core, "loadgen_core": layout.loadgen_cores[0],
            "loadgen_cores": layout.loadgen_cores, "loadgen_processes": layout.loadgens,
            "pinning": pinning(layout), "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "core_busy_before_start": idle_busy,
            "kernel": platform.release()}
