"""redis-py's connection socket, so the cluster reads Redis's replies in bulk (seam
``redis-raw-reads``).

A redis-py ``Connection`` keeps its socket in ``_sock`` and reads through its own parser, one
reply per call; prroom's publisher and subscriber own their connections for their whole life
and read every reply themselves (:mod:`prroom.cluster.resp`).  Without the name (a
release that renamed it) they read through ``read_response`` as before.
"""
from __future__ import annotations

from typing import Any, Optional

#: False once :func:`install` found the library changed: every read takes redis-py's path.
enabled = True


def install() -> bool:
    """Check on a fresh (unconnected) redis-py connection that it keeps its socket where
    :func:`socket_of` looks; False (and every read through redis-py) if not."""
    global enabled
    from redis.connection import Connection

    enabled = hasattr(Connection(), "_sock")  # type: ignore[no-untyped-call]
    return enabled


def socket_of(connection: Any) -> Optional[Any]:
    """The connected socket of a redis-py connection speaking RESP2, or None: take redis-py's
    ``read_response`` path (the seam fell back, RESP3, or not a redis-py connection)."""
    if not enabled or str(getattr(connection, "protocol", 2)) == "3":
        return None
    sock = getattr(connection, "_sock", None)
    return sock if callable(getattr(sock, "recv", None)) else None
