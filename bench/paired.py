#!/usr/bin/env python3
"""Clustered against standalone in the same seconds: a cluster ratio that a noisy machine
cannot move.

    python bench/paired.py [--shape x1|span] [--rounds N] [--sockets N] [--duration S]

``bench/run.py --cluster`` runs each configuration after the other, about 20 s apart; on a
shared virtual machine whose speed drifts by a fifth or more within minutes, its ratios move
with the drift.  Here the two sides run at once, on the same server core, under one load
generator process per side kept in step at its barriers, so whatever slows the machine
slows both:

* ``x1``: one standalone process and one clustered process; every room lives on one of
  them, alternately (one load generator process);
* ``span``: two clustered processes sharing every room (half of each room's members on
  each) beside two standalone processes with the rooms spread over them (its control);
  one load generator process per side.

Each round starts fresh processes (and the private Redis once); the figure is each side's
CPU µs per delivery over the sending phase (its workers' CPU time over the deliveries
their sockets received), and the ratio clustered / standalone.  Rate-limited and pinned as
``bench/run.py`` does it; Redis shares the servers' core.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

from harness.base import BenchError, Layout, allowed_cores, log
from harness.loadgen import Loadgen
from harness.machine import describe, lines
from harness.processes import PrroomServer, RedisServer, find_gunicorn
from harness.sampling import Snapshot, snapshot

Side = List[PrroomServer]


def start_sides(shape: str, layout: Layout, logs: Path, redis: RedisServer, sockets: int,
                channel: str) -> Dict[str, Side]:
    """The standalone and the clustered processes of one round, started and ready."""
    clustered_env = {"PRROOM_MESSAGE_QUEUE": redis.url, "PRROOM_CHANNEL": channel}
    count = 1 if shape == "x1" else 2
    per_process = sockets // (2 * count) + 200
    core = layout.server_core(0)
    sides = {
        "standalone": [PrroomServer(core, logs, per_process, {}, name=f"s{n + 1}")
                       for n in range(count)],
        "clustered": [PrroomServer(core, logs, per_process, clustered_env, name=f"c{n + 1}")
                      for n in range(count)],
    }
    every = [proc for side in sides.values() for proc in side]
    try:
        for proc in every:
            proc.launch()
        for proc in every:
            proc.wait_ready()
    except BaseException:
        for proc in every:
            proc.stop()
        raise
    return sides


def loadgen_configs(shape: str, sides: Dict[str, Side], sockets: int, pr_base: int,
                    duration: float) -> List[Dict[str, Any]]:
    """The load generator processes' configurations (one per side, except ``x1``'s one)."""
    common = dict(scenario="rooms", roomSize=10, warmup=2, duration=duration)
    if shape == "x1":
        urls = [sides["standalone"][0].url, sides["clustered"][0].url]
        return [dict(common, urls=urls, sockets=sockets, prBase=pr_base)]
    return [dict(common, urls=[p.url for p in sides["clustered"]], spread="span",
                 sockets=sockets // 2, prBase=pr_base),
            dict(common, urls=[p.url for p in sides["standalone"]], sockets=sockets // 2,
                 prBase=pr_base + 1_000_000)]


def one_round(shape: str, layout: Layout, logs: Path, redis: RedisServer, sockets: int,
              duration: float, number: int, nofile: int) -> Dict[str, float]:
    """Each side's µs per delivery in one round."""
    sides = start_sides(shape, layout, logs, redis, sockets, f"paired-{number}")
    try:
        pids = {p.name: p.pid for side in sides.values() for p in side}
        snaps: Dict[str, Snapshot] = {}
        configs = loadgen_configs(shape, sides, sockets, 1000 + number * 10_000_000, duration)
        results = Loadgen(configs, [layout.loadgen_core(0)] * len(configs), logs, nofile).run(
            lambda name, data: snaps.__setitem__(name, snapshot(pids)), 180 + duration)
        delivered: Dict[str, int] = {}
        for result in results:
            for server in result.get("byServer", []):
                delivered[server["url"]] = server["delivered"]
        start, end = snaps["throughput:start"], snaps["throughput:end"]
        figures = {}
        for label, side in sides.items():
            cpu = sum(end["cpu"][p.name] - start["cpu"][p.name] for p in side)
            count = sum(delivered.get(str(p.url), 0) for p in side)
            if not count:
                raise BenchError(f"round {number + 1}: the {label} side delivered nothing")
            figures[label] = cpu / count * 1e6
        return figures
    finally:
        for side in sides.values():
            for proc in side:
                proc.stop()


def run_rounds(args: argparse.Namespace, layout: Layout, logs: Path) -> List[float]:
    """Every round, with one private Redis for all of them; the ratios, in order."""
    ratios: List[float] = []
    redis = RedisServer([c for c in layout.server_cores if c is not None], logs)
    try:
        for number in range(args.rounds):
            figures = one_round(args.shape, layout, logs, redis, args.sockets, args.duration,
                                number, args.sockets + 200)
            ratio = figures["clustered"] / figures["standalone"]
            ratios.append(ratio)
            print(f"round {number + 1}: standalone {figures['standalone']:.2f} µs per "
                  f"delivery, clustered {figures['clustered']:.2f}, clustered / "
                  f"standalone {ratio:.3f}", flush=True)
    finally:
        redis.stop()
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=("x1", "span"), default="x1",
                        help="x1: one clustered process against one standalone; span: two "
                             "clustered processes sharing every room against two standalone")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--sockets", type=int, default=2000,
                        help="sockets of both sides together (default 2,000)")
    parser.add_argument("--duration", type=float, default=10,
                        help="seconds of the sending phase (default 10)")
    args = parser.parse_args()
    layout = Layout(allowed_cores(), 1)
    for line in lines(describe(find_gunicorn())):  # what the figures come from
        print(line)
    log(f"paired {args.shape}: {layout.describe()}; {args.rounds} round(s)")
    try:
        with tempfile.TemporaryDirectory(prefix="prroom-bench-paired-") as tmp:
            ratios = run_rounds(args, layout, Path(tmp))
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    print(f"{args.shape}: clustered / standalone, CPU µs per delivery: median "
          f"{statistics.median(ratios):.3f}, rounds {', '.join(f'{r:.3f}' for r in ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
