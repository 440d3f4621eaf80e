"""How the cost of a disconnect and of ``rooms(sid)`` grows with the sockets on a server.

Compares python-socketio's stock manager with prroom's IndexedManager, in process, with no
network: N sockets each in one pull request room of 10, then times disconnecting 1,000 of
them and asking ``get_rooms`` 10,000 times.  Prints microseconds per operation.

    python bench/room_index.py [N ...]
"""
from __future__ import annotations

import sys
import time

import socketio

from prroom.cluster.room_index import IndexedManager


def measure(manager_class, sockets: int) -> tuple:
    server = socketio.Server(async_mode="threading", client_manager=manager_class())
    manager = server.manager
    manager.initialize()
    sids = []
    for number in range(sockets):
        sid = manager.connect(f"eio{number}", "/")
        manager.enter_room(sid, "/", f"pr:{number // 10}")
        sids.append(sid)
    started = time.perf_counter()
    for sid in sids[:10_000]:
        manager.get_rooms(sid, "/")
    lookup = (time.perf_counter() - started) / min(len(sids), 10_000)
    started = time.perf_counter()
    for sid in sids[:1000]:
        manager.disconnect(sid, "/")
    disconnect = (time.perf_counter() - started) / 1000
    return lookup * 1e6, disconnect * 1e6


def main(argv) -> None:
    sizes = [int(arg) for arg in argv] or [1_000, 5_000, 20_000]
    print(f"{'sockets':>8} {'manager':>16} {'get_rooms µs':>13} {'disconnect µs':>14}")
    for sockets in sizes:
        for manager_class in (socketio.Manager, IndexedManager):
            lookup, disconnect = measure(manager_class, sockets)
            print(f"{sockets:>8} {manager_class.__name__:>16} {lookup:>13.2f} {disconnect:>14.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
