"""Tripwires for prroom/internals/loop_monitor.py and gevent_traps.py.

Each runs in a fresh interpreter (gevent's monitoring thread and monkey-patching are for the
whole process), and fails naming what gevent changed.
"""
import subprocess
import sys
import textwrap

import gevent
import gevent.events
from gevent import monkey


def run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_gevent_still_has_the_monitoring_prroom_uses():
    for name in ("monitor_thread", "max_blocking_time"):
        assert hasattr(gevent.config, name), f"gevent.config.{name} is gone"
    # print_blocking_reports (gevent 24+) lets prroom keep gevent from also printing its own
    # report to stderr; older releases print it as well, which README says
    assert hasattr(gevent.get_hub(), "start_periodic_monitoring_thread")
    assert hasattr(gevent.events, "EventLoopBlocked")
    assert isinstance(gevent.events.subscribers, list)
    assert callable(monkey.get_original) and callable(monkey.is_module_patched)


def test_a_block_is_measured_and_its_stack_and_label_captured():
    out = run("""
        import logging, sys, time
        import gevent
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        from prroom.internals.loop_monitor import LoopMonitor, serving
        blocks = []
        monitor = LoopMonitor(0.1, blocks.append)
        monitor.start()
        def slow_view():
            serving("GET /slow")
            deadline = time.perf_counter() + 0.6
            while time.perf_counter() < deadline:
                pass
        gevent.spawn(slow_view)
        gevent.sleep(0.5)
        monitor.stop()
        print("BLOCKS", len(blocks), round(max(blocks), 1), round(monitor.worst_recent_lag(), 1))
    """)
    assert "while serving GET /slow" in out
    assert "in slow_view" in out  # gevent's report still carries the blocked stack
    count, longest, worst = out.split("BLOCKS")[1].split()
    assert int(count) == 1 and float(longest) >= 0.5 and float(worst) == float(longest)


def test_traps_tell_patched_from_unpatched():
    out = run("""
        from gevent import monkey
        monkey.patch_all()
        import types, sys
        early = types.ModuleType("early_module")
        early.__file__ = "/srv/app/early_module.py"
        early.create_connection = monkey.get_original("socket", "create_connection")
        sys.modules["early_module"] = early
        from prroom.internals.gevent_traps import find_traps
        print("\\n".join(find_traps()))
    """)
    assert "module early_module holds the unpatched socket.create_connection" in out
    assert out.count("holds the unpatched") == 1  # the standard library is not blamed


def test_an_unpatched_process_is_said_to_be_so():
    out = run("""
        from prroom.internals.gevent_traps import find_traps
        print("\\n".join(find_traps()))
    """)
    assert "gevent has not monkey-patched this process" in out
