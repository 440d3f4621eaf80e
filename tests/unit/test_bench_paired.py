"""bench/paired.py: both sides measured in the same round, each from its own deliveries."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import paired
import pytest
from harness import report, side_by_side, stats
from harness.base import FULL, BenchError
from harness.processes import resolve_peer_dir

ROOT = Path(paired.__file__).parents[1]


class _Server:
    def __init__(self, url: str) -> None:
        self.url = url


def test_x1_puts_the_rooms_on_both_processes_under_one_load_generator() -> None:
    sides = {"standalone": [_Server("http://s")], "clustered": [_Server("http://c")]}
    [config] = side_by_side.loadgen_configs("x1", sides, 2000, 7, 10)  # type: ignore[arg-type]
    assert config["urls"] == ["http://s", "http://c"] and config["sockets"] == 2000
    assert "spread" not in config


def test_span_shares_every_clustered_room_and_spreads_the_control() -> None:
    sides = {"standalone": [_Server("http://s1"), _Server("http://s2")],
             "clustered": [_Server("http://c1"), _Server("http://c2")]}
    clustered, control = side_by_side.loadgen_configs("span", sides, 2000, 7, 10)  # type: ignore[arg-type]
    assert clustered["urls"] == ["http://c1", "http://c2"] and clustered["spread"] == "span"
    assert control["urls"] == ["http://s1", "http://s2"] and "spread" not in control
    assert clustered["sockets"] == control["sockets"] == 1000
    assert clustered["prBase"] != control["prBase"]  # no room is on both sides


@pytest.mark.parametrize("shape", ["x1", "span"])
def test_a_small_run_gives_both_sides_figures_and_their_ratio(shape: str) -> None:
    # the load generator's npm modules, or the test suite's own socket.io-client
    env = {**os.environ, "NODE_PATH": str(ROOT / "tests" / "node" / "node_modules")}
    done = subprocess.run([sys.executable, "bench/paired.py", "--shape", shape, "--rounds", "1",
                           "--sockets", "40", "--duration", "1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"round 1: standalone ([\d.]+) µs per delivery, clustered ([\d.]+), "
                      r"clustered / standalone ([\d.]+)", done.stdout)
    assert found, done.stdout
    standalone, clustered, ratio = map(float, found.groups())
    assert standalone > 0 and clustered > 0
    assert ratio == pytest.approx(clustered / standalone, abs=0.002)


def test_peer_puts_the_rooms_on_prroom_and_the_peer_under_one_load_generator() -> None:
    sides = {"prroom": [_Server("http://p")], "peer": [_Server("http://n")]}
    [config] = side_by_side.loadgen_configs("peer", sides, 2000, 7, 10)  # type: ignore[arg-type]
    assert sorted(config["urls"]) == ["http://n", "http://p"] and config["sockets"] == 2000


def test_a_small_run_against_the_peer_gives_both_figures_of_both_sides() -> None:
    try:
        peer = resolve_peer_dir(None)
    except BenchError as unavailable:  # the peer's sources are not beside this checkout
        pytest.skip(str(unavailable))
    env = {**os.environ, "NODE_PATH": str(ROOT / "tests" / "node" / "node_modules")}
    done = subprocess.run([sys.executable, "bench/paired.py", "--shape", "peer", "--rounds", "1",
                           "--sockets", "40", "--duration", "1", "--peer-dir", str(peer)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for unit in ("µs per delivery", "ms per connect\\+join"):
        found = re.search(rf"peer ([\d.]+) {unit}, prroom ([\d.]+), prroom / peer ([\d.]+)",
                          done.stdout)
        assert found, done.stdout
        peer_cost, prroom_cost, ratio = map(float, found.groups())
        assert peer_cost > 0 and prroom_cost > 0
        assert ratio == pytest.approx(prroom_cost / peer_cost, rel=0.01)


def _round(prroom: Tuple[float, float], peer: Tuple[float, float]) -> Dict[str, Dict[str, float]]:
    """One side-by-side round's figures: (µs per delivery, ms per connect+join) per side."""
    return {"prroom": {"delivery": prroom[0], "connect": prroom[1]},
            "peer": {"delivery": peer[0], "connect": peer[1]}}


def test_side_by_side_rounds_are_judged_by_the_median_of_their_ratios(
        capsys: pytest.CaptureFixture[str]) -> None:
    rounds = [_round((8.0, 0.80), (10.0, 1.0)), _round((9.9, 0.95), (11.0, 1.0)),
              _round((7.0, 0.72), (10.0, 0.8))]
    summary = side_by_side.summary_of(rounds)
    delivery, connect = summary["figures"]
    assert delivery["ratios"] == pytest.approx([0.8, 0.9, 0.7])
    assert delivery["ratio"] == pytest.approx(0.8) and delivery["target"] == ("<=", 0.9)
    assert connect["ratio"] == pytest.approx(0.9) and connect["peer"] == 1.0
    report.print_side_by_side(summary)
    out = capsys.readouterr().out
    assert "3 round(s)" in out
    assert re.search(r"server CPU µs per delivery +\| +10\.00 \| +8\.00 \| +0\.80 \| "
                     r"0\.800, 0\.900, 0\.700 \| <= 0\.9 +\| yes", out), out
    assert re.search(r"server CPU ms per connect\+join +\| +1\.000 \| +0\.800 \| +0\.90 \|",
                     out), out


def test_a_ratio_past_its_target_side_by_side_is_said_not_to_hold(
        capsys: pytest.CaptureFixture[str]) -> None:
    report.print_side_by_side(side_by_side.summary_of([_round((9.5, 0.5), (10.0, 1.0))]))
    line = next(line for line in capsys.readouterr().out.splitlines() if "per delivery" in line)
    assert line.rstrip().endswith("NO"), line


def test_the_peer_table_judges_a_figure_measured_side_by_side_by_that_ratio(
        capsys: pytest.CaptureFixture[str]) -> None:
    label = next(figure.label for figure in stats.figures(FULL)
                 if figure.key == "connect_cpu_ms_per_join")
    rows = [{"figure": label, "scenario": "rooms", "key": "connect_cpu_ms_per_join",
             "prroom": 0.97, "peer": 1.0, "ratio prroom/peer": 0.97}]
    summary = side_by_side.summary_of([_round((8.0, 0.81), (10.0, 1.0))])
    report.print_against_peer(rows, ["prroom", "peer"], FULL)
    alone = capsys.readouterr().out
    report.print_against_peer(rows, ["prroom", "peer"], FULL, summary)
    judged = capsys.readouterr().out
    assert re.search(r"0\.97 \| <= 0\.9 \| +NO", alone), alone
    assert re.search(r"0\.97 \| <= 0\.9 \| +yes \(side by side: 0\.81\)", judged), judged


def _cluster(*pairs: Tuple[float, float]) -> List[Dict[str, Dict[str, float]]]:
    """Cluster rounds: (clustered, standalone) µs per delivery each."""
    return [{"clustered": {"delivery": c}, "standalone": {"delivery": s}} for c, s in pairs]


def test_cluster_rounds_are_held_to_the_cluster_targets(
        capsys: pytest.CaptureFixture[str]) -> None:
    x1 = side_by_side.summary_of(_cluster((11.0, 10.0), (11.5, 10.0), (10.8, 10.0)), "x1")
    span = side_by_side.summary_of(_cluster((12.3, 10.0)), "span")
    [x1_delivery], [span_delivery] = x1["figures"], span["figures"]
    assert x1_delivery["ratio"] == pytest.approx(1.1)
    assert x1_delivery["target"][1] == pytest.approx(1 / 0.9)
    assert span_delivery["target"] == ("<=", 1.2)
    report.print_side_by_side(x1)
    report.print_side_by_side(span)
    out = capsys.readouterr().out
    assert re.search(r"standalone \| clustered \| clustered / standalone", out), out
    assert re.search(r"10\.00 \| +11\.00 \| +1\.10 \| 1\.100, 1\.150, 1\.080 \| <= 1\.11 \| yes",
                     out), out
    assert re.search(r"10\.00 \| +12\.30 \| +1\.23 \| 1\.230 +\| <= 1\.2 +\| NO", out), out
