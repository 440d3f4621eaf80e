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


def _paired_against_peer(*args: str) -> str:
    """``bench/paired.py`` with ``args`` against the Node peer: its output (skipped, saying
    why, when the peer's sources are not beside this checkout)."""
    try:
        peer = resolve_peer_dir(None)
    except BenchError as unavailable:
        pytest.skip(str(unavailable))
    env = {**os.environ, "NODE_PATH": str(ROOT / "tests" / "node" / "node_modules")}
    done = subprocess.run([sys.executable, "bench/paired.py", *args, "--rounds", "1",
                           "--peer-dir", str(peer)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _assert_both_sides(out: str, units: Tuple[str, ...], rel: float) -> None:
    """Each of ``units`` (regular expressions) is in ``out`` with both sides' figures, each
    above 0, and prroom / peer as their ratio (to ``rel``: the figures are rounded)."""
    for unit in units:
        found = re.search(rf"peer ([\d.]+) {unit}, prroom ([\d.]+), prroom / peer ([\d.]+)",
                          out)
        assert found, out
        peer_value, prroom_value, ratio = map(float, found.groups())
        assert peer_value > 0 and prroom_value > 0
        assert ratio == pytest.approx(prroom_value / peer_value, rel=rel)


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
    assert ratio == pytest.approx(clustered / standalone, rel=0.01)


def test_peer_puts_the_rooms_on_prroom_and_the_peer_under_one_load_generator() -> None:
    sides = {"prroom": [_Server("http://p")], "peer": [_Server("http://n")]}
    [config] = side_by_side.loadgen_configs("peer", sides, 2000, 7, 10)  # type: ignore[arg-type]
    assert sorted(config["urls"]) == ["http://n", "http://p"] and config["sockets"] == 2000


def test_a_small_run_against_the_peer_gives_both_figures_of_both_sides() -> None:
    # enough joins that each side's connecting CPU spans several of the clock's 10 ms ticks
    out = _paired_against_peer("--shape", "peer", "--sockets", "400", "--duration", "1")
    _assert_both_sides(out, ("µs per delivery", "ms per connect\\+join"), rel=0.01)


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


def test_rooms_rounds_say_whether_the_load_generator_or_the_server_core_set_the_pace(
        capsys: pytest.CaptureFixture[str]) -> None:
    def rounds(*cpus: float) -> List[Dict[str, Dict[str, float]]]:
        return [{**_round((8.0, 0.80), (10.0, 1.0)), "loadgen": {"cpu": cpu},
                 "core": {"busy": 99.0}} for cpu in cpus]

    report.print_side_by_side(side_by_side.summary_of(rounds(99.2, 98.7)))
    out = capsys.readouterr().out
    assert "the load generator's CPU, % of its core, round by round: 99, 99 (it set the " \
           "pace)" in out, out
    assert "the shared server core, % busy while the sides sent, round by round: 99, 99" in out
    report.print_side_by_side(side_by_side.summary_of(rounds(99.0, 61.0)))
    out = capsys.readouterr().out
    assert "round by round: 99, 61 (below full: the shared server core set the pace" in out
    assert "last copy - first" not in out  # the fan-out's explanation is the fan-out's


def test_fan_out_rounds_say_the_load_generator_queued_only_when_its_core_was_full(
        capsys: pytest.CaptureFixture[str]) -> None:
    def fanout(cpu: float) -> Dict[str, Dict[str, float]]:
        return {**_fanout_round((5.0, 14.0), (5.0, 14.0)), "loadgen": {"cpu": cpu}}

    report.print_side_by_side(side_by_side.summary_of([fanout(57.0)], "fanout"))
    out = capsys.readouterr().out
    assert "round by round: 57\n" in out, out
    report.print_side_by_side(side_by_side.summary_of([fanout(93.0)], "fanout"))
    out = capsys.readouterr().out
    assert "round by round: 93 (its core full: its own queue sets the latencies)" in out, out


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
    report.print_against_peer(rows, ["prroom", "peer"], FULL, [summary])
    judged = capsys.readouterr().out
    assert re.search(r"0\.97 \| <= 0\.9 \| +NO", alone), alone
    assert re.search(r"0\.97 \| <= 0\.9 \| +yes \(side by side: 0\.81\)", judged), judged


def _phase(server: float, loadgen: float) -> Dict[str, float]:
    """A timed phase's CPU: each side's % of its core, nothing else on the cores."""
    return {"server_cpu": server, "server_core_busy": server, "loadgen_cpu": loadgen,
            "loadgen_core_busy": loadgen}


def test_a_phase_where_both_cores_ran_full_names_the_server_first_only_when_it_was_fuller(
        ) -> None:
    assert stats.limit_side(_phase(98.9, 87.2)) == "both, server first: srv 99%, lg 87%"
    assert stats.limit_side(_phase(91.2, 99.1)) == "both: srv 91%, lg 99%"
    assert stats.limit_side(_phase(98.5, 78.2)) == "server: srv 98%, lg 78%"
    assert stats.limit_side(_phase(39.0, 91.6)) == "loadgen: srv 39%, lg 92%"


@pytest.mark.parametrize("limits, shown", [
    # the wire client's run: both servers' cores full, the rate is each server's own
    (("server: srv 98%, lg 78%", "both, server first: srv 99%, lg 87%"),
     r"1\.19 \| >= 1\.1 \| +yes"),
    # socket.io-client's: prroom's load generator ran out before prroom did
    (("both: srv 91%, lg 99%", "both: srv 98%, lg 99%"), r"n/a: load generator saturated"),
])
def test_a_rate_is_judged_only_where_no_load_generator_ran_out_before_its_server(
        capsys: pytest.CaptureFixture[str], limits: Tuple[str, str], shown: str) -> None:
    label = next(figure.label for figure in stats.figures(FULL)
                 if figure.key == "deliveries_per_s")
    rows = [{"figure": label, "scenario": "rooms", "key": "deliveries_per_s",
             "prroom": 170_496.0, "peer": 143_051.0, "ratio prroom/peer": 1.19,
             "prroom_limit": limits[0], "peer_limit": limits[1]}]
    report.print_against_peer(rows, ["prroom", "peer"], FULL)
    out = capsys.readouterr().out
    assert re.search(shown, out), out


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


def _fanout_round(prroom: Tuple[float, float], peer: Tuple[float, float]
                  ) -> Dict[str, Dict[str, float]]:
    """One fan-out round: (p50, p99) ms per side; the first copy and CPU alike on both."""
    return {**{name: {"p50": p50, "p99": p99, "first": 0.3, "spread": 9.0, "fanout_cpu": 8.0}
               for name, (p50, p99) in (("prroom", prroom), ("peer", peer))},
            "loadgen": {"cpu": 64.0}}


def test_fan_out_rounds_judge_both_percentiles_and_only_show_the_rest(
        capsys: pytest.CaptureFixture[str]) -> None:
    summary = side_by_side.summary_of([_fanout_round((4.2, 12.0), (3.6, 40.0)),
                                       _fanout_round((3.5, 11.0), (3.9, 38.0)),
                                       _fanout_round((3.4, 13.0), (3.8, 41.0))], "fanout")
    p50, p99, first, spread, cpu = summary["figures"]
    assert p50["ratio"] == pytest.approx(3.5 / 3.9) and p50["target"] == ("<=", 1.0)
    assert p99["target"] == ("<=", 1.0) and p99["key"] == ("fanout", "p99_ms")
    assert first["target"] is None and cpu["target"] is None and first["key"] is None
    assert spread["target"] is None and spread["key"] is None
    report.print_side_by_side(summary)
    out = capsys.readouterr().out
    assert re.search(r"fan-out p50 ms +\| +3\.80 \| +3\.50 \| +0\.90 \| "
                     r"1\.167, 0\.897, 0\.895 \| <= 1 +\| yes", out), out
    assert re.search(r"first copy's p50 ms +\| +0\.30 \| +0\.30 \| +1\.00 \| .* \| - +\| -",
                     out), out
    assert "the load generator's CPU, % of its core, round by round: 64, 64, 64" in out
    assert re.search(r"last copy - first, ms \(median\) +\| +9\.00 \| +9\.00 \| +1\.00", out), out


def test_the_peer_table_judges_the_fan_out_by_its_side_by_side_ratio(
        capsys: pytest.CaptureFixture[str]) -> None:
    label = next(figure.label for figure in stats.figures(FULL) if figure.key == "p50_ms")
    rows = [{"figure": label, "scenario": "fanout", "key": "p50_ms", "prroom": 4.25,
             "peer": 3.66, "ratio prroom/peer": 1.16}]
    rooms = side_by_side.summary_of([_round((8.0, 0.81), (10.0, 1.0))])
    fanout = side_by_side.summary_of([_fanout_round((3.4, 12.0), (3.8, 40.0))], "fanout")
    report.print_against_peer(rows, ["prroom", "peer"], FULL, [rooms, fanout])
    out = capsys.readouterr().out
    assert re.search(r"1\.16 \| +<= 1 \| +yes \(side by side: 0\.89\)", out), out


def test_one_load_generator_fans_out_to_two_servers_in_turn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The side-by-side fan-out's load generator (no peer needed: two prroom servers)."""
    from harness.loadgen import Loadgen
    from harness.processes import PrroomServer

    monkeypatch.setenv("NODE_PATH", str(ROOT / "tests" / "node" / "node_modules"))
    servers = [PrroomServer(None, tmp_path, 100, {}, name=f"s{n}") for n in range(2)]
    try:
        for server in servers:
            server.start()
        config = dict(scenario="fanout", urls=[s.url for s in servers], members=20,
                      messages=10, intervalMs=5, block=4, blockGapMs=10, prBase=70,
                      drainSeconds=10, ack=False)
        barriers: List[str] = []
        [result] = Loadgen([config], [None], tmp_path, 400).run(
            lambda name, data: barriers.append(name), 120)
    finally:
        for server in servers:
            server.stop()
    assert barriers == ["connect:start", "connect:end", "fanout:start", "fanout:end"]
    assert [entry["url"] for entry in result["byServer"]] == [s.url for s in servers]
    for entry in result["byServer"]:
        # each server's room got its own 10 messages (blocks of 4, 4 and 2), to all 20
        # members, nothing else
        assert (entry["joined"], entry["expected"], entry["received"], entry["extra"]) == \
            (20, 200, 200, 0)
        assert 0 < entry["firstP50Ms"] <= entry["p50Ms"] <= entry["p99Ms"]
    assert result["received"] == 400 and result["lateSends"] >= 0


def test_a_small_fan_out_against_the_peer_gives_both_sides_latency() -> None:
    out = _paired_against_peer("--shape", "fanout", "--members", "100", "--messages", "20")
    _assert_both_sides(out, ("ms fan-out p50", "ms fan-out p99", "µs per fan-out copy"),
                       rel=0.02)


def test_a_side_whose_cpu_clock_read_nothing_is_refused_not_divided_by() -> None:
    idle = {"prroom": {"fanout_cpu": 4.0}, "peer": {"fanout_cpu": 0.0}}
    with pytest.raises(BenchError, match="peer side's µs per fan-out copy read 0.0: too little"):
        side_by_side.ratio_of(idle, "fanout", "fanout_cpu")


def test_idle_rounds_are_held_to_the_idle_targets(capsys: pytest.CaptureFixture[str]) -> None:
    rounds = [{"prroom": {"idle_cpu": cpu, "idle_kb": 10.2}, "peer": {"idle_cpu": 0.8,
                                                                       "idle_kb": 15.5}}
              for cpu in (0.70, 0.75, 0.84)]
    summary = side_by_side.summary_of(rounds, "idle")
    cpu, kb = summary["figures"]
    assert cpu["ratio"] == pytest.approx(0.9375) and cpu["target"] == ("<=", 1.0)
    assert kb["key"] == ("idle", "kb_per_socket") and kb["target"] == ("<=", 0.8)
    report.print_side_by_side(summary)
    out = capsys.readouterr().out
    assert re.search(r"idle CPU, % of a core per 1,000 sockets \| +0\.800 \| +0\.750 \| +0\.94 "
                     r"\| 0\.875, 0\.938, 1\.050 \| <= 1 +\| yes", out), out
    assert re.search(r"KB per idle socket +\| +15\.5 \| +10\.2 \| +0\.66 \|", out), out


def test_a_small_idle_round_against_the_peer_gives_both_sides_figures() -> None:
    out = _paired_against_peer("--shape", "idle", "--idle-sockets", "400")
    found = re.search(r"peer ([\d.]+) KB per idle socket, prroom ([\d.]+), prroom / peer "
                      r"([\d.]+)", out)
    assert found, out
    peer_kb, prroom_kb, ratio = map(float, found.groups())
    assert 0 < prroom_kb < peer_kb  # each side's own memory, not the other's
    assert ratio == pytest.approx(prroom_kb / peer_kb, rel=0.02)
    assert re.search(r"% of a core per 1,000 idle sockets, prroom [\d.]+", out), out
