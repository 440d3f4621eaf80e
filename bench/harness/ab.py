"""A/B comparison of two code trees' benchmark runs (``bench/compare.py``): the order the
runs take, the figures each run's JSON holds, and whether a difference between the two
sides stands out from the spread of their runs.  No processes here: only numbers."""
from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

from .report import grid

SIDES = ("base", "branch")
ALPHA = 0.05   # a two-sided p at or below this is called a difference

# the cluster table's columns worth comparing (bench/harness/cluster_report.py's names):
# the rates and what each delivery cost, not the CPU percentages they derive from
CLUSTER_FIGURES = (
    ("deliveries_per_s", "deliveries/s"),
    ("serving_cpu_us_per_delivery", "serving us/delivery"),
    ("redis_cpu_us_per_message", "redis us/msg"),
    ("observer_cpu_us_per_message", "observer us/msg"),
    ("deployment_cpu_us_per_delivery", "deployment us/delivery"),
    ("cost_vs_standalone", "x standalone"),
    ("serving_vs_standalone_same_n", "serving x standalone same N"),
    ("connect_cpu_ms_per_join", "connect ms/join"),
)


class Reading(NamedTuple):
    """One figure of one run."""

    label: str   # as the comparison's table names it
    key: str     # run.py's name of the figure, which says which way is better
    value: float


class Compared(NamedTuple):
    """One figure over all rounds: each side's values, in the order they ran."""

    label: str
    key: str
    base: List[float]
    branch: List[float]


def order(rounds: int) -> List[Tuple[int, str]]:
    """(round, side) in the order the runs take: base-branch, then branch-base, and so on
    (ABBA), so that a drift of the machine over the session weighs on both sides alike."""
    found = []
    for number in range(rounds):
        sides = SIDES if number % 2 == 0 else SIDES[::-1]
        found += [(number + 1, side) for side in sides]
    return found


def readings(document: Dict[str, Any]) -> List[Reading]:
    """The figures of one run.py results file, standard (every server's row of the table;
    the server's name in front when it measured several) or ``--cluster`` (per config)."""
    found = []
    if "configs" in document:
        for row in document.get("summary", []):
            for key, name in CLUSTER_FIGURES:
                value = row.get(key)
                if isinstance(value, (int, float)):
                    found.append(Reading(f"{row['config']}: {name}", key, float(value)))
        return found
    names = list(document.get("runs") or {})
    for row in document.get("summary", []):
        for name in names:
            value = row.get(name)
            if isinstance(value, (int, float)):
                label = row["figure"] if len(names) == 1 else f"{name}: {row['figure']}"
                found.append(Reading(label, row["key"], float(value)))
    return found


def collect(runs: Dict[str, List[Dict[str, Any]]]) -> List[Compared]:
    """Every figure any run of either side has, in the table's order, with each side's
    values (a run without the figure adds none)."""
    table: Dict[str, Compared] = {}
    for side in SIDES:
        for document in runs.get(side, []):
            for reading in readings(document):
                row = table.setdefault(reading.label,
                                       Compared(reading.label, reading.key, [], []))
                getattr(row, side).append(reading.value)
    return list(table.values())


def midranks(values: Sequence[float]) -> List[float]:
    """Each value's rank among ``values`` (1 = smallest), ties sharing their mean rank."""
    ordered = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(ordered):
        end = start
        while end + 1 < len(ordered) and values[ordered[end + 1]] == values[ordered[start]]:
            end += 1
        for i in ordered[start:end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def mann_whitney_p(first: Sequence[float], second: Sequence[float]) -> float:
    """The exact two-sided p of the Mann-Whitney U test: the share of all the ways of
    splitting the pooled values into groups of these sizes whose rank sum lies at least as
    far from its expected value as the one observed.  Ties take mid-ranks, and the rank sums'
    distribution is counted over those very ranks, so p stays exact with ties."""
    n, m = len(first), len(second)
    if not n or not m:
        return 1.0
    doubled = [round(2 * rank) for rank in midranks(list(first) + list(second))]
    observed = abs(sum(doubled[:n]) - n * (n + m + 1))   # doubled: mid-ranks are halves
    ways: List[Counter[int]] = [Counter() for _ in range(n + 1)]
    ways[0][0] = 1
    for rank in doubled:   # how many n-subsets of the ranks have each sum
        for size in range(n, 0, -1):
            for total, count in ways[size - 1].items():
                ways[size][total + rank] += count
    extreme = sum(count for total, count in ways[n].items()
                  if abs(total - n * (n + m + 1)) >= observed)
    return extreme / math.comb(n + m, n)


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided p that n and m runs can give (all of one side above the
    other): below ALPHA only from 4 runs a side."""
    return min(1.0, 2 / math.comb(n + m, n)) if n and m else 1.0


def higher_is_better(key: str) -> bool:
    """Rates and deliveries received; every other figure is a cost, a latency, memory or
    sockets lost."""
    return key.endswith("per_s") or key == "received"


def verdict(row: Compared) -> str:
    """Whether the branch differs from the base beyond the runs' spread, which way, and
    whether that way is better."""
    if not row.base or not row.branch:
        return "n/a: a side has no value"
    base, branch = statistics.median(row.base), statistics.median(row.branch)
    if base == branch:
        return "no difference"
    way = "lower" if branch < base else "higher"
    better = "better" if (branch > base) == higher_is_better(row.key) else "worse"
    p = mann_whitney_p(row.branch, row.base)
    if p <= ALPHA:
        return f"branch {way} ({better}), p={p:.3f}"
    if max(row.base) < min(row.branch) or max(row.branch) < min(row.base):
        return f"ranges apart, branch {way} ({better}); p={p:.2f}: too few runs to be sure"
    return f"within the spread (p={p:.2f})"


def shown(value: float) -> str:
    """A figure with the digits its size deserves."""
    size = abs(value)
    return f"{value:,.0f}" if size >= 100 else (
        f"{value:.1f}" if size >= 10 else f"{value:.2f}" if size >= 1 else f"{value:.3f}")


def summary(rows: Sequence[Compared]) -> List[Dict[str, Any]]:
    """The comparison as the JSON records it: values, medians, ratio, p, verdict."""
    found = []
    for row in rows:
        base = statistics.median(row.base) if row.base else None
        branch = statistics.median(row.branch) if row.branch else None
        found.append({"figure": row.label, "key": row.key, "base_runs": row.base,
                      "branch_runs": row.branch, "base": base, "branch": branch,
                      "ratio": round(branch / base, 3) if base and branch is not None
                      else None,
                      "p": mann_whitney_p(row.branch, row.base), "verdict": verdict(row)})
    return found


def print_comparison(rows: Sequence[Compared]) -> None:
    """The table: each side's median and range, the ratio, the verdict."""
    table = []
    for row, line in zip(rows, summary(rows)):
        cells: List[str] = [row.label]
        for side in SIDES:
            values: List[float] = getattr(row, side)
            cells += ["n/a", "-"] if not values else [
                shown(line[side]), f"{shown(min(values))}–{shown(max(values))}"]
        cells += ["-" if line["ratio"] is None else f"{line['ratio']:.3f}", line["verdict"]]
        table.append(cells)
    grid(["figure", "base median", "base range", "branch median", "branch range",
          "branch/base", "verdict"], table, right=range(1, 6))
