"""Run a script of ``tests/node/`` (npm socket.io-client) and return the JSON it prints.

Without Node.js or ``npm ci --prefix tests/node`` the calling test fails, it does not skip:
CI must not silently stop checking the JavaScript client.
"""
from __future__ import annotations

import json
import shutil
import subprocess

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
