"""bench/handler_cost.py: its measured process drives prroom's own path end to end (the
figure means nothing if the messages are declined, refused or never fanned out)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import List

import handler_cost
import pytest

from tests.support.redis_server import RedisProcess

SCRIPT = Path(handler_cost.__file__)


def measured(*extra: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, str(SCRIPT), "--inner", "--timed", "--rooms", "2",
                           "--size", "3", "--messages", "60", *extra], capture_output=True,
                          text=True, timeout=120, cwd=SCRIPT.parents[1])


@pytest.mark.parametrize("variant", ["acked", "unacked"])
def test_the_measured_process_sends_every_message_through_the_direct_dispatch(
        variant: str) -> None:
    done = measured("--variant", variant)
    assert done.returncode == 0, done.stderr[-2000:]
    # it checks itself that every message reached each member and was acked (or, unacked,
    # that no ack went out), or fails
    assert float(done.stdout.split("cpu_us_per_message")[1]) > 0


@pytest.mark.parametrize("variant", ["acked", "answered", "unheard", "received"])
def test_the_clustered_variants_deliver_every_message_too(redis_server: RedisProcess,
                                                          variant: str) -> None:
    done = measured("--variant", variant, "--queue", redis_server.url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split("cpu_us_per_message")[1]) > 0


def test_the_clustered_variants_refuse_a_standalone_process() -> None:
    done = measured("--variant", "answered")
    assert done.returncode != 0 and "give --queue" in done.stderr


def test_parts_needs_a_queue() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--parts"], capture_output=True,
                          text=True, timeout=60, cwd=SCRIPT.parents[1])
    assert done.returncode == 2 and "give --queue" in done.stderr


def test_instructions_are_read_from_cachegrinds_summary() -> None:
    summary = "==12== \n==12== I   refs:      3,179,707,955\n"
    found = handler_cost._REFS.search(summary)
    assert found is not None and int(found[1].replace(",", "")) == 3_179_707_955


def test_every_part_is_measured_once() -> None:
    labels: List[str] = [label for label, _, _ in handler_cost.PARTS]
    assert len(set(labels)) == len(labels) == 7


def test_a_received_message_is_what_redis_sends_a_subscriber() -> None:
    from harness import received

    from prroom.cluster.resp import RespReader

    own = "5f0c2a:"
    other = received.other_prefix(own)
    assert other != own and len(other) == len(own) and other.endswith(":")
    reader = RespReader(skip=own.encode())
    reader.feed(received.smessage("prroom:pr:7", b'%s["pr:7"]\n2["x"]' % other.encode()) +
                received.smessage("prroom:pr:7", b"%s[]" % own.encode()))
    # another process's message is read whole; this process's own is passed over
    assert reader.drain() == [[b"smessage", b"prroom:pr:7", b'%s["pr:7"]\n2["x"]' % other.encode()]]
