"""prometheus-client's value locks as the OS's own locks when gevent has patched threading.

Every counter increment and histogram bucket takes the lock of its value
(``prometheus_client.values.MutexValue``), a ``threading.Lock`` looked up when
prometheus-client was imported: after gevent's monkey-patching, gevent's lock, whose acquire
and release are Python calls.  Under the rooms benchmark that was a few per cent of the
server's CPU (four increments and a histogram per client event).  An increment never waits
for I/O, so no greenlet can switch while holding the lock: the OS's own lock, uncontended
and taken in C, protects it as well (and still against real threads).

:func:`use_native_locks` swaps the lock class for values created afterwards; what it
relies on is checked by ``tests/internals/test_metric_locks.py``.
"""
from __future__ import annotations

from gevent import monkey
from prometheus_client import values

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
