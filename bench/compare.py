#!/usr/bin/env python3
"""A/B benchmark: ``bench/run.py`` of two code trees in turn, and which figures differ
beyond the runs' spread.

    python bench/compare.py --base REV|DIR [--branch REV|DIR] [--rounds N]
                            [--run-timeout MIN] [--max-minutes MIN] [--max-failures K]
                            [--out-dir DIR] -- [bench/run.py's options]

On a shared machine one run's figure moves as much as a code change, so one run of each
side says little.  Here each side is a tree (a directory, or a git revision checked out into
a temporary worktree, removed at the end; ``--branch`` defaults to this working tree), and
each runs its own ``bench/run.py --runs 1`` with the same virtualenv, the tree first on
PYTHONPATH so that its servers import its own prroom.  The runs alternate ABBA (base,
branch, branch, base, ...) for ``--rounds`` rounds; every run's JSON and output land in
``--out-dir``.  Then, per figure run.py prints (per config with ``--cluster``): each side's
median and range, branch/base, and a verdict from the exact two-sided Mann-Whitney U test
(p <= 0.05 needs 4 rounds or more; with fewer, non-overlapping ranges are pointed out).

A failed run (its exit code, its last lines) is reported and the comparison goes on, until
``--max-failures``; each run is stopped after ``--run-timeout`` minutes, and no run starts
that would, going by the longest so far, end after ``--max-minutes``.  Benchmarks on a
shared machine run one at a time: start it under the same lock as ``bench/run.py``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from harness import ab
from harness import machine as machine_info
from harness.ab_runs import Outcome, Tree, run_bench
from harness.base import BENCH, BenchError, log
from harness.processes import find_gunicorn
from harness.stats import speed_moved

# compare.py sets these per run, or needs servers it starts itself
RESERVED = ("--runs", "--out", "--url", "--server-pid")


def parse_args(argv: List[str]) -> Tuple[argparse.Namespace, List[str]]:
    """Our options, and run.py's (after ``--``), checked."""
    ours, bench_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) \
        if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(
        description="bench/run.py of two code trees in turn; which figures differ.",
        epilog="bench/run.py's options go after --, e.g. -- --quick --scenarios rooms")
    parser.add_argument("--base", required=True, help="the base: a git revision or a "
                        "directory holding a checkout")
    parser.add_argument("--branch", help="the other side, likewise (default: this tree)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="runs of each side (default 4, the fewest that can give p <= 0.05)")
    parser.add_argument("--run-timeout", type=float, default=30, metavar="MIN",
                        help="stop a run after this many minutes (default 30)")
    parser.add_argument("--max-minutes", type=float, metavar="MIN",
                        help="start no run that would end after this many minutes")
    parser.add_argument("--max-failures", type=int, default=2,
                        help="failed runs after which the comparison stops (default 2)")
    parser.add_argument("--out-dir", type=Path, help="where the runs' JSON and output go "
                        "(default bench/results/compare-<timestamp>/)")
    args = parser.parse_args(ours)
    if args.rounds < 1 or args.max_failures < 1 or args.run_timeout <= 0:
        parser.error("--rounds, --max-failures and --run-timeout take 1 or more")
    taken = [a for a in bench_args if a.split("=", 1)[0] in RESERVED]
    if taken:
        parser.error(f"compare sets {', '.join(taken)} itself or cannot use it: leave it out")
    return args, bench_args


def run_rounds(args: argparse.Namespace, trees: Dict[str, Tree], bench_args: List[str],
               out_dir: Path) -> Tuple[Dict[str, List[Dict[str, Any]]], List[str]]:
    """Every run in ABBA order, within the bounds: each side's results, and the failures."""
    runs: Dict[str, List[Dict[str, Any]]] = {side: [] for side in ab.SIDES}
    failures: List[str] = []
    started, longest = time.monotonic(), 0.0
    plan = ab.order(args.rounds)
    for number, (round_, side) in enumerate(plan, 1):
        elapsed = time.monotonic() - started
        if args.max_minutes and elapsed + longest > args.max_minutes * 60:
            log(f"stopping: another run would end after --max-minutes {args.max_minutes:g}")
            break
        log(f"run {number}/{len(plan)}: round {round_}, {side} ({trees[side].commit})")
        outcome: Outcome = run_bench(trees[side], sys.executable, bench_args,
                                     out_dir / f"round{round_}-{side}.json",
                                     args.run_timeout * 60)
        longest = max(longest, outcome.seconds)
        if outcome.document is None:
            failures.append(f"round {round_} {side}: {outcome.failure}")
            log(f"  failed after {outcome.seconds:.0f} s: {outcome.failure}")
            if len(failures) >= args.max_failures:
                log(f"stopping: {len(failures)} failed runs (--max-failures)")
                break
            continue
        runs[side].append(outcome.document)
        trouble = outcome.document.get("problems") or []
        log(f"  done in {outcome.seconds:.0f} s"
            + (f"; {len(trouble)} problem(s) noted (see its JSON)" if trouble else ""))
    return runs, failures


def machine_lines(runs: Dict[str, List[Dict[str, Any]]]) -> List[str]:
    """The machine as run.py records it (its first JSON's), else as described here."""
    for documents in runs.values():
        for document in documents:
            described = (document.get("meta") or {}).get("machine")
            if described and "cpu" in described:
                return machine_info.lines(described)
    return machine_info.lines(machine_info.describe(find_gunicorn()))


def report(trees: Dict[str, Tree], runs: Dict[str, List[Dict[str, Any]]],
           failures: List[str], bench_args: List[str]) -> List[Dict[str, Any]]:
    """Print what was compared, the machine, the table; the rows for the JSON."""
    rows = ab.collect(runs)
    print()
    for side in ab.SIDES:
        print(f"{side}: {trees[side].describe()}; {len(runs[side])} run(s)")
    print("each: bench/run.py " + " ".join(bench_args + ["--runs", "1"])
          + "; in turn ABBA (base, branch, branch, base, ...)")
    print("\n".join(machine_lines(runs)))
    print()
    n, m = len(runs["base"]), len(runs["branch"])
    if rows:
        ab.print_comparison(rows)
    else:
        print("No figures to compare: no run finished.")
    if rows and ab.smallest_p(n, m) > ab.ALPHA:
        print(f"\n{n} and {m} run(s): the smallest p possible is {ab.smallest_p(n, m):.2f}, "
              f"so no verdict can reach p <= {ab.ALPHA}; 4 rounds or more can.")
    noted = [f"{side} run {i}: {problem}" for side in ab.SIDES
             for i, document in enumerate(runs[side], 1)
             for problem in document.get("problems") or []]
    noted += [f"across both sides' runs: {line}" for line in speed_moved(
        [run for side in ab.SIDES for document in runs[side]
         for server_runs in (document.get("runs") or {}).values()
         if isinstance(server_runs, list) for run in server_runs])]
    if noted:
        print("\nProblems the runs noted (figures may be off):\n  " + "\n  ".join(noted))
    if failures:
        print("\nFailed runs:\n  " + "\n  ".join(failures))
    return ab.summary(rows)


def main(argv: Optional[List[str]] = None) -> int:
    """Compare the two trees; the exit code (1 when a side has no run to compare)."""
    args, bench_args = parse_args(sys.argv[1:] if argv is None else list(argv))
    out_dir = args.out_dir or BENCH / "results" / (
        f"compare-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    out_dir.mkdir(parents=True, exist_ok=True)
    trees: Dict[str, Tree] = {}
    try:
        trees["base"] = Tree("base", args.base)
        trees["branch"] = Tree("branch", args.branch)
        for tree in trees.values():
            tree.check_import(sys.executable)
        runs, failures = run_rounds(args, trees, bench_args, out_dir)
        rows = report(trees, runs, failures, bench_args)
    except BenchError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 1
    finally:
        for tree in trees.values():
            tree.remove()
    path = out_dir / "compare.json"
    path.write_text(json.dumps({
        "base": trees["base"].describe(), "branch": trees["branch"].describe(),
        "bench_args": bench_args, "failures": failures, "figures": rows}, indent=1))
    print(f"\nJSON: {path} (and each run's beside it)")
    return 0 if runs["base"] and runs["branch"] else 1


if __name__ == "__main__":
    sys.exit(main())
