"""bench/handler_cost.py: its measured process drives prroom's own path end to end (the
figure means nothing if the messages are declined, refused or never fanned out)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import handler_cost

SCRIPT = Path(handler_cost.__file__)


def test_the_measured_process_sends_every_message_through_the_direct_dispatch() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--inner", "--timed", "--rooms", "2",
                           "--size", "3", "--messages", "60"], capture_output=True, text=True,
                          timeout=120, cwd=SCRIPT.parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    # it checks itself that every message reached each member and was acked, or fails
    assert float(done.stdout.split("cpu_us_per_message")[1]) > 0


def test_instructions_are_read_from_cachegrinds_summary() -> None:
    summary = "==12== \n==12== I   refs:      3,179,707,955\n"
    found = handler_cost._REFS.search(summary)
    assert found is not None and int(found[1].replace(",", "")) == 3_179_707_955
