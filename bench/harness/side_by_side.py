"""Two servers measured in the same seconds: the rounds of ``bench/paired.py``, and the
side-by-side rounds that end ``bench/run.py --peer`` and ``bench/run.py --cluster``.

Both sides run on the server core at once under one load generator process per side (one
for both where every room lives on one of them, alternately), so whatever slows the machine
slows both; each side's figures are its own CPU time over its own deliveries and joins.
The fan-out's rounds (``fanout``, against the peer) time latency instead, in one load
generator process (one clock): a room of its own on each side, and the messages in blocks
of 100 to one side, then the other, back and forth (ABBA), each block's copies all in before
the next starts.  Not interleaved message by message: so measured, each side's fan-out ran
in the wake of the other's on the shared core.  Not small blocks either: the scenario is
200 sustained messages, and a pause every 25 gives a runtime idle time for housekeeping (the
peer's garbage collector, most likely) that it otherwise does during the fan-out.  The
messages go at twice the scenario's interval: that one process reads every copy, and at the
scenario's rate it used 98-100% of its core on a slow minute, where its own queue, not
either server, set the latencies.  Each round says how busy it was.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from .base import SOCKETS_PER_LOADGEN, BenchError, Layout, log
from .loadgen import Loadgen
from .processes import PeerServer, PrroomServer, RedisServer, Server
from .sampling import Snapshot, core_busy, snapshot
from .scenarios import idle_hold
from .stats import TARGETS

Side = List[Server]
#: Each shape's two sides: (the one measured, the one it is measured against).
SIDES = {"x1": ("clustered", "standalone"), "span": ("clustered", "standalone"),
         "peer": ("prroom", "peer"), "fanout": ("prroom", "peer"), "idle": ("prroom", "peer")}


def start_sides(shape: str, layout: Layout, logs: Path, redis: Optional[RedisServer],
                sockets: int, channel: str, peer: Optional[PeerServer],
                extra_env: Optional[Dict[str, str]] = None) -> Dict[str, Side]:
    """The two sides' processes of one round, started and ready (``extra_env`` for the
    standalone ones)."""
    count = 2 if shape == "span" else 1
    per_process = sockets // (2 * count) + 200
    core = layout.server_core(0)
    standalone: List[PrroomServer] = [
        PrroomServer(core, logs, per_process, dict(extra_env or {}), name=f"s{n + 1}")
        for n in range(count)]
    if shape in ("peer", "fanout"):
        assert peer is not None
        standalone[0].name = "prroom"
        sides: Dict[str, Side] = {"prroom": list(standalone), "peer": [peer]}
    else:
        assert redis is not None
        clustered_env = {"PRROOM_MESSAGE_QUEUE": redis.url, "PRROOM_CHANNEL": channel}
        sides = {"standalone": list(standalone),
                 "clustered": [PrroomServer(core, logs, per_process, clustered_env,
                                            name=f"c{n + 1}") for n in range(count)]}
    prroom = [p for side in sides.values() for p in side if isinstance(p, PrroomServer)]
    try:
        for proc in prroom:
            proc.launch()
        if peer is not None:
            peer.start()
        for proc in prroom:
            proc.wait_ready()
    except BaseException:
        for side in sides.values():
            for started in side:
                started.stop()
        raise
    return sides


def stop(sides: Dict[str, Side]) -> None:
    """Stop every process of a round's sides."""
    for side in sides.values():
        for proc in side:
            proc.stop()


def loadgen_configs(shape: str, sides: Dict[str, Side], sockets: int, pr_base: int,
                    duration: float) -> List[Dict[str, Any]]:
    """The load generator processes' configurations (one per side, except ``x1``'s one)."""
    common = dict(scenario="rooms", roomSize=10, warmup=2, duration=duration)
    if shape != "span":
        measured, against = SIDES[shape]
        urls = [sides[against][0].url, sides[measured][0].url]
        return [dict(common, urls=urls, sockets=sockets, prBase=pr_base)]
    return [dict(common, urls=[p.url for p in sides["clustered"]], spread="span",
                 sockets=sockets // 2, prBase=pr_base),
            dict(common, urls=[p.url for p in sides["standalone"]], sockets=sockets // 2,
                 prBase=pr_base + 1_000_000)]


def one_round(shape: str, layout: Layout, logs: Path, redis: Optional[RedisServer],
              sockets: int, duration: float, number: int, nofile: int,
              peer: Optional[PeerServer] = None, extra_env: Optional[Dict[str, str]] = None
              ) -> Dict[str, Dict[str, float]]:
    """Each side's figures in one round: ``delivery``, CPU µs per delivery; ``connect``,
    CPU ms per connect+join; ``loadgen``, the load generator's CPU while they sent
    (``cpu``, % of its core); and ``core``, how busy the shared server core was meanwhile
    (``busy``, %), where the servers are pinned."""
    sides = start_sides(shape, layout, logs, redis, sockets, f"paired-{number}", peer,
                        extra_env)
    try:
        pids = {p.name: p.pid for side in sides.values() for p in side}
        snaps: Dict[str, Snapshot] = {}
        configs = loadgen_configs(shape, sides, sockets, 1000 + number * 10_000_000, duration)
        results = Loadgen(configs, [layout.loadgen_core(0)] * len(configs), logs, nofile,
                          layout.client).run(
            lambda name, data: snaps.__setitem__(name, snapshot(pids)), 180 + duration)
        by_url: Dict[str, Dict[str, int]] = {}
        for result in results:
            for server in result.get("byServer", []):
                by_url[server["url"]] = server
        figures: Dict[str, Dict[str, float]] = {}
        for label, side in sides.items():
            figures[label] = {}
            for figure, phase, count_key, scale in (("delivery", "throughput", "delivered", 1e6),
                                                    ("connect", "connect", "sockets", 1e3)):
                start, end = snaps[f"{phase}:start"], snaps[f"{phase}:end"]
                cpu = sum(end["cpu"][p.name] - start["cpu"][p.name] for p in side)
                count = sum(by_url.get(str(p.url), {}).get(count_key, 0) for p in side)
                if not count:
                    raise BenchError(f"round {number + 1}: the {label} side had no {count_key}")
                figures[label][figure] = cpu / count * scale
        busy = core_busy(snaps["throughput:start"], snaps["throughput:end"],
                         layout.server_core(0))
        if busy is not None:
            figures["core"] = {"busy": busy[0]}
        # its processes share one core: their sum is how much of it they used
        figures["loadgen"] = {"cpu": sum(float(r["throughput"]["cpuPercent"])
                                         for r in results)}
        return figures
    finally:
        stop(sides)


def fanout_round(layout: Layout, logs: Path, sizes: Dict[str, Any], number: int, nofile: int,
                 peer: PeerServer, extra_env: Optional[Dict[str, str]] = None
                 ) -> Dict[str, Dict[str, float]]:
    """Each side's fan-out figures in one round (see :data:`FANOUT_KEYS`), and its CPU µs
    per copy over the fan-out phase (``fanout_cpu``)."""
    members = sizes["fanout_members"]
    sides = start_sides("fanout", layout, logs, None, 2 * members, "", peer, extra_env)
    try:
        pids = {p.name: p.pid for side in sides.values() for p in side}
        snaps: Dict[str, Snapshot] = {}
        urls = [sides["peer"][0].url, sides["prroom"][0].url]
        config = dict(scenario="fanout", urls=urls, members=members,
                      messages=sizes["fanout_messages"],
                      intervalMs=2 * sizes["fanout_interval_ms"], block=100,
                      prBase=1000 + number * 10_000_000, drainSeconds=15,
                      ack=bool(sizes.get("fanout_ack")))
        [result] = Loadgen([config], [layout.loadgen_core(0)], logs, nofile,
                           layout.client).run(
            lambda name, data: snaps.__setitem__(name, snapshot(pids)), 180)
        by_url = {str(server["url"]): server for server in result["byServer"]}
        figures: Dict[str, Dict[str, float]] = {}
        for label, side in sides.items():
            got = by_url[str(side[0].url)]
            if got["received"] < got["expected"] or not got["received"]:
                raise BenchError(f"fan-out round {number + 1}: the {label} side's sockets "
                                 f"received {got['received']:,} of {got['expected']:,} copies")
            start, end = snaps["fanout:start"], snaps["fanout:end"]
            cpu = sum(end["cpu"][p.name] - start["cpu"][p.name] for p in side)
            figures[label] = {figure: float(got[key]) for figure, key in FANOUT_KEYS.items()}
            figures[label]["fanout_cpu"] = cpu / got["received"] * 1e6
        # not a side: how busy the one reader of every copy was (% of its core)
        figures["loadgen"] = {"cpu": float(result["fanout"]["cpuPercent"])}
        return figures
    finally:
        stop(sides)


def idle_round(layout: Layout, logs: Path, sizes: Dict[str, Any], number: int, nofile: int,
               peer: PeerServer, extra_env: Optional[Dict[str, str]] = None
               ) -> Dict[str, Dict[str, float]]:
    """Each side's idle figures in one round: ``idle_cpu``, % of a core per 1,000 sockets
    held through two ping rounds, and ``idle_kb``, RSS per socket held.  Both servers hold
    ``idle_sockets`` at once (every room on one of them, alternately), with the sequential
    scenario's ping interval."""
    total = 2 * sizes["idle_sockets"]
    room = sizes["room_size"]
    processes = max(1, math.ceil(total / SOCKETS_PER_LOADGEN))
    # whole pairs of rooms per process: room r of a process lives on server r % 2
    pairs = total // (2 * room)
    shares = [2 * room * (pairs // processes + (1 if i < pairs % processes else 0))
              for i in range(processes)]
    prroom = PrroomServer(layout.server_core(0), logs, sizes["idle_sockets"] + 200,
                          dict(extra_env or {}))
    sides: Dict[str, Side] = {"prroom": [prroom], "peer": [peer]}
    try:
        prroom.launch(sizes["idle_ping"])
        peer.start(sizes["idle_ping"])
        prroom.wait_ready()
        pids = {p.name: p.pid for side in sides.values() for p in side}
        snaps: Dict[str, Snapshot] = {}

        def on_barrier(name: str, data: List[Dict[str, Any]]) -> None:
            snaps[name] = snapshot(pids)
            if name == "connect:end":
                time.sleep(idle_hold(data)[0])  # as long as the sequential scenario holds

        urls = [peer.url, prroom.url]
        configs = [dict(scenario="idle", urls=urls, sockets=share, roomSize=room,
                        prBase=1000 + number * 10_000_000 + n * (share // room + 1),
                        tag=f"s{n}") for n, share in enumerate(shares)]
        results = Loadgen(configs, [layout.loadgen_core(n) for n in range(processes)], logs,
                          nofile, layout.client).run(on_barrier, 300 + 3 * 60)
        joined: Dict[str, int] = {}
        held: Dict[str, int] = {}
        for result in results:
            for server in result["byServer"]:
                url = str(server["url"])
                joined[url] = joined.get(url, 0) + server["joined"]
                held[url] = held.get(url, 0) + server["stillConnected"]
        figures: Dict[str, Dict[str, float]] = {}
        start, held_at, end = snaps["connect:start"], snaps["connect:end"], snaps["hold:end"]
        for label, side in sides.items():
            name, count = side[0].name, joined.get(str(side[0].url), 0)
            kept = held.get(str(side[0].url), 0)
            if count < sizes["idle_sockets"] or kept < count:
                raise BenchError(f"idle round {number + 1}: the {label} side had {count:,} of "
                                 f"{sizes['idle_sockets']:,} sockets joined, {kept:,} held")
            cpu = end["cpu"][name] - held_at["cpu"][name]
            figures[label] = {
                "idle_cpu": 100 * cpu / (end["t"] - held_at["t"]) * 1000 / count,
                "idle_kb": (held_at["rss_kb"][name] - start["rss_kb"][name]) / count}
        return figures
    finally:
        stop(sides)


#: Each figure's unit, said after a value; and its row in a table.
UNITS = {"delivery": "µs per delivery", "connect": "ms per connect+join",
         "p50": "ms fan-out p50", "p99": "ms fan-out p99", "first": "ms fan-out first copy p50",
         "spread": "ms from a message's first copy to its last (median)",
         "fanout_cpu": "µs per fan-out copy", "idle_cpu": "% of a core per 1,000 idle sockets",
         "idle_kb": "KB per idle socket"}
LABELS = {"delivery": "server CPU µs per delivery", "connect": "server CPU ms per connect+join",
          "p50": "fan-out p50 ms", "p99": "fan-out p99 ms",
          "first": "fan-out: first copy's p50 ms",
          "spread": "fan-out: last copy - first, ms (median)",
          "fanout_cpu": "server CPU µs per fan-out copy",
          "idle_cpu": "idle CPU, % of a core per 1,000 sockets", "idle_kb": "KB per idle socket"}
DIGITS = {"delivery": 2, "connect": 3, "p50": 2, "p99": 2, "first": 2, "spread": 2,
          "fanout_cpu": 2, "idle_cpu": 3, "idle_kb": 1}
#: Where each of the load generator's fan-out figures comes from (its ``byServer`` entries).
FANOUT_KEYS = {"p50": "p50Ms", "p99": "p99Ms", "first": "firstP50Ms",
               "spread": "spreadP50Ms"}


def figures_of(shape: str) -> Tuple[str, ...]:
    """The figures a shape's rounds give (connect+join only against the peer)."""
    if shape == "fanout":
        return ("p50", "p99", "first", "spread", "fanout_cpu")
    if shape == "idle":
        return ("idle_cpu", "idle_kb")
    return ("delivery", "connect") if shape == "peer" else ("delivery",)

#: The peer table's targets the side-by-side figures are held to (``stats.TARGETS``' keys);
#: a figure not here has none (it is shown, to explain the others).
TARGET_KEYS = {"delivery": ("rooms", "cpu_us_per_delivery"),
               "connect": ("rooms", "connect_cpu_ms_per_join"),
               "p50": ("fanout", "p50_ms"), "p99": ("fanout", "p99_ms"),
               "idle_cpu": ("idle", "cpu_percent_per_1000_sockets"),
               "idle_kb": ("idle", "kb_per_socket")}
#: The cluster's targets, on clustered / standalone CPU µs per delivery: ``x1`` at least 0.9
#: of standalone's deliveries/s, which is at most 1 / 0.9 of its CPU per delivery where the
#: server's core is what limits the rate; ``span`` at most 1.2 of the standalone control's.
CLUSTER_TARGETS = {"x1": ("<=", 1 / 0.9), "span": ("<=", 1.2)}
#: What each shape's rounds put side by side, for the table's title.
DESCRIPTIONS = {
    "peer": "prroom and the peer at once on the server core, rooms alternately on each",
    "x1": "one clustered and one standalone process at once, rooms alternately on each",
    "span": "two clustered processes sharing every room beside two standalone ones, at once",
    "fanout": "a fan-out room on prroom and one on the peer, blocks of messages to each in "
              "turn",
    "idle": "prroom and the peer holding their idle sockets at once on the server core",
}


def rounds_of(shape: str, layout: Layout, logs: Path, sizes: Dict[str, Any], nofile: int,
              extra_env: Dict[str, str], redis: Optional[RedisServer] = None,
              peer: Optional[PeerServer] = None) -> Dict[str, Any]:
    """``bench/run.py``'s side-by-side rounds of ``shape`` (``sizes["side_by_side"]`` of
    them): each round's figures, and per figure both sides' medians, the rounds' ratios and
    their median, and the target."""
    rounds = []
    for number in range(sizes["side_by_side"]):
        log(f"side by side {number + 1}/{sizes['side_by_side']}: {DESCRIPTIONS[shape]}")
        if shape in ("fanout", "idle"):
            assert peer is not None
            run = fanout_round if shape == "fanout" else idle_round
            rounds.append(run(layout, logs, sizes, number, nofile, peer, extra_env))
        else:
            rounds.append(one_round(shape, layout, logs, redis, sizes["sockets"],
                                    sizes["duration"], number, nofile, peer, extra_env))
    return summary_of(rounds, shape)


def ratio_of(figures: Dict[str, Dict[str, float]], shape: str, figure: str) -> float:
    """One round's ratio of ``figure``, measured / against (a side that read 0, too little
    work for the CPU clock's ticks, is refused: more sockets, messages or seconds)."""
    measured, against = SIDES[shape]
    if not figures[against][figure] > 0:
        raise BenchError(f"the {against} side's {UNITS[figure]} read "
                         f"{figures[against][figure]}: too little work to measure it")
    return figures[measured][figure] / figures[against][figure]


def summary_of(rounds: List[Dict[str, Dict[str, float]]], shape: str = "peer"
               ) -> Dict[str, Any]:
    """The rounds, and per figure both sides' medians, the rounds' ratios and their median,
    and the target."""
    measured, against = SIDES[shape]
    figures = []
    for figure in figures_of(shape):
        ratios = [ratio_of(r, shape, figure) for r in rounds]
        against_peer = shape in ("peer", "fanout", "idle")
        key = TARGET_KEYS.get(figure) if against_peer else None
        target = (TARGETS[key] if key else None) if against_peer else CLUSTER_TARGETS[shape]
        figures.append({"figure": figure, "unit": UNITS[figure], "label": LABELS[figure],
                        # the peer table's row this figure judges (none for the cluster)
                        "key": key,
                        measured: statistics.median(r[measured][figure] for r in rounds),
                        against: statistics.median(r[against][figure] for r in rounds),
                        "ratio": statistics.median(ratios), "ratios": ratios,
                        "target": target})
    return {"shape": shape, "measured": measured, "against": against,
            "description": DESCRIPTIONS[shape], "rounds": rounds, "figures": figures,
            "loadgen_cpu": [r["loadgen"]["cpu"] for r in rounds if "loadgen" in r],
            "core_busy": [r["core"]["busy"] for r in rounds if "core" in r]}
