"""Reading /proc: a process's CPU time and RSS, each core's busy time, snapshots of both."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from .base import log

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

CoreTimes = Dict[int, Tuple[int, int, int]]
Snapshot = Dict[str, Any]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    """A process's resident set size in KB (0 when /proc does not say)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def core_times() -> CoreTimes:
    """Per core: (busy, total, softirq) jiffies from /proc/stat."""
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split() or [""]
            if name.startswith("cpu") and name != "cpu":
                # user nice system idle iowait irq softirq steal (guest is inside user)
                numbers = [int(v) for v in values[:8]]
                idle = numbers[3] + (numbers[4] if len(numbers) > 4 else 0)
                softirq = numbers[6] if len(numbers) > 6 else 0
                times[int(name[3:])] = (sum(numbers) - idle, sum(numbers), softirq)
    return times


def snapshot(pids: Mapping[str, Optional[int]]) -> Snapshot:
    """The time, every core's counters, and CPU seconds and RSS of each named process."""
    snap: Snapshot = {"t": time.monotonic(), "cores": core_times(), "cpu": {}, "rss_kb": {}}
    for name, pid in pids.items():
        if pid:
            try:
                snap["cpu"][name] = cpu_seconds(pid)
                snap["rss_kb"][name] = rss_kb(pid)
            except OSError:
                pass   # it exited: its figures are missing, not wrong
    return snap


def cpu_percent(a: Snapshot, b: Snapshot, name: str) -> Optional[float]:
    """CPU% (of one core) of the process ``name`` from snapshot a to b."""
    seconds = b["t"] - a["t"]
    if name not in a["cpu"] or name not in b["cpu"] or seconds <= 0:
        return None
    return round(100 * (b["cpu"][name] - a["cpu"][name]) / seconds, 1)


def core_busy(a: Snapshot, b: Snapshot, core: Optional[int]) -> Optional[Tuple[float, float]]:
    """(busy%, softirq%) of one core from a to b; on loopback, softirq is mostly the
    sender's own packet processing."""
    if core is None or core not in a["cores"] or core not in b["cores"]:
        return None
    busy, total, softirq = (after - before for before, after
                            in zip(a["cores"][core], b["cores"][core]))
    if not total:
        return None
    return round(100 * busy / total, 1), round(100 * softirq / total, 1)


def server_side(a: Snapshot, b: Snapshot, core: Optional[int],
                name: str = "server") -> Dict[str, float]:
    """The seconds between two snapshots, the server's CPU% and its core's busy%."""
    out: Dict[str, float] = {"seconds": round(b["t"] - a["t"], 3)}
    cpu = cpu_percent(a, b, name)
    if cpu is not None:
        out["server_cpu"] = cpu
    use = core_busy(a, b, core)
    if use is not None:
        out["server_core_busy"], out["server_core_softirq"] = use
    return out


def background_busy(seconds: float = 2.0) -> Dict[int, float]:
    """Busy% of each core while the benchmark runs nothing: other people's load."""
    before = core_times()
    time.sleep(seconds)
    after = core_times()
    return {core: round(100 * (after[core][0] - before[core][0])
                        / max(after[core][1] - before[core][1], 1), 1) for core in after}


def wait_for_quiet(max_seconds: float, threshold: float = 25.0) -> Dict[int, float]:
    """Busy% of each core from others' processes, after waiting up to ``max_seconds`` for
    every core to drop to ``threshold``% (0: just measure)."""
    deadline = time.monotonic() + max_seconds
    busy = background_busy(0.5)
    if max_seconds > 0 and max(busy.values()) > threshold:
        log(f"  waiting up to {max_seconds:.0f} s for the other processes to quiet down "
            f"(now {max(busy.values()):.0f}% busy)")
        while max(busy.values()) > threshold and time.monotonic() < deadline:
            busy = background_busy(2.0)
    return busy


def quiesce(pids: List[Optional[int]], seconds: float = 10.0) -> None:
    """Wait until every process is idle again (disconnects processed), at most ``seconds``."""
    known = [pid for pid in pids if pid]
    if not known:
        time.sleep(1.0)   # nothing to watch: give the server a moment
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            before = sum(cpu_seconds(pid) for pid in known)
            time.sleep(0.25)
            if (sum(cpu_seconds(pid) for pid in known) - before) / 0.25 < 0.05 * len(known):
                return
        except OSError:
            return


def start_time(pid: int) -> Optional[int]:
    """A process's start time (clock ticks since boot): with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def children_of(pid: int) -> List[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


#: A fixed piece of pure-Python work (JSON both ways, integer sums), timed in CPU time: the
#: best of five, so an interruption does not count.  Printed in µs.
_SPEED_PROBE = """
import json, time
def work():
    data, text, total = {"pullRequestId": 1, "username": "u", "message": "x" * 100}, \\
        '{"a": [1, 2, 3], "b": "text"}', 0
    for _ in range(2000):
        total += len(json.dumps(data)) + len(json.loads(text)) + sum(range(50))
    return total
best = None
for _ in range(5):
    start = time.process_time()
    work()
    took = time.process_time() - start
    best = took if best is None else min(best, took)
print(round(best * 1e6, 1))
"""


def core_speed(cores: Iterable[int], samples: int = 3) -> Dict[int, List[float]]:
    """CPU µs a fixed piece of work takes on each core, ``samples`` times, just now.

    On a virtual machine the same work can take half as long again from one second to the
    next (its host's other guests, the host's clock), on one core and not the other: two
    runs' figures compare only at the same speed, and this says what the speed was around a
    run.  A probe that fails is left out."""
    speeds: Dict[int, List[float]] = {}
    for _ in range(samples):
        for core in cores:
            try:
                done = subprocess.run(
                    [sys.executable, "-c", _SPEED_PROBE], capture_output=True, text=True,
                    timeout=30, preexec_fn=lambda core=core: os.sched_setaffinity(0, {core}))
                speeds.setdefault(core, []).append(float(done.stdout.strip()))
            except (OSError, ValueError, subprocess.SubprocessError):
                continue
    return speeds


def speed_spread(runs: Iterable[Mapping[str, Any]]) -> Dict[int, Tuple[float, float]]:
    """Each core's shortest and longest probe time (:func:`core_speed`) over ``runs``'
    records (``core_speed_us``; a core's number may be a string, as JSON keeps it)."""
    seen: Dict[int, List[float]] = {}
    for run in runs:
        for core, values in (run.get("core_speed_us") or {}).items():
            seen.setdefault(int(core), []).extend(values)
    return {core: (min(values), max(values)) for core, values in seen.items() if values}
