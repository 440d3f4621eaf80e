"""The cluster benchmark: standalone prroom vs clustered prroom processes on one Redis.

    python bench/run.py --cluster [--quick] [--processes 2,3,4] [--no-observer]

One run measures, each on fresh processes, the rooms scenario (connect + join, then every
member sending with one acked message in flight) against:

* ``standalone``: one prroom process, no message queue;
* ``cluster x1``: one prroom process with PRROOM_MESSAGE_QUEUE on a private redis-server
  (started here on a free port, ``--save "" --appendonly no``);
* ``cluster xN local``: N processes (each its own gunicorn and port; same Redis, same
  PRROOM_CHANNEL), every room living on one process, rooms spread evenly;
* ``cluster xN span``: the same, every room's members split over two processes;
* ``standalone xN``: the control, N standalone processes (no Redis) with the rooms spread as
  in ``local``.  N processes on the same cores cost more per delivery than one, cluster or
  not (caches, switches); clustered ``local`` against this row, at the same N, is what the
  cluster itself adds.

Clustered configurations run one more process, the *observer*, that hosts no room of the
scenario: what it spends while the others deliver is what a process pays for traffic of
rooms it does not host (per message published, "discarded").  Figures per process:
deliveries/s of its sockets, its CPU% and CPU us per delivery; Redis's CPU per message; and
the deployment's CPU (serving processes + Redis) per delivery, against standalone.  The
benchmark only sets environment variables and measures, so it works whatever the code does
with the channel (one for the deployment, one per room, batched publishing).

Cores: the load generator keeps its own core(s) (see Layout); every server process and Redis
share the others.  On 2 cores that is one core for all of them, so the total cannot grow
with N: read the cost per delivery and what it implies.
"""
from __future__ import annotations

import argparse
import datetime
import math
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import machine as machine_info
from .base import BENCH, CONNECT_WINDOW, BenchError, Layout, Sizes, log, prroom_code
from .cluster_report import print_cluster, summarize_cluster
from .loadgen import Loadgen, Message
from .processes import PrroomServer, RedisServer, find_gunicorn
from .report import print_machine, print_side_by_side, versions, write_json
from .sampling import (
    Snapshot,
    background_busy,
    core_busy,
    cpu_percent,
    quiesce,
    snapshot,
    wait_for_quiet,
)
from .scenarios import loadgen_side, merged_counts, per_unit, split_rooms
from .side_by_side import rounds_of
from .stats import limit_side, result_problems


@dataclass(frozen=True)
class Config:
    """One deployment the rooms scenario runs against."""

    label: str
    processes: int          # processes the scenario's sockets talk to
    clustered: bool
    spread: str = "room"    # "room": each room on one process; "span": on two
    observer: bool = False  # one more clustered process, hosting no room of the scenario
    recovery: float = 0.0   # PRROOM_RECOVERY_WINDOW


def configs_of(processes: Sequence[int], observer: bool,
               recovery: Optional[float] = None) -> List[Config]:
    """standalone, cluster x1 (and with recovery), then local and spanning rooms at each N."""
    found = [Config("standalone", 1, False), Config("cluster x1", 1, True, observer=observer)]
    if recovery:
        found.append(Config("cluster x1 recovery", 1, True, observer=observer,
                            recovery=recovery))
    for n in processes:
        found.append(Config(f"cluster x{n} local", n, True, "room", observer))
        found.append(Config(f"cluster x{n} span", n, True, "span", observer))
        # the control: what sharing the cores with N-1 other processes costs by itself
        found.append(Config(f"standalone x{n}", n, False, "room"))
    return found


def rooms_of(config: Config, rooms: int) -> List[int]:
    """How many rooms have members on each serving process."""
    hosted = [0] * config.processes
    for room in range(rooms):
        hosted[room % config.processes] += 1
        if config.spread == "span" and config.processes > 1:
            hosted[(room + 1) % config.processes] += 1
    return hosted


class ClusterBench:
    """Starts each configuration's processes, runs the scenario, measures every process."""

    def __init__(self, sizes: Sizes, layout: Layout, logs: Path, nofile: int,
                 server_env: Dict[str, str], redis: RedisServer) -> None:
        self.sizes, self.layout, self.logs, self.nofile = sizes, layout, logs, nofile
        self.server_env, self.redis = server_env, redis
        self.pr_base = 1000

    def next_pr_base(self) -> int:
        """A fresh range of pull request ids per scenario."""
        self.pr_base += 1_000_000
        return self.pr_base

    def processes_for(self, config: Config, channel: str) -> List[PrroomServer]:
        """The serving processes, then the observer if any; not started."""
        env = dict(self.server_env)
        if config.clustered:
            env.update(PRROOM_MESSAGE_QUEUE=self.redis.url, PRROOM_CHANNEL=channel)
        if config.recovery:
            env["PRROOM_RECOVERY_WINDOW"] = f"{config.recovery:g}"
        per_process = math.ceil(self.sizes["sockets"] / config.processes) + 100
        names = [f"p{n + 1}" for n in range(config.processes)]
        if config.observer:
            names.append("observer")
        return [PrroomServer(self.layout.server_core(n), self.logs, per_process, env, name=name)
                for n, name in enumerate(names)]

    def loadgen(self, configs: List[Dict[str, Any]], snaps: Dict[str, Snapshot],
                pids: Dict[str, Optional[int]], timeout: float) -> List[Message]:
        """Run the load generator processes, snapshotting every pid at each barrier."""
        window = math.ceil(CONNECT_WINDOW / len(configs))
        cores = [self.layout.loadgen_core(n) for n in range(len(configs))]
        return Loadgen([dict(window=window, **c) for c in configs], cores, self.logs,
                       self.nofile, self.layout.client).run(lambda name, data: snaps.__setitem__(
                           name, snapshot(pids)), timeout)

    def run_config(self, config: Config, channel: str) -> Dict[str, Any]:
        """Fresh processes, a warm-up, the measured scenario, the processes stopped."""
        procs = self.processes_for(config, channel)
        try:
            for proc in procs:
                proc.launch()
            for proc in procs:
                proc.wait_ready()
            self.warm_up(procs)
            result = self.measure(config, procs)
            if config.recovery:
                result["redis_bytes_per_buffered_packet"] = self.redis_bytes_per_packet(channel)
            return result
        except TimeoutError as error:
            log(f"  {config.label}: {error}")
            return {"error": str(error)}
        finally:
            for proc in procs:
                proc.stop()

    def redis_bytes_per_packet(self, channel: str) -> Optional[float]:
        """Redis memory of the rooms' recovery streams per packet they hold."""
        import redis

        client = redis.Redis.from_url(self.redis.url)
        try:
            total = count = 0
            for key in client.scan_iter(f"prroom:{channel}:recovery:room:*", count=1000):
                count += client.xlen(key)
                total += int(client.memory_usage(key, samples=0) or 0)
            return round(total / count, 1) if count else None
        finally:
            client.close()

    def warm_up(self, procs: List[PrroomServer]) -> None:
        """One room on every process (the observer too) connects, chats and leaves."""
        self.loadgen([dict(scenario="rooms", urls=[p.url for p in procs], sockets=10 * len(procs),
                           roomSize=10, prBase=self.next_pr_base(), warmup=0.2, duration=0.5)],
                     {}, {}, 60)
        quiesce([p.pid for p in procs])

    def measure(self, config: Config, procs: List[PrroomServer]) -> Dict[str, Any]:
        """The rooms scenario on the serving processes; every process and Redis sampled."""
        s = self.sizes
        serving = procs[:config.processes]
        pids: Dict[str, Optional[int]] = {p.name: p.pid for p in procs}
        if config.clustered:
            pids["redis"] = self.redis.pid
        shares = split_rooms(s["sockets"], s["room_size"], self.layout.loadgens)
        base = self.next_pr_base()
        snaps: Dict[str, Snapshot] = {}
        results = self.loadgen(
            [dict(scenario="rooms", urls=[p.url for p in serving], spread=config.spread,
                  roomOffset=first, sockets=count, roomSize=s["room_size"], prBase=base + first,
                  tag=f"p{number}", warmup=s["warmup"], duration=s["duration"])
             for number, (count, first) in enumerate(shares)],
            snaps, pids, timeout=180 + s["duration"])
        return self.figures(config, procs, pids, snaps, results)

    def figures(self, config: Config, procs: List[PrroomServer], pids: Dict[str, Optional[int]],
                snaps: Dict[str, Snapshot], results: List[Message]) -> Dict[str, Any]:
        """Rates, CPU and costs of one measured scenario."""
        s = self.sizes
        lg_cores = [self.layout.loadgen_core(n) for n in range(len(results))]
        connect = (snaps["connect:start"], snaps["connect:end"])
        window = (snaps["throughput:start"], snaps["throughput:end"])
        joined = sum(r["joined"] for r in results)
        deliveries = sum(r["deliveriesPerSecond"] for r in results)
        messages = sum(r["messagesPerSecond"] for r in results)
        hosted = rooms_of(config, s["sockets"] // s["room_size"])
        per_process = []
        for number, proc in enumerate(procs):
            row: Dict[str, Any] = {"name": proc.name, "core": proc.core,
                                   "cpu": cpu_percent(*window, proc.name),
                                   "connect_cpu": cpu_percent(*connect, proc.name)}
            if number < config.processes:
                by = [r["byServer"][number] for r in results]
                rate = sum(b["delivered"] / r["throughput"]["seconds"]
                           for b, r in zip(by, results))
                row.update(rooms=hosted[number], sockets=sum(b["sockets"] for b in by),
                           deliveries_per_s=round(rate, 1),
                           cpu_us_per_delivery=per_unit(row["cpu"], 1.0, rate, 1e6))
            else:   # the observer: what traffic of rooms it does not host costs it
                row.update(rooms=0, sockets=0, cpu_us_per_message=per_unit(
                    row["cpu"], 1.0, messages, 1e6))
            per_process.append(row)
        serving = per_process[:config.processes]
        serving_cpu = sum(p["cpu"] or 0 for p in serving)
        redis_cpu = cpu_percent(*window, "redis") if config.clustered else None
        deployment_cpu = serving_cpu + (redis_cpu or 0)
        connect_seconds = connect[1]["t"] - connect[0]["t"]
        connect_cpu = sum(p["connect_cpu"] or 0 for p in serving)
        if config.clustered:
            connect_cpu += cpu_percent(*connect, "redis") or 0
        out: Dict[str, Any] = {
            "sockets": s["sockets"], "joined": joined, "errors": merged_counts(results, "errors"),
            "refused": sum(r["refused"] for r in results),
            "sockets_per_s": round(joined / max(r["connectSeconds"] for r in results), 1),
            "deliveries_per_s": round(deliveries, 1), "messages_per_s": round(messages, 1),
            "serving_cpu": round(serving_cpu, 1),
            "serving_cpu_us_per_delivery": per_unit(serving_cpu, 1.0, deliveries, 1e6),
            "redis_cpu": redis_cpu,
            "redis_cpu_us_per_message": per_unit(redis_cpu, 1.0, messages, 1e6),
            "deployment_cpu_us_per_delivery": per_unit(deployment_cpu, 1.0, deliveries, 1e6),
            "connect_cpu_ms_per_join": per_unit(connect_cpu, connect_seconds, joined, 1e3),
            "processes": per_process,
            "throughput": self.sides(window, {p.name: p.core for p in procs}, pids, results,
                                     lg_cores, "throughput"),
        }
        if config.observer:
            out["observer_cpu"] = per_process[-1]["cpu"]
            out["observer_cpu_us_per_message"] = per_process[-1]["cpu_us_per_message"]
        return out

    def sides(self, window: Tuple[Snapshot, Snapshot], cores_of: Dict[str, Optional[int]],
              pids: Dict[str, Optional[int]], results: List[Message],
              lg_cores: List[Optional[int]], phase: str) -> Dict[str, Any]:
        """Both sides' CPU in a phase, for limit_side: the busiest server core with the CPU
        of our processes on it, and the load generator's busiest core."""
        a, b = window
        cores = self.layout.server_cores
        ours: Dict[Optional[int], float] = {core: 0.0 for core in cores}
        for name in pids:
            cpu = cpu_percent(a, b, name) or 0.0
            if name == "redis":   # it may run on any server core: count it on each evenly
                for core in cores:
                    ours[core] += cpu / len(cores)
            else:
                ours[cores_of[name]] += cpu
        busiest = max(cores, key=lambda core: (core_busy(a, b, core) or (ours[core], 0))[0])
        out: Dict[str, Any] = {"seconds": round(b["t"] - a["t"], 3),
                               "server_cpu": round(ours[busiest], 1),
                               "server_cores_busy": {str(core): core_busy(a, b, core)
                                                     for core in cores}}
        use = core_busy(a, b, busiest)
        if use is not None:
            out["server_core_busy"], out["server_core_softirq"] = use
        out.update(loadgen_side(a, b, results, lg_cores, phase))
        out["limit"] = limit_side(out)
        return out


def disturbed(result: Dict[str, Any]) -> List[str]:
    """Other processes' share (> 15%) of the cores during the measured window."""
    stats = result.get("throughput") or {}
    found = []
    for role in ("server", "loadgen"):
        core, own = stats.get(f"{role}_core_busy"), stats.get(f"{role}_cpu")
        if core is not None and own is not None:
            others = core - own - (stats.get(f"{role}_core_softirq") or 0)
            if others > 15:
                found.append(f"other processes took {others:.0f}% of the {role}'s core")
    return found


def run_cluster(args: argparse.Namespace, sizes: Sizes, layout: Layout, nofile: int,
                command: str) -> int:
    """Every configuration, ``runs`` times, interleaved; tables and JSON.  The exit code."""
    started_at = datetime.datetime.now()
    out_path = args.out or (BENCH / "results" / (f"{started_at:%Y%m%d-%H%M%S}-cluster"
                                                 f"{'-quick' if args.quick else ''}.json"))
    configs = configs_of(args.processes, not args.no_observer, args.recovery)
    runs: Dict[str, List[Dict[str, Any]]] = {c.label: [] for c in configs}
    discarded: Dict[str, List[Dict[str, Any]]] = {c.label: [] for c in configs}
    side_by_side: List[Dict[str, Any]] = []
    busy_before = background_busy(1.0)
    described = machine_info.describe(find_gunicorn())  # what the figures come from
    log(f"cluster benchmark: {layout.describe()}; {len(configs)} configurations x "
        f"{sizes['runs']} run(s); busy before we start: "
        + ", ".join(f"core {c} {b:.0f}%" for c, b in busy_before.items()))
    with tempfile.TemporaryDirectory(prefix="prroom-bench-cluster-") as tmp:
        logs = Path(tmp)
        redis: Optional[RedisServer] = None
        try:
            redis = RedisServer([c for c in layout.server_cores if c is not None], logs)
            bench = ClusterBench(sizes, layout, logs, nofile, dict(args.server_env), redis)
            for number in range(sizes["runs"]):
                for index, config in enumerate(configs):
                    for attempt in range(1 + sizes["retries"]):
                        log(f"run {number + 1}/{sizes['runs']}: {config.label}"
                            + (f" (again, {attempt + 1})" if attempt else ""))
                        wait_for_quiet(args.wait_quiet)
                        result = bench.run_config(
                            config, f"bench-{started_at:%H%M%S}-{number}-{index}-{attempt}")
                        result["prroom_code"] = prroom_code()
                        noise = disturbed(result)
                        if not noise or attempt == sizes["retries"]:
                            break
                        log(f"  disturbed, run again: {'; '.join(noise)}")
                        discarded[config.label].append(result)
                    runs[config.label].append(result)
            if sizes["side_by_side"]:
                for shape in ("x1", "span") if 2 in args.processes else ("x1",):
                    side_by_side.append(rounds_of(shape, layout, logs, sizes, nofile,
                                                  dict(args.server_env), redis=redis))
        except BenchError as error:
            print(f"bench: {error}", file=sys.stderr)
            return 1
        finally:
            if redis is not None:
                redis.stop()
    summary = summarize_cluster(configs, runs)
    print()
    print_machine(machine_info.lines(described) + [f"cores: {layout.describe()}"])
    print_cluster(summary, sizes, layout)
    for result in side_by_side:
        print_side_by_side(result)
    trouble = [problem for label, label_runs in runs.items()
               for number, result in enumerate(label_runs, 1)
               for problem in result_problems(f"{label} run {number}", result)
               + [f"{label} run {number}: {noise}" for noise in disturbed(result)]]
    if trouble:
        print("\nProblems (figures above may be off):\n  " + "\n  ".join(trouble))
    write_json(out_path, {
        "meta": {"started": started_at.isoformat(timespec="seconds"),
                 "finished": datetime.datetime.now().isoformat(timespec="seconds"),
                 "command": command, "client": layout.client, "machine": described,
                 "sizes": sizes,
                 "allowed_cores": layout.allowed,
                 "server_cores": layout.server_cores, "loadgen_cores": layout.loadgen_cores,
                 "core_busy_before_start": busy_before, "versions": versions(None),
                 "server_env": dict(args.server_env)},
        "configs": [asdict(c) for c in configs], "summary": summary, "problems": trouble,
        "runs": runs, "discarded_runs": discarded, "side_by_side": side_by_side})
    return 0
