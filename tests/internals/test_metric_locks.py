"""prroom.internals.metric_locks: prometheus-client's value locks, and what the swap needs.

Fails loudly when prometheus-client stops taking each value's lock from its ``values``
module's ``Lock`` (the swap would then change nothing, or the wrong thing).
"""
import inspect
import subprocess
import sys
import textwrap

from prometheus_client import values


def test_values_still_take_their_lock_from_the_module():
    assert "self._lock = Lock()" in inspect.getsource(values.MutexValue.__init__)
    assert "with self._lock:" in inspect.getsource(values.MutexValue.inc)
    assert hasattr(values, "Lock")


def run_patched(code: str) -> str:
    """``code`` in a fresh interpreter that gevent patched first, as prroom's wsgi does."""
    script = "from gevent import monkey; monkey.patch_all()\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_metrics_made_after_the_swap_use_the_os_lock_and_still_count():
    out = run_patched("""
        import threading, gevent
        from gevent.monkey import get_original
        from prroom.server.metrics import Metrics
        metrics = Metrics()
        lock = metrics._messages._value._lock
        native = get_original("threading", "Lock")
        assert type(lock) is type(native()), type(lock)
        def bump():
            for _ in range(1000):
                metrics.record_message()
                gevent.sleep(0)
        gevent.joinall([gevent.spawn(bump) for _ in range(5)])
        threads = [threading.Thread(target=bump) for _ in range(2)]  # greenlets, patched
        [t.start() for t in threads]; [t.join() for t in threads]
        print(metrics._messages._value.get())
        from prroom.diagnostics.gevent_traps import find_traps
        print([trap for trap in find_traps() if "prometheus_client" in trap])
    """)
    assert out.splitlines() == ["7000.0", "[]"]  # counts right; not reported as a trap


def test_nothing_changes_without_gevent_patching():
    done = subprocess.run([sys.executable, "-c",
                           "from prroom.internals import metric_locks; "
                           "print(metric_locks.use_native_locks())"],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
