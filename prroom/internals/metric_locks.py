"""prometheus-client's value locks as the OS's own locks when gevent has patched threading;
many histogram observations added at once.

Every counter increment and histogram bucket takes the lock of its value
(``prometheus_client.values.MutexValue``), a ``threading.Lock`` looked up when
prometheus-client was imported: after gevent's monkey-patching, gevent's lock, whose acquire
and release are Python calls.  Under the rooms benchmark that was a few per cent of the
server's CPU (four increments and a histogram per client event).  An increment never waits
for I/O, so no greenlet can switch while holding the lock: the OS's own lock, uncontended
and taken in C, protects it as well (and still against real threads).

:func:`use_native_locks` swaps the lock class for values created afterwards; what it
relies on is checked by ``tests/internals/test_metric_locks.py``.

:func:`add_observations` adds what many ``observe`` calls would to a histogram's values (its
sum, and each bucket's count): prroom's metrics count events as plain numbers and hand them
to prometheus-client when scraped (:mod:`prroom.server.metrics`).  The ``batched-metrics``
seam, checked by the same test module.
"""
from __future__ import annotations

from typing import Any, Sequence

from gevent import monkey
from prometheus_client import Histogram, values

from prroom.diagnostics import gevent_traps


def applies() -> bool:
    """Whether there is anything to do: gevent has patched ``threading``."""
    return bool(monkey.is_module_patched("threading"))


def use_native_locks() -> bool:
    """Have values created from now on use the OS's lock; False if nothing was changed."""
    if not monkey.is_module_patched("threading") or not hasattr(values, "Lock"):
        return False
    native = monkey.get_original("threading", "Lock")
    if values.Lock is not native:
        values.Lock = native
    gevent_traps.deliberate_original("prometheus_client.values", "Lock")  # not a trap
    return True


def add_observations(child: Any, bucket_counts: Sequence[int], total: float) -> None:
    """Add to histogram ``child`` (a labelled child, or an unlabelled histogram) what
    ``observe`` would for values summing to ``total``, ``bucket_counts[i]`` of which
    fell in bucket ``i`` (the first upper bound at or above the value)."""
    child._sum.inc(total)
    for bucket, count in zip(child._buckets, bucket_counts):
        if count:
            bucket.inc(count)


def histogram_probe() -> Any:
    """A histogram registered nowhere, to check :func:`add_observations`' names on."""
    return Histogram("prroom_probe", "probe", buckets=(1.0,), registry=None)


def can_add_observations(probe: Any) -> bool:
    """Whether histogram ``probe`` (:func:`histogram_probe`) keeps its sum and one value
    per bucket, each with ``inc``."""
    values_of = [getattr(probe, "_sum", None), *getattr(probe, "_buckets", ())]
    return len(values_of) == 3 and all(callable(getattr(value, "inc", None))
                                       for value in values_of)
