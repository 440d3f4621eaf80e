#!/usr/bin/env python3
"""What one idle connection keeps alive in prroom's worker: a census by type and allocation site.

    python bench/census.py [--sockets 2000] [--ping 5] [--frames 1] [--top 30] [--json FILE]

It starts prroom as production does (gunicorn, prroom's worker and settings) with a census
listener added to the worker (``bench/census_conf.py``), marks what is alive, connects
``--sockets`` npm socket.io-client sockets over WebSocket, each joined to a room of 10
(the idle scenario of ``bench/loadgen``), waits one ping round plus a second so that every
socket has been pinged and answered, and prints, per socket: the worker's RSS growth, the
bytes tracemalloc saw allocated (``--frames`` deep; 0 turns tracing off), the objects the
garbage collector tracks by type (count and shallow bytes; untracked strings and bytes held
in dicts, such as an environ's values, counted separately) and the allocation sites that hold
the most.  RSS includes what Python does not allocate (libev watchers, the greenlet stacks'
and the allocator's slack), so the types and sites add up to less.  Not part of the product.
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from harness.base import REPO, Layout, allowed_cores, log
from harness.loadgen import Loadgen
from harness.processes import PrroomServer


class CensusServer(PrroomServer):
    """prroom under gunicorn with ``bench/census_conf.py`` instead of ``gunicorn.conf.py``."""

    name = "prroom-census"

    def launch(self, idle_ping: Optional[float] = None) -> None:
        from harness.processes import free_port

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._launch([self.gunicorn, "-c", "bench/census_conf.py", "wsgi:app"], REPO,
                     self.environment(port, idle_ping), self.core, self.logs, self.name)


def ask(path: str, command: str) -> Dict[str, Any]:
    """One command to the worker's census listener; its JSON answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(300)
        conn.connect(path)
        conn.sendall(command.encode() + b"\n")
        with conn.makefile("rb") as stream:
            answer: Dict[str, Any] = json.loads(stream.readline())
    return answer


def print_census(result: Dict[str, Any], top: int) -> None:
    """The tables, per socket."""
    print(f"{result['sockets']} idle sockets: RSS {result['rss_kb_per_socket']} KB/socket, "
          f"traced {result['traced_kb_per_socket']} KB/socket, gc-tracked objects "
          f"{result['gc_bytes_per_socket'] / 1024:.2f} KB/socket (shallow)")
    print(f"\n{'type':<64} | {'per socket':>10} | {'bytes/socket':>12}")
    print("-" * 64 + "-|-" + "-" * 10 + "-|-" + "-" * 12)
    for row in result["types"][:top]:
        print(f"{row['type'][:64]:<64} | {row['per_socket']:>10} | {row['bytes_per_socket']:>12}")
    print(f"\n{'anonymous mappings of':>22} | {'per socket':>10} | {'resident KB/socket':>18}")
    for row in result.get("mappings", []):
        print(f"{str(row['size_kb']) + ' KB':>22} | {row['per_socket']:>10} | "
              f"{row['rss_kb_per_socket']:>18}")
    if result["sites"]:
        print(f"\n{'allocation site':<90} | {'blocks':>7} | {'bytes/socket':>12}")
        print("-" * 90 + "-|-" + "-" * 7 + "-|-" + "-" * 12)
        for site in result["sites"][:top]:
            print(f"{site['site'][-90:]:<90} | {site['blocks_per_socket']:>7} | "
                  f"{site['bytes_per_socket']:>12}")


def main(argv: Optional[List[str]] = None) -> int:
    """Run one census; exit code 0 unless the server or load generator failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--ping", type=float, default=5.0, help="ping interval and timeout, s")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames (0: off)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    layout = Layout(allowed_cores(), 1)
    logs = Path(tempfile.mkdtemp(prefix="prroom-census-"))
    control = str(logs / "census.sock")
    extra = dict(item.split("=", 1) for item in args.server_env)
    extra.update(BENCH_CENSUS_SOCKET=control, BENCH_CENSUS_FRAMES=str(args.frames))
    server = CensusServer(layout.server_core(0), logs, args.sockets, extra)
    server.start(idle_ping=args.ping)
    result: Dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 10
        while not Path(control).exists() and time.monotonic() < deadline:
            time.sleep(0.1)

        def on_barrier(name: str, data: List[Dict[str, Any]]) -> None:
            if name == "connect:start":
                ask(control, "mark")
            elif name == "connect:end":
                time.sleep(args.ping + 1)  # every socket pinged and answered once
                result.update(ask(control, f"diff {sum(d['joined'] for d in data)}"))

        log(f"census of {args.sockets} idle sockets (logs in {logs})")
        config = dict(url=server.url, window=200, scenario="idle", sockets=args.sockets,
                      roomSize=10, prBase=7_000_000, tag="census")
        nofile = args.sockets + 200
        Loadgen([config], [layout.loadgen_core(0)], logs, nofile).run(on_barrier, 600)
    finally:
        server.stop()
    print_census(result, args.top)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
