"""bench/connect_cost.py: the counted server serves every connect+join, and its worker stops
where the count must end (the figure means nothing if sockets failed to join, or if the
worker went on to close them)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import connect_cost
import pytest
from harness.ab_runs import Tree

ROOT = Path(connect_cost.__file__).parents[1]


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # the load generator's npm modules, or the test suite's own socket.io-client
    monkeypatch.setenv("NODE_PATH", str(ROOT / "tests" / "node" / "node_modules"))
    with tempfile.TemporaryDirectory() as temp:
        path = Path(temp) / "gunicorn_counted.py"
        path.write_text(connect_cost.CONFIG)
        yield path


def test_the_worker_exits_once_every_socket_joined(config: Path) -> None:
    # serve() fails unless every socket joined; uncounted here (no valgrind), as counted
    worker, _ = connect_cost.serve(Tree("branch", None), 6, 3, False, config, [])
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)  # gone at once on SIGUSR2, before the sockets closed


def test_with_close_the_sockets_close_and_the_server_stops_cleanly(config: Path) -> None:
    worker, stderr = connect_cost.serve(Tree("branch", None), 6, 3, True, config, [])
    assert f"Worker exiting (pid: {worker})" in stderr


def test_each_process_count_is_read_by_pid() -> None:
    stderr = ("==12== Collected : 1\n==12== I   refs:      1,234,567\n"
              "==13== I refs: 99\n")
    assert connect_cost.instruction_counts(stderr) == {12: 1_234_567, 13: 99}
