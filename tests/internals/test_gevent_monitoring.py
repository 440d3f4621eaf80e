"""Tripwires for prroom/diagnostics/loop_monitor.py and gevent_traps.py.

Each runs in a fresh interpreter (the watchdog thread and monkey-patching are for the
whole process), and fails naming what gevent changed.
"""
import subprocess
import sys
import textwrap

import gevent
from gevent import monkey


def run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_gevent_still_has_what_the_loop_monitor_uses():
    # the watchdog is a real OS thread even in a patched process, sleeping the real sleep
    assert callable(monkey.get_original) and callable(monkey.is_module_patched)
    for module, name in (("_thread", "start_new_thread"), ("_thread", "get_ident"),
                         ("time", "sleep")):
        assert callable(monkey.get_original(module, name)), f"{module}.{name}"
    timer = gevent.get_hub().loop.timer(0.01, 0.01)
    fired = []
    timer.start(lambda: fired.append(1))
    gevent.sleep(0.05)
    timer.stop()
    assert fired, "a repeating hub.loop.timer no longer fires"


def test_another_thread_sees_the_running_greenlets_frames():
    # what the watchdog relies on: greenlet swaps the thread's frame, so
    # sys._current_frames() shows the code of the greenlet holding the loop
    out = run("""
        import sys, time
        from gevent import monkey
        import gevent
        start = monkey.get_original("_thread", "start_new_thread")
        ident = monkey.get_original("_thread", "get_ident")()
        seen = []
        def look():
            time.sleep(0.1)  # unpatched here: the real sleep
            frame = sys._current_frames()[ident]
            seen.append(frame.f_code.co_name)
        def spin_in_a_greenlet():
            start(look, ())
            deadline = time.perf_counter() + 0.4
            while time.perf_counter() < deadline:
                pass
        gevent.spawn(spin_in_a_greenlet).join()
        print("SEEN", seen)
    """)
    assert "SEEN ['spin_in_a_greenlet']" in out


def test_a_block_is_measured_and_its_stack_and_label_captured():
    out = run("""
        import logging, sys, time
        import gevent
        logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
        from prroom.diagnostics.loop_monitor import LoopMonitor, serving
        blocks = []
        monitor = LoopMonitor(0.1, blocks.append)
        monitor.start()
        def slow_view():
            serving("GET", "/slow")
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
        from prroom.diagnostics.gevent_traps import find_traps
        print("\\n".join(find_traps()))
    """)
    assert "module early_module holds the unpatched socket.create_connection" in out
    assert out.count("holds the unpatched") == 1  # the standard library is not blamed


def test_an_unpatched_process_is_said_to_be_so():
    out = run("""
        from prroom.diagnostics.gevent_traps import find_traps
        print("\\n".join(find_traps()))
    """)
    assert "gevent has not monkey-patched this process" in out
