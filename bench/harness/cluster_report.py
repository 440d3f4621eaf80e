"""The cluster benchmark's figures: medians over runs, two tables and what they imply."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from .base import Layout, Sizes
from .report import grid
from .stats import PHASE_KEYS, combine, limit_side

Result = Dict[str, Any]

SCALARS = ("sockets_per_s", "deliveries_per_s", "messages_per_s", "serving_cpu",
           "serving_cpu_us_per_delivery", "redis_cpu", "redis_cpu_us_per_message",
           "observer_cpu", "observer_cpu_us_per_message", "deployment_cpu_us_per_delivery",
           "connect_cpu_ms_per_join", "redis_bytes_per_buffered_packet")
PROCESS_SCALARS = ("sockets", "deliveries_per_s", "cpu", "cpu_us_per_delivery",
                   "cpu_us_per_message")


def median_of(results: Sequence[Result], key: str) -> Any:
    """The median of one figure over runs."""
    return combine([r.get(key) for r in results], "median")


def summarize_cluster(configs: Sequence[Any], runs: Dict[str, List[Result]]) -> List[Result]:
    """One row per configuration: medians over its runs, per process too, the cost against
    standalone, and which side was the limit."""
    rows = []
    standalone: Optional[float] = None
    done_of = {label: [r for r in label_runs if "error" not in r]
               for label, label_runs in runs.items()}
    # serving us/delivery of the standalone processes at each N: the same-N control
    control: Dict[int, Optional[float]] = {
        config.processes: median_of(done_of[config.label], "serving_cpu_us_per_delivery")
        for config in configs if not config.clustered}
    for config in configs:
        done = done_of[config.label]
        row: Result = {"config": config.label, "processes": config.processes,
                       "clustered": config.clustered, "spread": config.spread,
                       "observer": config.observer, "runs": len(done)}
        row.update({key: median_of(done, key) for key in SCALARS})
        if not config.clustered and config.processes == 1:
            standalone = row["deployment_cpu_us_per_delivery"]
        cost = row["deployment_cpu_us_per_delivery"]
        row["cost_vs_standalone"] = round(cost / standalone, 2) if cost and standalone else None
        same_n, serving = control.get(config.processes), row["serving_cpu_us_per_delivery"]
        row["serving_vs_standalone_same_n"] = (round(serving / same_n, 2)
                                               if config.clustered and serving and same_n
                                               else None)
        phase = {key: median_of([r["throughput"] for r in done], key) for key in PHASE_KEYS}
        row["limit"] = limit_side(phase) if done else "n/a"
        row["per_process"] = [
            {"name": first["name"], "core": first["core"], "rooms": first["rooms"],
             **{key: median_of([r["processes"][i] for r in done], key)
                for key in PROCESS_SCALARS}}
            for i, first in enumerate(done[0]["processes"] if done else [])]
        rows.append(row)
    return rows


def shown(value: Any, fmt: str = "{:,.1f}") -> str:
    """A figure for a table cell; "-" when there is none."""
    return "-" if value is None else fmt.format(value)


def print_cluster(rows: List[Result], sizes: Sizes, layout: Layout) -> None:
    """The configurations' table, the per-process table, and what the costs imply."""
    rooms = sizes["sockets"] // sizes["room_size"]
    print(f"\nCluster: {rooms} rooms x {sizes['room_size']}, every member with one acked "
          f"message in flight for {sizes['duration']:g} s; median of {sizes['runs']} run(s). "
          "CPU in % of one core; us = microseconds of CPU; 'deployment' = the serving "
          "processes + Redis (the observer, a process hosting none of the rooms, apart); "
          "'same N' = the serving processes' us/delivery against N standalone processes "
          "sharing the same cores (what the cluster itself adds at that N).")
    header = ["config", "deliveries/s", "messages/s", "serving cpu%", "us/delivery",
              "redis cpu%", "redis us/msg", "observer cpu%", "observer us/msg",
              "deployment us/delivery", "x standalone", "serving x standalone same N",
              "connect ms/join", "limit"]
    grid(header, [[row["config"], shown(row["deliveries_per_s"], "{:,.0f}"),
                   shown(row["messages_per_s"], "{:,.0f}"), shown(row["serving_cpu"]),
                   shown(row["serving_cpu_us_per_delivery"], "{:,.2f}"),
                   shown(row["redis_cpu"]), shown(row["redis_cpu_us_per_message"], "{:,.2f}"),
                   shown(row["observer_cpu"]),
                   shown(row["observer_cpu_us_per_message"], "{:,.2f}"),
                   shown(row["deployment_cpu_us_per_delivery"], "{:,.2f}"),
                   shown(row["cost_vs_standalone"], "{:.2f}"),
                   shown(row["serving_vs_standalone_same_n"], "{:.2f}"),
                   shown(row["connect_cpu_ms_per_join"], "{:,.3f}"), row["limit"]]
                  for row in rows], right=range(1, len(header) - 1))
    print("\nPer process (observer: us per message published anywhere, which it discards):")
    header = ["config", "process", "core", "rooms", "sockets", "deliveries/s", "cpu%",
              "us/delivery", "us/msg discarded"]
    grid(header, [[row["config"], p["name"], shown(p["core"], "{}"), p["rooms"],
                   shown(p["sockets"], "{:,.0f}"), shown(p["deliveries_per_s"], "{:,.0f}"),
                   shown(p["cpu"]), shown(p["cpu_us_per_delivery"], "{:,.2f}"),
                   shown(p["cpu_us_per_message"], "{:,.2f}")]
                  for row in rows for p in row["per_process"]], right=range(2, len(header)))
    cores = len(layout.server_cores)
    print(f"\nWhat it implies: the servers and Redis share {cores} core(s) here, so "
          "deliveries/s cannot grow with N; at each configuration's deployment cost, those "
          "cores carry at most:")
    for row in rows:
        cost = row["deployment_cpu_us_per_delivery"]
        if cost:
            print(f"  {row['config']}: {1e6 * cores / cost:,.0f} deliveries/s "
                  f"({cost:,.2f} us each)")
    for row in rows:
        if row.get("redis_bytes_per_buffered_packet"):
            print(f"{row['config']}: Redis holds {row['redis_bytes_per_buffered_packet']:,.0f} "
                  "bytes per buffered packet (the rooms' recovery streams, payload included)")
    discard = [row["observer_cpu_us_per_message"] for row in rows
               if row["observer_cpu_us_per_message"]]
    if discard:
        # every process pays this for every message published anywhere in the deployment,
        # however many processes there are: a ceiling that more processes do not lift
        cost = combine(discard, "median")
        print(f"A process hosting none of the rooms spent {cost:,.1f} us per message published "
              f"(median over the configurations): on one core of its own, discarding alone "
              f"would fill it at {1e6 / cost:,.0f} messages/s deployment-wide, "
              f"{1e6 / cost * sizes['room_size']:,.0f} deliveries/s in rooms of "
              f"{sizes['room_size']}, whatever N.")
