"""What a run prints and writes: the tables on stdout, the versions, the JSON file."""
from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .base import LOADGEN_DIR, SATURATED, Sizes, prroom_code
from .side_by_side import DIGITS
from .stats import Row, Runs, figures, holds, phase_medians, ratio_pairs, target_of


def grid(header: Sequence[str], table: Sequence[Sequence[Any]], right: range) -> None:
    """Print an aligned table, the columns in ``right`` (numbers) aligned to the right."""
    cells = [[str(c) for c in row] for row in [list(header)] + [list(r) for r in table]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for number, row in enumerate(cells):
        print(" | ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))))
        if number == 0:
            print("-|-".join("-" * w for w in widths))


def print_table(rows: List[Row], names: List[str], sizes: Sizes) -> None:
    """The figures: each server's value, the ratios, the limit of each server's run."""
    fmt_of = {figure.label: figure.fmt for figure in figures(sizes)}
    pairs = ratio_pairs(names)
    header = ["figure"] + names + [f"ratio {a}/{b}" for a, b in pairs]
    header += [f"limit ({name} run)" for name in names]
    table = []
    for row in rows:
        cells = [row["figure"]]
        for name in names:
            value = row.get(name)
            cells.append("n/a" if value is None else fmt_of[row["figure"]].format(value))
        for a, b in pairs:
            ratio = row.get(f"ratio {a}/{b}")
            cells.append(f"{ratio:.2f}" if ratio is not None else "-")
        cells += [row.get(f"{name}_limit", "-") for name in names]
        table.append(cells)
    grid(header, table, right=range(1, 1 + len(names) + len(pairs)))   # values, ratios


def print_against_peer(rows: List[Row], names: List[str], sizes: Sizes,
                       side_by_side: Sequence[Dict[str, Any]] = ()) -> None:
    """Each server's ratio to the peer beside the peer's own absolute figure on this machine
    (a ratio alone hides that the peer's cost moves between machines), the target and
    whether it holds.  A figure the side-by-side rounds also measured is judged by their
    ratio (the same seconds for both sides), said so in its verdict."""
    judged = {tuple(figure["key"]): figure["ratio"]
              for result in side_by_side for figure in result["figures"] if figure.get("key")}
    if "peer" not in names:
        return
    fmt_of = {figure.label: figure.fmt for figure in figures(sizes)}
    others = [name for name in names if name != "peer"]
    header = ["figure", "peer (absolute)"] + [f"{name} / peer" for name in others]
    header += ["target", "holds (" + others[0] + ")"] if others else []
    table = []
    for row in rows:
        target = target_of(row)
        peer = row.get("peer")
        cells = [row["figure"], "n/a" if peer is None else fmt_of[row["figure"]].format(peer)]
        for name in others:
            ratio = row.get(f"ratio {name}/peer")
            cells.append("-" if ratio is None else f"{ratio:.2f}")
        if others:
            side_ratio = judged.get((row["scenario"], row["key"])) if others[0] == "prroom" \
                else None
            ratio_judged = side_ratio if side_ratio is not None else \
                row.get(f"ratio {others[0]}/peer")
            verdict = holds(ratio_judged, target) if target else None
            shown = "-" if verdict is None else ("yes" if verdict else "NO")
            if verdict is not None and side_ratio is not None:
                shown += f" (side by side: {side_ratio:.2f})"
            if target and target[0] == ">=" and loadgen_bound(row, (others[0], "peer")):
                # a rate the load generator capped says nothing about either server
                shown = "n/a: load generator saturated"
            elif target and row["scenario"] == "fanout" and side_ratio is None and \
                    loadgen_bound(row, others[:1]):
                # one process reads every copy in turn: with its core full, the median is
                # mostly its own queue (see the load generator's CPU per delivery)
                shown += " (load generator saturated)"
            cells += ["-" if not target else f"{target[0]} {target[1]:g}", shown]
        table.append(cells)
    print("\nAgainst the peer: its absolute figures on this machine, each ratio, the target:")
    grid(header, table, right=range(1, len(header)))


def print_side_by_side(result: Dict[str, Any]) -> None:
    """Side-by-side rounds' figures (``side_by_side.rounds_of``): both sides' medians, the
    rounds' ratios, the target and whether it holds ("-": a figure shown to explain the
    others)."""
    measured, against = result["measured"], result["against"]
    print(f"\nSide by side: {result['description']}, {len(result['rounds'])} round(s) (the "
          "same seconds for both: a ratio the machine's drift does not move; both share the "
          "server core, so the absolute figures are not the ones above):")
    header = ["figure", against, measured, f"{measured} / {against}", "rounds", "target",
              "holds"]
    table = []
    for figure in result["figures"]:
        target = figure["target"]
        verdict = "-" if target is None else \
            ("yes" if holds(figure["ratio"], target) else "NO")
        digits = DIGITS[figure["figure"]]
        table.append([figure["label"], f"{figure[against]:.{digits}f}",
                      f"{figure[measured]:.{digits}f}", f"{figure['ratio']:.2f}",
                      ", ".join(f"{ratio:.3f}" for ratio in figure["ratios"]),
                      "-" if target is None else f"{target[0]} {target[1]:.3g}", verdict])
    grid(header, table, right=range(1, 4))
    loadgen = result.get("loadgen_cpu")
    if loadgen:
        fanout = result.get("shape") == "fanout"
        if fanout:
            note = " (its core full: its own queue sets the latencies)" \
                if max(loadgen) >= SATURATED else ""
        else:
            note = " (it set the pace)" if min(loadgen) >= SATURATED else (
                " (below full: the shared server core set the pace, and the sides competed "
                "for it; a ratio then also depends on how the scheduler shared it, which a "
                "sequential run does not have: compare)")
        print("the load generator's CPU, % of its core, round by round: "
              + ", ".join(f"{cpu:.0f}" for cpu in loadgen) + note)
        if fanout:
            print("a copy's latency is about the first copy's plus where it came in the load "
                  "generator's reading of the room's copies (last copy - first): on one core "
                  "of its own, that reading, not the server, makes most of p50 and p99")
    busy = result.get("core_busy")
    if busy:
        print("the shared server core, % busy while the sides sent, round by round: "
              + ", ".join(f"{share:.0f}" for share in busy))


def loadgen_bound(row: Row, names: Sequence[str]) -> bool:
    """Whether the load generator's core ran out in any of ``names``' runs of this row
    before the server's did (see ``stats.limit_side``): its rate is then the load
    generator's, not the server's."""
    return any(str(row.get(f"{name}_limit", "")).startswith(("loadgen", "both:"))
               for name in names)


def print_machine(lines: List[str]) -> None:
    """What the figures came from, printed with them."""
    print("\n".join(lines))


def print_detail(runs: Runs) -> None:
    """Both sides' CPU, core use and the load generator's lag in every timed phase."""
    print("\nCPU per measured phase (median of runs; % of one core; lag = load generator "
          "event-loop delay beyond its 10 ms timer):")
    header = ["phase", "server", "server cpu%", "server core busy%", "loadgen cpu%",
              "loadgen core busy%", "lag p50 ms", "lag p99 ms", "lag max ms"]
    table = []
    for scenario, phase in (("rooms", "connect"), ("fanout", "fanout"),
                            ("rooms", "throughput"), ("idle", "hold")):  # in table order
        for name, name_runs in runs.items():
            if not any(scenario in run for run in name_runs):
                continue
            m = phase_medians(name_runs, scenario, phase)
            table.append([f"{scenario}/{phase}", name] + [
                "n/a" if m[k] is None else f"{m[k]:,.1f}" for k in (
                    "server_cpu", "server_core_busy", "loadgen_cpu", "loadgen_core_busy",
                    "loadgen_lag_p50_ms", "loadgen_lag_p99_ms", "loadgen_lag_max_ms")])
    grid(header, table, right=range(2, len(header)))


def versions(peer_dir: Optional[Path]) -> Dict[str, str]:
    """Python, the stack's packages, Node, socket.io on both sides, the code measured."""
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("prroom", "gunicorn", "gevent", "gevent-websocket", "python-socketio",
                    "python-engineio", "Flask-SocketIO", "Flask", "wsaccel", "redis"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True)
    found["node"] = node.stdout.strip()
    peer_modules = peer_dir / "node_modules/socket.io" if peer_dir else None
    for label, path in (("socket.io-client", LOADGEN_DIR / "node_modules/socket.io-client"),
                        ("peer socket.io", peer_modules)):
        if path is None:
            continue
        try:
            found[label] = json.loads((path / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            pass
    found["prroom code at the end"] = prroom_code()
    return found


def write_json(path: Path, document: Dict[str, Any]) -> None:
    """The results file (bench/results/ is git-ignored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))
    print(f"\nJSON: {path}")
