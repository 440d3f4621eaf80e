"""From runs to figures: medians, costs, which side was the limit, what makes a figure
suspect."""
from __future__ import annotations

import statistics
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .base import SATURATED, Sizes
from .sampling import speed_spread

Run = Dict[str, Any]
Runs = Dict[str, List[Run]]
Row = Dict[str, Any]


class Figure(NamedTuple):
    """One line of the table."""

    label: str
    scenario: str
    key: str
    fmt: str
    phase: Optional[str]   # whose CPU names the limit
    combine: str           # how runs combine: median, min, max


def figures(sizes: Sizes) -> List[Figure]:
    """The table's lines, rates and the server CPU they cost side by side."""
    rooms = f"{sizes['sockets'] // sizes['room_size']} rooms x {sizes['room_size']}"
    idle = f"{sizes['idle_sockets']:,}"
    return [
        Figure(f"1. connect+join: sockets/s ({sizes['sockets']:,}, rooms of "
               f"{sizes['room_size']})", "rooms", "sockets_per_s", "{:,.0f}", "connect",
               "median"),
        Figure("1. cost: server CPU ms per connect+join", "rooms", "connect_cpu_ms_per_join",
               "{:,.3f}", None, "median"),
        Figure(f"2. memory: KB per socket ({sizes['sockets']:,} joined)",
               "rooms", "kb_per_socket", "{:,.1f}", None, "median"),
        Figure(f"3. fan-out p50 ms (1 -> {sizes['fanout_members']}, "
               f"{sizes['fanout_messages']} msgs {sizes['fanout_interval_ms']} ms apart)",
               "fanout", "p50_ms", "{:,.2f}", "fanout", "median"),
        Figure("3. fan-out p99 ms", "fanout", "p99_ms", "{:,.2f}", "fanout", "median"),
        Figure(f"3. fan-out deliveries received (of "
               f"{sizes['fanout_members'] * sizes['fanout_messages']:,}, worst run)",
               "fanout", "received", "{:,.0f}", None, "min"),
        Figure("3. fan-out: first copy's p50 ms (per message, median of messages)", "fanout",
               "first_p50_ms", "{:,.2f}", None, "median"),
        Figure("3. fan-out: last copy - first copy, ms (median of messages)", "fanout",
               "spread_p50_ms", "{:,.2f}", None, "median"),
        Figure("3. cost: server CPU us per fan-out delivery", "fanout", "cpu_us_per_delivery",
               "{:,.2f}", None, "median"),
        Figure("3. cost: load generator CPU us per fan-out delivery", "fanout",
               "loadgen_cpu_us_per_delivery", "{:,.2f}", None, "median"),
        Figure(f"4. deliveries/s ({rooms}, 1 acked in flight, {sizes['duration']:g} s)",
               "rooms", "deliveries_per_s", "{:,.0f}", "throughput", "median"),
        Figure("4. cost: server CPU us per delivery", "rooms", "cpu_us_per_delivery",
               "{:,.2f}", None, "median"),
        Figure(f"5. idle {idle}: RSS held MB", "idle", "rss_held_mb", "{:,.1f}", None,
               "median"),
        Figure(f"5. idle {idle}: KB per socket", "idle", "kb_per_socket", "{:,.1f}", None,
               "median"),
        Figure("5. idle: sockets lost over 2 pings (worst run)", "idle", "lost", "{:,.0f}",
               None, "max"),
        Figure("5. cost: idle server CPU, % of a core per 1,000 sockets", "idle",
               "cpu_percent_per_1000_sockets", "{:,.2f}", None, "median"),
    ]


# issue 26's targets, each a bound on prroom / peer: (scenario, key) -> (relation, bound)
TARGETS: Dict[Tuple[str, str], Tuple[str, float]] = {
    ("rooms", "deliveries_per_s"): (">=", 1.1),
    ("rooms", "cpu_us_per_delivery"): ("<=", 0.9),
    ("rooms", "kb_per_socket"): ("<=", 1.0),
    ("idle", "kb_per_socket"): ("<=", 0.8),
    ("idle", "cpu_percent_per_1000_sockets"): ("<=", 1.0),
    ("rooms", "connect_cpu_ms_per_join"): ("<=", 0.9),
    ("fanout", "p50_ms"): ("<=", 1.0),
    ("fanout", "p99_ms"): ("<=", 1.0),
}


def target_of(row: Row) -> Optional[Tuple[str, float]]:
    """The target a row's ratio against the peer is held to, if any."""
    return TARGETS.get((row["scenario"], row["key"]))


def holds(ratio: Optional[float], target: Tuple[str, float]) -> Optional[bool]:
    """Whether a ratio meets its target (None without a ratio)."""
    if ratio is None:
        return None
    relation, bound = target
    return ratio >= bound if relation == ">=" else ratio <= bound


def value_of(run: Run, scenario: str, key: str) -> Any:
    """One figure of one run (``lost`` is derived)."""
    result = run.get(scenario) or {}
    if key == "lost" and "joined" in result:
        return result["failed_to_connect"] + result["disconnects"]
    return result.get(key)


def combine(values: Sequence[Any], how: str) -> Any:
    """The runs' values combined (None left out); None when there are none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    pick: Dict[str, Callable[[List[Any]], Any]] = {"median": statistics.median, "min": min,
                                                   "max": max}
    return pick[how](present)


def limit_side(phase: Dict[str, Any]) -> str:
    """Which side ran out of CPU in a phase.  A side's use is its process's CPU plus the
    softirq time of its pinned core (on loopback, a sender's packets are processed there).
    A side using >= SATURATED% of a core was the limit; failing that, a side whose core was
    that busy because other processes on the machine took the rest was held back by them
    ("core shared").  Both saturated, the fuller one is named first when it is the server
    ("both, server first"): a server using nearly all of its core cannot go faster, whatever
    the load generator had left, so its rate is its own."""
    sides = []
    use: Dict[str, float] = {}
    for role in ("server", "loadgen"):
        own, core = phase.get(f"{role}_cpu"), phase.get(f"{role}_core_busy")
        used = None if own is None else own + (phase.get(f"{role}_core_softirq") or 0)
        use[role] = used or 0.0
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
        verdict = "both, server first" if use["server"] > use["loadgen"] else "both"
    elif saturated:
        verdict = saturated[0]
    elif shared:
        verdict = " & ".join(shared) + " core shared"
    else:
        verdict = "neither"
    return f"{verdict}: srv {sides[0][2]}, lg {sides[1][2]}"


PHASE_KEYS = ("server_cpu", "server_core_busy", "server_core_softirq", "loadgen_cpu",
              "loadgen_core_busy", "loadgen_core_softirq", "loadgen_lag_p50_ms",
              "loadgen_lag_p99_ms", "loadgen_lag_max_ms", "seconds")


def phase_medians(runs: Sequence[Run], scenario: str, phase: str) -> Dict[str, Any]:
    """Each per-phase CPU figure, median over runs."""
    return {key: combine([((run.get(scenario) or {}).get(phase) or {}).get(key)
                          for run in runs], "median") for key in PHASE_KEYS}


def ratio_pairs(names: Sequence[str]) -> List[Tuple[str, str]]:
    """Which ratios the table shows: every server against the peer, or first / second."""
    if "peer" in names:
        return [(name, "peer") for name in names if name != "peer"]
    return [(names[0], names[1])] if len(names) == 2 else []


def summarize(sizes: Sizes, runs: Runs) -> List[Row]:
    """One row per figure asked for: each server's combined value, its runs, the ratios,
    and for rates the per-phase CPU and the side that was the limit."""
    rows = []
    names = list(runs)
    for figure in figures(sizes):
        if not any(figure.scenario in run for name in names for run in runs[name]):
            continue   # not asked for (--scenarios)
        row: Row = {"figure": figure.label, "scenario": figure.scenario, "key": figure.key,
                    "combine": figure.combine}
        for name in names:
            values = [value_of(run, figure.scenario, figure.key) for run in runs[name]]
            row[name] = combine(values, figure.combine)
            row[f"{name}_runs"] = values
            if figure.phase:
                cpu = phase_medians(runs[name], figure.scenario, figure.phase)
                row[f"{name}_limit"] = limit_side(cpu)
                row[f"{name}_cpu"] = cpu
        for first, second in ratio_pairs(names):
            if row[first] is not None and row[second]:
                row[f"ratio {first}/{second}"] = round(row[first] / row[second], 3)
        if "ratio prroom/peer" in row or len(names) == 2:  # the JSON's historic key
            row["ratio"] = row.get(f"ratio {names[0]}/{names[-1]}")
        rows.append(row)
    return rows


# phases whose figures are timings, which other processes on the machine would distort
TIMED_PHASES = {"rooms": ("connect", "throughput"), "fanout": ("fanout",)}


def disturbed(run: Run) -> List[str]:
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


def result_problems(where: str, result: Dict[str, Any]) -> List[str]:
    """Refused joins or messages, lost deliveries, errors of one scenario's result."""
    if "error" in result:
        return [f"{where}: {result['error']}"]
    found = []
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
    return found


def problems(runs: Runs) -> List[str]:
    """Anything that makes a figure suspect: refused joins or messages, lost sockets, errors,
    other processes' load, the code changing between runs."""
    found = []
    for name, name_runs in runs.items():
        for number, run in enumerate(name_runs, 1):
            for scenario, result in run.items():
                if isinstance(result, dict) and scenario not in RUN_RECORDS:
                    found += result_problems(f"{name} run {number} {scenario}", result)
            found += [f"{name} run {number} {noise}" for noise in disturbed(run)]
        codes = sorted({run["prroom_code"] for run in name_runs if "prroom_code" in run})
        if len(codes) > 1:
            found.append(f"{name}: the code changed between runs ({', '.join(codes)})")
    return found + speed_moved([run for name_runs in runs.values() for run in name_runs])


#: What a run records beside its scenarios' results.
RUN_RECORDS = ("background_core_busy", "core_speed_us")

#: A core whose probe times differ by more than this factor over the runs is reported.
SPEED_MOVED = 1.15


def speed_moved(runs: List[Dict[str, Any]]) -> List[str]:
    """A line per core whose speed (:func:`~harness.sampling.core_speed`, probed before each
    run) moved by more than :data:`SPEED_MOVED` over ``runs``."""
    found = []
    for core, (low, high) in sorted(speed_spread(runs).items()):
        if high > low * SPEED_MOVED:
            found.append(f"the machine's speed moved: a fixed piece of work took "
                         f"{low:,.0f}–{high:,.0f} µs on core {core} ({high / low:.2f}×) in the "
                         "probes before the runs; a median mixes speeds (each run's probes: "
                         "core_speed_us in the JSON)")
    return found
