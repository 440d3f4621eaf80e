"""Driving loadgen.js processes: one scenario, several processes kept in step at barriers."""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .base import CLIENTS, LOADGEN_DIR, BenchError
from .processes import pinned, tail

Message = Dict[str, Any]
OnBarrier = Callable[[str, List[Message]], None]


class Loadgen:
    """One or more loadgen.js processes of one scenario; process i runs ``configs[i]`` on
    ``cores[i]``, with ``client`` (:data:`~harness.base.CLIENTS`).  Every process stops at
    each barrier until all reached it."""

    def __init__(self, configs: Sequence[Dict[str, Any]], cores: Sequence[Optional[int]],
                 logs: Path, nofile: int, client: str = CLIENTS[0]) -> None:
        configs = [dict(config, client=client) for config in configs]
        self.procs: List[subprocess.Popen] = []
        self.cores = list(cores)
        self.buffers: Dict[int, bytes] = {}
        self.stderr_paths: List[Path] = []
        self.selector = selectors.DefaultSelector()
        for number, (config, core) in enumerate(zip(configs, cores)):
            command, setup = pinned(["node", str(LOADGEN_DIR / "loadgen.js"), json.dumps(config)],
                                    core, nofile)
            err_path = logs / f"loadgen-{config['scenario']}-{number}-{int(time.time() * 1000)}.log"
            self.stderr_paths.append(err_path)
            with open(err_path, "wb") as err:
                proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=err, preexec_fn=setup, start_new_session=True)
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            self.selector.register(proc.stdout, selectors.EVENT_READ, proc)
            self.buffers[proc.pid] = b""
            self.procs.append(proc)

    def run(self, on_barrier: OnBarrier, timeout: float) -> List[Message]:
        """Drive the processes to the end; ``on_barrier(name, [data per process])`` runs each
        time all of them reached the same barrier.  Returns their results, in order."""
        deadline = time.monotonic() + timeout
        pending: Dict[int, Optional[Message]] = {proc.pid: None for proc in self.procs}
        results: Dict[int, Message] = {}
        open_pipes = len(self.procs)
        try:
            while open_pipes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"load generator still running after {timeout:.0f} s")
                for key, _ in self.selector.select(timeout=min(left, 1.0)):
                    proc = key.data
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        self.selector.unregister(proc.stdout)
                        open_pipes -= 1
                        continue
                    self._take(proc, chunk, pending, results)
                waiting = [m for m in pending.values() if m is not None]
                if len(waiting) == len(self.procs):
                    names = {m["name"] for m in waiting}
                    if len(names) != 1:
                        raise BenchError(f"load generators out of step: {names}")
                    on_barrier(names.pop(), [m for m in pending.values() if m is not None])
                    self._release(pending)
            for proc in self.procs:
                proc.wait(10)
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if len(results) != len(self.procs):
            codes = [proc.returncode for proc in self.procs]
            raise BenchError(f"load generator exited {codes} without a result:\n"
                             + "\n".join(tail(p) for p in self.stderr_paths))
        return [results[proc.pid] for proc in self.procs]

    def _take(self, proc: subprocess.Popen, chunk: bytes, pending: Dict[int, Optional[Message]],
              results: Dict[int, Message]) -> None:
        """Parse the complete JSON lines a process wrote."""
        self.buffers[proc.pid] += chunk
        *lines, self.buffers[proc.pid] = self.buffers[proc.pid].split(b"\n")
        for line in lines:
            message = json.loads(line)
            if message["event"] == "barrier":
                pending[proc.pid] = message
            elif message["event"] == "result":
                results[proc.pid] = message
            elif message["event"] == "error":
                raise BenchError(f"load generator failed: {message['message']}")

    def _release(self, pending: Dict[int, Optional[Message]]) -> None:
        """Let every process go on from the barrier."""
        for proc in self.procs:
            pending[proc.pid] = None
            try:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass   # it died; reported by run() as "without a result"


def loadgen_cpu(results: Sequence[Message], cores: Sequence[Optional[int]],
                phase: str) -> Dict[Optional[int], float]:
    """The load generator processes' CPU% in ``phase``, summed per core they ran on."""
    per_core: Dict[Optional[int], float] = {}
    for result, core in zip(results, cores):
        per_core[core] = per_core.get(core, 0.0) + result[phase]["cpuPercent"]
    return per_core
