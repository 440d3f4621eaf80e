"""bench/compare.py's pure parts: the order of the runs, the figures it reads out of
bench/run.py's results (built here by the harness's own summaries, as run.py builds them),
and the statistics behind its verdicts."""
from __future__ import annotations

import itertools
import math
from typing import Any, Dict, List, Sequence

import compare
import pytest
from harness import ab
from harness.base import QUICK
from harness.cluster import configs_of
from harness.cluster_report import summarize_cluster
from harness.stats import summarize


def brute_force_p(first: Sequence[float], second: Sequence[float]) -> float:
    """The two-sided permutation p of the rank sum, by listing every split."""
    pooled = list(first) + list(second)
    ranks = ab.midranks(pooled)
    n = len(first)
    expected = n * (len(pooled) + 1) / 2
    observed = abs(sum(ranks[:n]) - expected)
    splits = list(itertools.combinations(range(len(pooled)), n))
    extreme = sum(1 for split in splits
                  if abs(sum(ranks[i] for i in split) - expected) >= observed - 1e-9)
    return extreme / len(splits)


def test_runs_alternate_abba_and_each_side_runs_once_a_round() -> None:
    assert [side for _, side in ab.order(3)] == [
        "base", "branch", "branch", "base", "base", "branch"]
    assert [number for number, _ in ab.order(2)] == [1, 1, 2, 2]


def test_p_of_fully_separated_runs_is_the_smallest_possible() -> None:
    assert ab.mann_whitney_p([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    assert ab.smallest_p(4, 4) == pytest.approx(2 / 70)
    assert ab.mann_whitney_p([1, 2], [3, 4]) == pytest.approx(1 / 3)


@pytest.mark.parametrize("first, second", [
    ([11.5, 12.0, 15.9], [12.1, 13.0, 14.0]),
    ([1, 3, 5, 7], [2, 4, 6, 8]),
    ([1, 2, 2, 3], [2, 3, 3, 4]),     # ties: mid-ranks, p conditional on them
    ([5, 5, 5], [5, 5]),
    ([1, 2, 3], [4, 5, 6, 7, 8]),
])
def test_p_is_the_exact_permutation_p_with_or_without_ties(first: List[float],
                                                            second: List[float]) -> None:
    assert ab.mann_whitney_p(first, second) == pytest.approx(brute_force_p(first, second))
    assert ab.mann_whitney_p(second, first) == pytest.approx(ab.mann_whitney_p(first, second))


def test_verdict_names_the_way_and_whether_it_is_better() -> None:
    cost = ab.Compared("us", "cpu_us_per_delivery", [10, 11, 12, 13], [14, 15, 16, 17])
    assert ab.verdict(cost) == "branch higher (worse), p=0.029"
    rate = ab.Compared("rate", "deliveries_per_s", [10, 11, 12, 13], [14, 15, 16, 17])
    assert ab.verdict(rate) == "branch higher (better), p=0.029"


def test_verdict_with_too_few_runs_or_overlapping_ones() -> None:
    apart = ab.Compared("us", "cpu_us_per_delivery", [12.0, 13.0], [10.0, 11.0])
    assert ab.verdict(apart).startswith("ranges apart, branch lower (better); p=0.33")
    mixed = ab.Compared("us", "cpu_us_per_delivery", [11.5, 15.9, 12.0], [12.1, 13.0, 14.0])
    assert ab.verdict(mixed) == "within the spread (p=0.70)"
    assert ab.verdict(ab.Compared("us", "p50_ms", [1.0], [])).startswith("n/a")


def standard_document(us_per_delivery: float) -> Dict[str, Any]:
    """A results file as run.py writes it, for a rooms-only run of prroom."""
    run = {"rooms": {"sockets_per_s": 900.0, "connect_cpu_ms_per_join": 0.5,
                     "kb_per_socket": 30.0, "deliveries_per_s": 20000.0,
                     "cpu_us_per_delivery": us_per_delivery}}
    runs = {"prroom": [run]}
    return {"meta": {}, "summary": summarize(QUICK, runs), "runs": runs}


def test_figures_are_read_from_a_standard_results_file() -> None:
    readings = {r.key: r for r in ab.readings(standard_document(12.5))}
    assert readings["cpu_us_per_delivery"].value == 12.5
    assert readings["cpu_us_per_delivery"].label == "4. cost: server CPU us per delivery"
    assert "p50_ms" not in readings   # fanout not run


def test_several_servers_are_told_apart() -> None:
    document = standard_document(12.5)
    document["runs"]["peer"] = [document["runs"]["prroom"][0]]
    document["summary"] = summarize(QUICK, document["runs"])
    labels = [r.label for r in ab.readings(document) if r.key == "kb_per_socket"]
    assert labels == ["prroom: 2. memory: KB per socket (400 joined)",
                      "peer: 2. memory: KB per socket (400 joined)"]


def test_figures_are_read_from_a_cluster_results_file() -> None:
    result = {key: 1.0 for key in ("deliveries_per_s", "serving_cpu_us_per_delivery",
                                   "deployment_cpu_us_per_delivery")}
    configs = configs_of([2], observer=False)
    runs = {c.label: [{**result, "throughput": {}, "processes": []}] for c in configs}
    document = {"configs": [], "summary": summarize_cluster(configs, runs), "runs": runs}
    labels = {r.label for r in ab.readings(document)}
    assert "cluster x2 local: deployment us/delivery" in labels
    assert "standalone: deliveries/s" in labels


def test_collect_keeps_each_sides_values_and_a_figure_only_one_side_has() -> None:
    base = [standard_document(12.0), standard_document(13.0)]
    branch = [standard_document(10.0)]
    del branch[0]["runs"]["prroom"][0]["rooms"]["kb_per_socket"]
    branch[0]["summary"] = summarize(QUICK, branch[0]["runs"])
    rows = {row.key: row for row in ab.collect({"base": base, "branch": branch})}
    assert (rows["cpu_us_per_delivery"].base, rows["cpu_us_per_delivery"].branch) == (
        [12.0, 13.0], [10.0])
    assert rows["kb_per_socket"].branch == []
    summary = {line["key"]: line for line in ab.summary(list(rows.values()))}
    assert summary["cpu_us_per_delivery"]["ratio"] == pytest.approx(10.0 / 12.5, abs=1e-3)
    assert summary["kb_per_socket"]["ratio"] is None


@pytest.mark.parametrize("value, text", [(23456.7, "23,457"), (12.34, "12.3"),
                                         (1.234, "1.23"), (0.5123, "0.512")])
def test_figures_are_shown_with_digits_to_their_size(value: float, text: str) -> None:
    assert ab.shown(value) == text


def test_options_compare_sets_itself_are_refused() -> None:
    with pytest.raises(SystemExit):
        compare.parse_args(["--base", "main", "--", "--quick", "--runs", "3"])
    args, bench_args = compare.parse_args(["--base", "main", "--rounds", "2", "--",
                                           "--quick"])
    assert (args.rounds, bench_args) == (2, ["--quick"])
    assert math.isclose(args.run_timeout, 30)
