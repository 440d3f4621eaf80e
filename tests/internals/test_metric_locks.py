"""prroom.internals.metric_locks: prometheus-client's value locks, and what the swap needs.

Fails loudly when prometheus-client stops taking each value's lock from its ``values``
module's ``Lock`` (the swap would then change nothing, or the wrong thing).
"""
import inspect
import subprocess
import sys
import textwrap

from prometheus_client import Histogram, values

from prroom.internals import metric_locks


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
        metrics.flush()  # counted, then added when collected
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


def test_a_histogram_still_keeps_its_sum_and_bucket_values():
    source = inspect.getsource(Histogram._metric_init)
    assert "self._sum = values.ValueClass(" in source
    assert "self._buckets.append(values.ValueClass(" in source
    observe = inspect.getsource(Histogram.observe)
    assert "self._sum.inc(amount)" in observe and "if amount <= bound:" in observe
    assert metric_locks.can_add_observations(metric_locks.histogram_probe())


def test_counted_events_scrape_exactly_as_events_recorded_one_by_one():
    out = run_patched("""
        from prroom.server.metrics import Metrics
        batched, direct = Metrics(), Metrics()
        direct._counted = None  # each event straight into prometheus-client
        assert batched._counted is not None
        def record(metrics, rounds):
            for n in range(rounds):
                for seconds in (0.0, 0.00001, 0.0001, 0.00025, 0.0007, 0.3, 1.0, 7.5):
                    metrics.record_event("send-message-to-pr-room", "ok", seconds * n)
                metrics.record_event("join-pr-room", "not-a-member", 0.002)
                metrics.record_message()
                metrics.record_deliveries(n)
        def text(metrics):
            return [line for line in metrics.render().decode().splitlines()
                    if "_created" not in line]
        for rounds in (3, 0, 5):  # counted across several scrapes, and none in between
            record(batched, rounds)
            record(direct, rounds)
            assert text(batched) == text(direct), (text(batched), text(direct))
        print(batched.registry.get_sample_value("prroom_messages_total"))
    """)
    assert out == "8.0"
