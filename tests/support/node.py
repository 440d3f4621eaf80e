"""Run a script of ``tests/node/`` (npm socket.io-client) and return the JSON it prints.

Without Node.js or ``npm ci --prefix tests/node`` the calling test fails, it does not skip:
CI must not silently stop checking the JavaScript client.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from typing import Callable, Optional

import pytest

from tests.support.servers import ROOT

NODE_DIR = ROOT / "tests" / "node"
RUN_TIMEOUT = 60


def run_script(name: str, *args: str) -> dict:
    """``node tests/node/<name> args...``: its last stdout line, parsed; fails on errors."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js 20+ to run the JavaScript client "
                    "tests", pytrace=False)
    if not (NODE_DIR / "node_modules" / "socket.io-client").is_dir():
        pytest.fail("tests/node/node_modules is missing: run `npm ci --prefix tests/node`",
                    pytrace=False)
    argv = [node, str(NODE_DIR / name), *args]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        results = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(f"{name} exited {proc.returncode} without a JSON result\n"
                    f"stdout: {proc.stdout}\nstderr: {proc.stderr}", pytrace=False)
    if proc.returncode != 0 or results.get("error"):
        pytest.fail(f"{name} exited {proc.returncode}: {results.get('error')}\n"
                    f"stderr: {proc.stderr}", pytrace=False)
    return results


class NodeDriver:
    """npm socket.io-client sockets in one Node process (``tests/node/recovery_driver.js``).

    Each socket has a name; :meth:`expect` waits for the next record matching a predicate
    (records before it are kept for :meth:`seen`).
    """

    def __init__(self) -> None:
        import queue
        import threading
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not on PATH: install Node.js 20+", pytrace=False)
        self.proc = subprocess.Popen([node, str(NODE_DIR / "recovery_driver.js")], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.records: list = []
        self._queue: "queue.Queue[dict]" = queue.Queue()
        self._seq = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self._queue.put(json.loads(line))

    def send(self, cmd: str, **fields: object) -> None:
        """One command (see recovery_driver.js)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()

    def call(self, name: str, event: str, payload: object, timeout: float = 10.0) -> dict:
        """Emit with an ack and return the ack's body."""
        self._seq += 1
        seq = self._seq
        self.send("emit", name=name, event=event, payload=payload, ack=True, seq=seq)
        return self.expect(lambda r: r["ev"] == "ack" and r.get("seq") == seq, timeout)["reply"]

    def expect(self, predicate: "Callable[[dict], bool]", timeout: float = 10.0) -> dict:
        """The first record (seen or coming) matching ``predicate``; consumed."""
        import queue
        import time
        for index, record in enumerate(self.records):
            if predicate(record):
                return self.records.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                record = self._queue.get(timeout=max(0.0, left))
            except queue.Empty:
                pytest.fail(f"no matching record within {timeout} s; seen: {self.records}",
                            pytrace=False)
            if predicate(record):
                return record
            self.records.append(record)

    def events(self, name: str, event: str) -> list:
        """Arguments of every ``event`` ``name`` received so far (drained from the stream)."""
        import queue
        while True:
            try:
                self.records.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return [r["args"] for r in self.records
                if r["ev"] == "event" and r["name"] == name and r["event"] == event]

    # -- prroom's protocol, as the recovery tests drive it ---------------------------------

    def connect(self, name: str, url: str, auth: Optional[dict] = None,
                **options: object) -> dict:
        """Open socket ``name`` to ``url``; its connect record (a fresh session, not recovered)."""
        self.send("connect", name=name, url=url, auth=auth, options=options)
        record = self.expect(lambda r: r["name"] == name and r["ev"] == "connect")
        assert not record.get("recovered"), record
        return record

    def join(self, name: str, room: int, username: Optional[str] = None) -> None:
        """``name`` joins ``room`` (as ``username``, by default its own name); asserts the ack."""
        reply = self.call(name, "join-pr-room", {"pullRequestId": room,
                                                 "username": username or name})
        assert reply["ok"], reply

    def say(self, name: str, room: int, text: str, username: Optional[str] = None,
            **extra: object) -> dict:
        """``name`` sends ``text`` to ``room``; the (successful) ack."""
        reply = self.call(name, "send-message-to-pr-room", {
            "pullRequestId": room, "username": username or name, "message": text, **extra})
        assert reply["ok"], reply
        return reply

    def texts(self, name: str) -> list:
        """The text of every ``pr-room-message`` ``name`` received so far, in order."""
        return [args[0]["message"] for args in self.events(name, "pr-room-message")]

    def close(self) -> None:
        """End the Node process."""
        try:
            self.send("exit")
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()
            self.proc.wait()
