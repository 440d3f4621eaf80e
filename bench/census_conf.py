"""gunicorn settings for ``bench/census.py``: prroom's own, plus a census listener in the worker.

The worker runs exactly as production does (same worker class, handler and app); this adds
a UNIX socket (``BENCH_CENSUS_SOCKET``) on which the driver asks for ``mark`` (remember what
is alive now) and ``diff N`` (what is alive now that was not at the mark, per socket of N).
tracemalloc starts in the worker before the first connection, so allocation sites of what
idle connections hold are known too.  Not part of the product.
"""
from __future__ import annotations

import collections
import gc
import json
import os
import sys
import tracemalloc
from typing import Any, Dict, List, Optional, Tuple

from prroom.gunicorn_config import *  # noqa: F401,F403

TRACE_FRAMES = int(os.environ.get("BENCH_CENSUS_FRAMES", "1"))

TypeCounts = Dict[str, Tuple[int, int]]


def _type_name(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def type_census() -> TypeCounts:
    """Objects the collector tracks, by type: (count, shallow bytes).

    Strings and bytes the collector does not track, held as values of dicts (an environ's),
    count once each, as ``str (in dicts)`` / ``bytes (in dicts)``.
    """
    gc.collect()
    counts: Dict[str, List[int]] = collections.defaultdict(lambda: [0, 0])
    seen_values: set = set()
    for obj in gc.get_objects():
        entry = counts[_type_name(obj)]
        entry[0] += 1
        try:
            entry[1] += sys.getsizeof(obj)
        except TypeError:
            pass
        if isinstance(obj, dict):
            for value in obj.values():
                if isinstance(value, (str, bytes)) and not gc.is_tracked(value) \
                        and id(value) not in seen_values:
                    seen_values.add(id(value))
                    kept = counts[_type_name(value) + " (in dicts)"]
                    kept[0] += 1
                    kept[1] += sys.getsizeof(value)
    return {name: (entry[0], entry[1]) for name, entry in counts.items()}


def mappings() -> Dict[int, List[int]]:
    """Anonymous memory mappings by size in KB: [count, resident KB]."""
    found: Dict[int, List[int]] = collections.defaultdict(lambda: [0, 0])
    size = None
    anonymous = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                anonymous = len(fields) == 5  # no path
            elif fields[0] == "Size:":
                size = int(fields[1])
            elif fields[0] == "Rss:" and anonymous and size is not None:
                found[size][0] += 1
                found[size][1] += int(fields[1])
    return found


class Census:
    """The mark and the differences since it."""

    def __init__(self) -> None:
        self.types: Optional[TypeCounts] = None
        self.snapshot: Optional[tracemalloc.Snapshot] = None
        self.rss_kb = 0
        self.maps: Dict[int, List[int]] = {}

    def mark(self) -> Dict[str, Any]:
        self.types = type_census()
        self.snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
        self.rss_kb = _rss_kb()
        self.maps = mappings()
        return {"ok": True}

    def diff(self, sockets: int, top: int = 40) -> Dict[str, Any]:
        assert self.types is not None, "mark first"
        now = type_census()
        rows = []
        for name in set(now) | set(self.types):
            count = now.get(name, (0, 0))[0] - self.types.get(name, (0, 0))[0]
            size = now.get(name, (0, 0))[1] - self.types.get(name, (0, 0))[1]
            if count or size:
                rows.append({"type": name, "per_socket": round(count / sockets, 2),
                             "bytes_per_socket": round(size / sockets, 1)})
        rows.sort(key=lambda row: -row["bytes_per_socket"])
        sites = []
        traced_kb = None
        if self.snapshot is not None:
            current = tracemalloc.take_snapshot()
            stats = current.compare_to(self.snapshot, "traceback")
            traced_kb = sum(stat.size_diff for stat in stats) / 1024 / sockets
            for stat in stats[:top]:
                frames = [f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
                          for frame in stat.traceback]
                sites.append({"site": " < ".join(frames),
                              "bytes_per_socket": round(stat.size_diff / sockets, 1),
                              "blocks_per_socket": round(stat.count_diff / sockets, 2)})
        maps = []
        for size, (count, resident) in mappings().items():
            was = self.maps.get(size, [0, 0])
            if count - was[0] or resident - was[1]:
                maps.append({"size_kb": size, "per_socket": round((count - was[0]) / sockets, 3),
                             "rss_kb_per_socket": round((resident - was[1]) / sockets, 2)})
        maps.sort(key=lambda row: -abs(row["rss_kb_per_socket"]))
        rss_kb = (_rss_kb() - self.rss_kb) / sockets
        return {"sockets": sockets, "rss_kb_per_socket": round(rss_kb, 2),
                "traced_kb_per_socket": traced_kb and round(traced_kb, 2),
                "gc_bytes_per_socket": round(sum(r["bytes_per_socket"] for r in rows), 1),
                "types": rows[:top], "sites": sites, "mappings": maps[:10]}


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def post_worker_init(worker: Any) -> None:
    """Start tracing and the census listener in the worker."""
    import gevent.server

    path = os.environ["BENCH_CENSUS_SOCKET"]
    census = Census()
    if TRACE_FRAMES > 0:
        tracemalloc.start(TRACE_FRAMES)

    def serve(conn: Any, address: Any) -> None:
        with conn, conn.makefile("rwb") as stream:
            for line in stream:
                command, *args = line.decode().split()
                if command == "mark":
                    answer = census.mark()
                elif command == "diff":
                    answer = census.diff(int(args[0]))
                else:
                    answer = {"error": f"unknown command {command}"}
                stream.write(json.dumps(answer).encode() + b"\n")
                stream.flush()

    import socket

    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    worker._bench_census = gevent.server.StreamServer(listener, serve)
    worker._bench_census.start()
