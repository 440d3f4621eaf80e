"""bench/paired.py: both sides measured in the same round, each from its own deliveries."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import paired
import pytest
from harness import side_by_side
from harness.base import BenchError
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
