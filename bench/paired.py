#!/usr/bin/env python3
"""Clustered against standalone in the same seconds: a cluster ratio that a noisy machine
cannot move.

    python bench/paired.py [--shape x1|span|peer|fanout|idle] [--rounds N] [--sockets N]
                           [--duration S] [--members N] [--messages N] [--idle-sockets N]

``bench/run.py --cluster`` runs each configuration after the other, about 20 s apart; on a
shared virtual machine whose speed drifts by a fifth or more within minutes, its ratios move
with the drift.  Here the two sides run at once, on the same server core, under one load
generator process per side kept in step at its barriers, so whatever slows the machine
slows both:

* ``x1``: one standalone process and one clustered process; every room lives on one of
  them, alternately (one load generator process);
* ``span``: two clustered processes sharing every room (half of each room's members on
  each) beside two standalone processes with the rooms spread over them (its control);
  one load generator process per side;
* ``peer``: one standalone process against the Node peer (``bench/run.py --peer``'s), every
  room on one of them, alternately (one load generator process): ``bench/run.py --peer``'s
  CPU ratios, measured in the same seconds;
* ``fanout``: ``bench/run.py --peer``'s fan-out (one sender, ``--members`` sockets in its
  room) on a room of prroom's and one of the peer's, in blocks of 100 messages 20 ms apart
  to one side then the other, back and forth (one load generator process reads every
  copy): each side's latency percentiles and CPU per copy, and the load generator's CPU.
* ``idle``: ``bench/run.py --peer``'s idle scenario on both at once, ``--idle-sockets``
  each (every room on one of them, alternately), held through two ping rounds: each side's
  CPU % of a core per 1,000 sockets over the hold, and RSS per socket held.

Each round starts fresh processes (and the private Redis once); the figure is each side's
CPU µs per delivery over the sending phase (its workers' CPU time over the deliveries
their sockets received), and the ratio clustered / standalone (prroom / peer).  With
``peer``, also each side's CPU per connect+join over the connecting phase (its CPU time over
the sockets that joined it: connects to the two sides interleave).  Rate-limited and pinned
as ``bench/run.py`` does it; Redis shares the servers' core.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional

from harness.base import (
    CLIENTS,
    FULL,
    SOCKETS_PER_LOADGEN,
    BenchError,
    Layout,
    allowed_cores,
    log,
)
from harness.machine import describe, lines
from harness.processes import PeerServer, RedisServer, find_gunicorn, resolve_peer_dir
from harness.side_by_side import (
    DIGITS,
    LABELS,
    SIDES,
    UNITS,
    fanout_round,
    figures_of,
    idle_round,
    one_round,
    ratio_of,
)


def run_rounds(args: argparse.Namespace, layout: Layout, logs: Path
               ) -> Dict[str, List[float]]:
    """Every round, with one private Redis (or one copy of the peer) for all of them; the
    ratios of each figure, in order."""
    measured, against = SIDES[args.shape]
    figures_shown = figures_of(args.shape)
    ratios: Dict[str, List[float]] = {figure: [] for figure in figures_shown}
    redis: Optional[RedisServer] = None
    peer: Optional[PeerServer] = None
    if args.shape in ("peer", "fanout", "idle"):
        peer = PeerServer(resolve_peer_dir(args.peer_dir), layout.server_core(0), logs, logs)
    else:
        redis = RedisServer([c for c in layout.server_cores if c is not None], logs)
    try:
        for number in range(args.rounds):
            if args.shape in ("fanout", "idle"):
                assert peer is not None
                sizes = dict(FULL, fanout_members=args.members, fanout_messages=args.messages,
                             idle_sockets=args.idle_sockets)
                run = fanout_round if args.shape == "fanout" else idle_round
                figures = run(layout, logs, sizes, number,
                              max(2 * args.members, SOCKETS_PER_LOADGEN) + 200, peer)
            else:
                figures = one_round(args.shape, layout, logs, redis, args.sockets, args.duration,
                                    number, args.sockets + 200, peer)
            said = []
            for figure in figures_shown:
                ratio = ratio_of(figures, args.shape, figure)
                ratios[figure].append(ratio)
                digits = DIGITS[figure]
                said.append(f"{against} {figures[against][figure]:.{digits}f} {UNITS[figure]}, "
                            f"{measured} {figures[measured][figure]:.{digits}f}, {measured} / "
                            f"{against} {ratio:.3f}")
            if "loadgen" in figures:
                said.append(f"load generator {figures['loadgen']['cpu']:.0f}% of its core")
            if "core" in figures:
                said.append(f"server core {figures['core']['busy']:.0f}% busy")
            print(f"round {number + 1}: " + "; ".join(said), flush=True)
    finally:
        if redis is not None:
            redis.stop()
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=tuple(SIDES), default="x1",
                        help="x1: one clustered process against one standalone; span: two "
                             "clustered processes sharing every room against two standalone; "
                             "peer: one standalone process against the Node peer; fanout: "
                             "the fan-out's latency, prroom and the peer in turn; idle: both "
                             "holding idle sockets at once")
    parser.add_argument("--peer-dir", type=Path,
                        help="with --shape peer: the peer's sources (default "
                             "$PRROOM_PEER_DIR, else ../shared/peer beside the checkout)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--sockets", type=int, default=2000,
                        help="sockets of both sides together (default 2,000)")
    parser.add_argument("--duration", type=float, default=10,
                        help="seconds of the sending phase (default 10)")
    parser.add_argument("--members", type=int, default=FULL["fanout_members"],
                        help="with --shape fanout: sockets in each side's room (default "
                             f"{FULL['fanout_members']})")
    parser.add_argument("--messages", type=int, default=FULL["fanout_messages"],
                        help="with --shape fanout: messages to each side (default "
                             f"{FULL['fanout_messages']})")
    parser.add_argument("--idle-sockets", type=int, default=FULL["idle_sockets"],
                        help="with --shape idle: sockets each side holds (default "
                             f"{FULL['idle_sockets']:,})")
    parser.add_argument("--clients", choices=CLIENTS, default=CLIENTS[0],
                        help="the load generator's clients: npm socket.io-client (default), or "
                             "wire.js's minimal client over npm ws")
    args = parser.parse_args()
    layout = Layout(allowed_cores(), 1, client=args.clients)
    for line in lines(describe(find_gunicorn())):  # what the figures come from
        print(line)
    log(f"paired {args.shape}: {layout.describe()}; {args.rounds} round(s)")
    try:
        with tempfile.TemporaryDirectory(prefix="prroom-bench-paired-") as tmp:
            ratios = run_rounds(args, layout, Path(tmp))
    except BenchError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    measured, against = SIDES[args.shape]
    for figure, values in ratios.items():
        print(f"{args.shape}: {measured} / {against}, {LABELS[figure]}: median "
              f"{statistics.median(values):.3f}, rounds {', '.join(f'{r:.3f}' for r in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
