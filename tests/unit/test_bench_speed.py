"""The benchmark's machine-speed probe: measured on each core before a run, and a problem
line when the machine's speed moved between runs (a median then mixes speeds)."""
from __future__ import annotations

import os

import compare
from harness import sampling, stats
from harness.ab_runs import Tree


def test_the_probe_times_the_same_work_on_each_allowed_core():
    cores = sorted(os.sched_getaffinity(0))
    speeds = sampling.core_speed(cores, samples=2)
    assert sorted(speeds) == cores
    assert all(len(values) == 2 and all(v > 0 for v in values) for values in speeds.values())


def run(**probes):
    """A run's record with only its probes (as the JSON keeps them: cores as strings)."""
    return {"core_speed_us": {core[1:]: values for core, values in probes.items()}}


def test_runs_at_one_speed_raise_no_problem():
    runs = {"prroom": [run(c0=[6000, 6100]), run(c0=[6050])], "peer": [run(c0=[6200])]}
    assert stats.problems(runs) == []


def test_a_speed_that_moved_between_runs_is_named_with_its_core_and_range():
    runs = {"prroom": [run(c0=[6000], c1=[6100]), run(c0=[6050], c1=[9300])],
            "peer": [run(c0=[6200], c1=[6000])]}
    [line] = stats.problems(runs)
    assert "core 1" in line and "6,000–9,300 µs" in line and "1.55×" in line


def test_runs_without_probes_are_read_as_before():
    # results written before the probe existed
    assert stats.speed_moved([{"background_core_busy": {"0": 0.0}}]) == []


def test_a_comparison_says_when_the_speed_moved_between_its_sides(capsys):
    runs = {"base": [{"runs": {"prroom": [run(c0=[6000])]}}],
            "branch": [{"runs": {"prroom": [run(c0=[9000])]}}]}
    trees = {side: Tree(side, None) for side in runs}  # this checkout, on both sides
    compare.report(trees, runs, [], ["--quick"])
    printed = capsys.readouterr().out
    assert "across both sides' runs: the machine's speed moved" in printed
    assert "6,000–9,000 µs on core 0 (1.50×)" in printed
