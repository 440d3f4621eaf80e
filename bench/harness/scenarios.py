"""The standard benchmark's scenarios: what the load generator does, what is sampled when,
and the figures of one run, rates and the server CPU they cost."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from .base import CONNECT_WINDOW, SOCKETS_PER_LOADGEN, Layout, Sizes, log, prroom_code
from .loadgen import Loadgen, Message, OnBarrier, loadgen_cpu
from .processes import PrroomServer, Server
from .sampling import (
    Snapshot,
    core_busy,
    core_speed,
    quiesce,
    server_side,
    snapshot,
    wait_for_quiet,
)

Result = Dict[str, Any]


def split_rooms(sockets: int, room_size: int, parts: int) -> List[Tuple[int, int]]:
    """(sockets, first room) of each of ``parts`` load generator processes: whole rooms
    each, as even as rooms allow; the sockets of a partial last room go to the last one."""
    rooms = sockets // room_size
    parts = max(1, min(parts, rooms or 1))
    shares, first = [], 0
    for number in range(parts):
        count = rooms // parts + (1 if number < rooms % parts else 0)
        shares.append((count * room_size, first))
        first += count
    last_sockets, last_first = shares[-1]
    shares[-1] = (last_sockets + sockets - rooms * room_size, last_first)
    return shares


def merged_counts(results: Sequence[Message], key: str) -> Dict[str, int]:
    """The sum, over processes, of a {kind: count} field of their results."""
    total: Dict[str, int] = {}
    for result in results:
        for kind, count in result[key].items():
            total[kind] = total.get(kind, 0) + count
    return total


def per_unit(cpu_percent: Optional[float], seconds: float, units: float,
             scale: float) -> Optional[float]:
    """CPU time over a phase divided by the work done in it, in 1/scale seconds per unit."""
    if cpu_percent is None or not units:
        return None
    return round(cpu_percent / 100 * seconds / units * scale, 3)


def loadgen_side(a: Snapshot, b: Snapshot, results: Sequence[Message],
                 cores: Sequence[Optional[int]], phase: str) -> Dict[str, Any]:
    """The load generator's side of a phase: CPU% and busy% of its busiest core (the sum of
    its processes there), the worst event-loop lag of any of its processes."""
    per_core = loadgen_cpu(results, cores, phase)

    def busy(core: Optional[int]) -> float:
        use = core_busy(a, b, core)
        return use[0] if use else per_core[core]

    busiest = max(per_core, key=busy)
    out: Dict[str, Any] = {"loadgen_cpu": round(per_core[busiest], 1)}
    use = core_busy(a, b, busiest)
    if use is not None:
        out["loadgen_core_busy"], out["loadgen_core_softirq"] = use
    for p in ("p50", "p99", "max"):
        out[f"loadgen_lag_{p}_ms"] = round(max(r[phase][f"lag{p.capitalize()}Ms"]
                                               for r in results), 2)
    if len(results) > 1:
        out["loadgen_processes"] = len(results)
        out["loadgen_cpu_total"] = round(sum(per_core.values()), 1)
    return out


class Bench:
    """The scenarios, run against one server at a time."""

    def __init__(self, sizes: Sizes, layout: Layout, logs: Path, nofile: int) -> None:
        self.sizes, self.layout, self.logs, self.nofile = sizes, layout, logs, nofile
        self.pr_base = 1000

    def next_pr_base(self) -> int:
        """A fresh range of pull request ids: rooms never shared between scenarios or runs."""
        self.pr_base += 1_000_000
        return self.pr_base

    def loadgen(self, server: Server, configs: List[Dict[str, Any]], on_barrier: OnBarrier,
                timeout: float) -> List[Message]:
        """Run one load generator process per config, spread over the load generator cores."""
        window = math.ceil(CONNECT_WINDOW / len(configs))
        configs = [dict(url=server.url, window=window, **c) for c in configs]
        return Loadgen(configs, self.cores_for(len(configs)), self.logs,
                       self.nofile, self.layout.client).run(on_barrier, timeout)

    def cores_for(self, processes: int) -> List[Optional[int]]:
        """The cores of that many load generator processes."""
        return [self.layout.loadgen_core(number) for number in range(processes)]

    @staticmethod
    def sampler(server: Server, snaps: Dict[str, Snapshot]) -> OnBarrier:
        """A barrier callback that snapshots the server's CPU, RSS and the cores."""
        return lambda name, data: snaps.__setitem__(name, snapshot({"server": server.pid}))

    def phase(self, server: Server, snaps: Dict[str, Snapshot], start: str, end: str,
              results: Sequence[Message], phase: str) -> Dict[str, Any]:
        """Both sides of one timed phase: the server's CPU and core, and the load generator's
        CPU, event-loop lag and core."""
        a, b = snaps[start], snaps[end]
        return {**server_side(a, b, server.core),
                **loadgen_side(a, b, results, self.cores_for(len(results)), phase)}

    def warm_up(self, server: Server) -> None:
        """A few sockets connect, join, chat and leave, unmeasured: one-time costs (imports,
        JIT) stay out of the figures."""
        self.loadgen(server, [dict(scenario="rooms", sockets=20, roomSize=10,
                                   prBase=self.next_pr_base(), warmup=0.2, duration=0.5)],
                     lambda name, data: None, 60)
        quiesce([server.pid])

    def rooms(self, server: Server) -> Result:
        """Scenarios 1, 2 and 4 on one set of sockets: connect and join, memory, throughput;
        the sockets are split over the load generator processes by whole rooms."""
        s = self.sizes
        snaps: Dict[str, Snapshot] = {}
        shares = split_rooms(s["sockets"], s["room_size"], self.layout.loadgens)
        base = self.next_pr_base()
        results = self.loadgen(
            server, [dict(scenario="rooms", sockets=count, roomSize=s["room_size"],
                          prBase=base + first, tag=f"p{number}", warmup=s["warmup"],
                          duration=s["duration"])
                     for number, (count, first) in enumerate(shares)],
            self.sampler(server, snaps), timeout=180 + s["duration"])
        joined = sum(r["joined"] for r in results)
        connect_seconds = max(r["connectSeconds"] for r in results)
        connect = self.phase(server, snaps, "connect:start", "connect:end", results, "connect")
        throughput = self.phase(server, snaps, "throughput:start", "throughput:end", results,
                                "throughput")
        deliveries = sum(r["deliveriesPerSecond"] for r in results)
        out = {
            "sockets": s["sockets"], "joined": joined, "errors": merged_counts(results, "errors"),
            "sockets_per_s": round(joined / connect_seconds, 1) if connect_seconds else None,
            "connect_seconds": round(connect_seconds, 3),
            "connect": connect,
            "connect_cpu_ms_per_join": per_unit(connect.get("server_cpu"), connect["seconds"],
                                                joined, 1e3),
            "deliveries_per_s": round(deliveries, 1),
            "messages_per_s": round(sum(r["messagesPerSecond"] for r in results), 1),
            "refused": sum(r["refused"] for r in results),
            "throughput": throughput,
            "cpu_us_per_delivery": per_unit(throughput.get("server_cpu"), 1.0, deliveries, 1e6),
        }
        rss = snaps["connect:start"]["rss_kb"]
        if "server" in rss:
            before, after = rss["server"], snaps["settled"]["rss_kb"]["server"]
            out.update(rss_before_mb=round(before / 1024, 1), rss_after_mb=round(after / 1024, 1),
                       kb_per_socket=round((after - before) / max(joined, 1), 2))
        return out

    def fanout(self, server: Server) -> Result:
        """Scenario 3, on one load generator process: the latency needs one clock."""
        s = self.sizes
        snaps: Dict[str, Snapshot] = {}
        [result] = self.loadgen(
            server, [dict(scenario="fanout", members=s["fanout_members"],
                          messages=s["fanout_messages"], intervalMs=s["fanout_interval_ms"],
                          prBase=self.next_pr_base(), drainSeconds=15,
                          ack=bool(s.get("fanout_ack")))],
            self.sampler(server, snaps), timeout=180)
        fan = self.phase(server, snaps, "fanout:start", "fanout:end", [result], "fanout")
        return {
            "members": s["fanout_members"], "joined": result["joined"],
            "errors": result["errors"], "expected": result["expected"],
            "received": result["received"], "late_sends": result["lateSends"],
            **{key: (round(result[src], 3) if result[src] is not None else None)
               for key, src in (("p50_ms", "p50Ms"), ("p90_ms", "p90Ms"), ("p99_ms", "p99Ms"),
                                ("max_ms", "maxMs"), ("mean_ms", "meanMs"),
                                ("first_p50_ms", "firstP50Ms"),
                                ("spread_p50_ms", "spreadP50Ms"))},
            "fanout": fan,
            "cpu_us_per_delivery": per_unit(fan.get("server_cpu"), fan["seconds"],
                                            result["received"], 1e6),
            # the copies of one message are read one after another by this one process:
            # what each costs it sets how far behind the first the median copy arrives
            "loadgen_cpu_us_per_delivery": per_unit(fan.get("loadgen_cpu"), fan["seconds"],
                                                    result["received"], 1e6),
        }

    def idle(self, server: Server) -> Result:
        """Scenario 5: idle sockets held through two ping rounds."""
        s = self.sizes
        total = s["idle_sockets"]
        processes = max(self.layout.loadgens, math.ceil(total / SOCKETS_PER_LOADGEN), 1)
        shares = [total // processes + (1 if i < total % processes else 0)
                  for i in range(processes)]
        snaps: Dict[str, Snapshot] = {}
        hold: Dict[str, float] = {}

        def on_barrier(name: str, data: List[Message]) -> None:
            snaps[name] = snapshot({"server": server.pid})
            if name == "connect:end":
                hold["seconds"], interval, timeout = idle_hold(data)
                hold["ping_interval"], hold["ping_timeout"] = interval, timeout
                log(f"  {sum(d['joined'] for d in data)} idle sockets up; holding "
                    f"{hold['seconds']:.0f} s (ping interval {interval:g} s, "
                    f"timeout {timeout:g} s)")
                time.sleep(hold["seconds"])

        base = self.next_pr_base()
        results = self.loadgen(
            server, [dict(scenario="idle", sockets=share, roomSize=s["room_size"],
                          prBase=base + number * (total // s["room_size"] + 1), tag=f"p{number}")
                     for number, share in enumerate(shares)],
            on_barrier, timeout=300 + 3 * 60)
        joined = sum(r["joined"] for r in results)
        held = self.phase(server, snaps, "connect:end", "hold:end", results, "hold")
        out = {
            "sockets": total, "loadgen_processes": processes, "joined": joined,
            "errors": merged_counts(results, "errors"), "failed_to_connect": total - joined,
            "disconnects": sum(r["disconnects"] for r in results),
            "disconnect_reasons": merged_counts(results, "disconnectReasons"),
            "still_connected": sum(r["stillConnected"] for r in results),
            "min_pings_per_socket": min((r["minPingsPerSocket"] for r in results
                                         if r["minPingsPerSocket"] is not None), default=None),
            **hold,
            "hold": held,
            "cpu_percent_per_1000_sockets": (round(held["server_cpu"] * 1000 / joined, 2)
                                             if joined and "server_cpu" in held else None),
        }
        if "server" in snaps["connect:start"]["rss_kb"]:
            rss = {name: snaps[name]["rss_kb"]["server"]
                   for name in ("connect:start", "connect:end", "hold:end")}
            before, held_kb = rss["connect:start"], rss["connect:end"]
            out.update(rss_before_mb=round(before / 1024, 1),
                       rss_held_mb=round((held_kb - before) / 1024, 1),
                       rss_after_hold_mb=round(rss["hold:end"] / 1024, 1),
                       kb_per_socket=round((held_kb - before) / max(joined, 1), 2))
        return out


def idle_hold(data: Sequence[Message]) -> Tuple[float, float, float]:
    """``(seconds, ping interval, ping timeout)`` to hold idle sockets, from the load
    generators' ``connect:end`` barrier data (the server's handshake): two ping rounds, plus
    the time a missing pong takes to be noticed."""
    interval = max((d.get("pingIntervalMs") or 0) for d in data) / 1000
    timeout = max((d.get("pingTimeoutMs") or 0) for d in data) / 1000
    return 2 * interval + timeout + 1, interval, timeout


def guarded(scenario: Callable[[Server], Result], server: Server) -> Result:
    """A scenario that overran its time limit is reported, not fatal."""
    try:
        return scenario(server)
    except TimeoutError as error:
        log(f"  {server.name} {scenario.__name__}: {error}")
        return {"error": str(error)}


def run_once(bench: Bench, server: Server, scenarios: Set[str], wait_quiet: float) -> Result:
    """One run of the asked scenarios on fresh server processes."""
    out: Result = {"background_core_busy": wait_for_quiet(wait_quiet),
                   "core_speed_us": core_speed(bench.layout.allowed)}
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
                quiesce([server.pid])
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
