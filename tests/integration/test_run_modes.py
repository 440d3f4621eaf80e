"""The three ways to run prroom, each with a real server process and a real client."""
from __future__ import annotations

import subprocess
import sys
from typing import List, Optional

import pytest
import requests

from tests.support import servers
from tests.support.clients import Clients

pytestmark = pytest.mark.integration


def chat_round_trip(server: servers.ServerProcess, transports: Optional[List[str]] = None,
                    pull_request_id: int = 7) -> None:
    """Two clients in one room: a message reaches both."""
    with Clients(server) as connect:
        alice, bob = connect.many(2, transports=transports)
        alice.join(pull_request_id, "alice")
        bob.join(pull_request_id, "bob")
        alice.say(pull_request_id, "alice", "hi bob")
        for client in (alice, bob):
            assert client.expect("pr-room-message")["message"] == "hi bob"
        assert alice.transport == (transports or ["websocket"])[-1]


def test_gunicorn_refuses_more_than_one_worker():
    proc = servers.gunicorn(extra_args=["--workers", "2"])
    try:
        assert proc.proc.wait(30) != 0
    finally:
        proc.stop()
    assert "workers must be 1" in proc.log()


def test_web_concurrency_does_not_start_more_workers():
    with servers.running(env={"WEB_CONCURRENCY": "4"}) as proc:
        chat_round_trip(proc, transports=["polling"])  # polling breaks with >1 worker
        assert proc.log().count("Booting worker") == 1
        assert "WEB_CONCURRENCY=4 ignored" in proc.log()


def test_existing_flask_app_keeps_its_routes_and_events_beside_prroom():
    with servers.running(app="tests.integration.host_app:app",
                         health_path="/chat/healthz") as proc, Clients(proc) as connect:
        assert requests.get(proc.url + "/", timeout=5).json() == {"app": "host"}
        assert requests.get(proc.url + "/healthz", timeout=5).json() == {"host": "ok"}
        assert requests.get(proc.url + "/chat/healthz", timeout=5).json()["status"] == "ok"
        client = connect()
        assert client.call("host-ping", "x") == {"pong": "x"}
        assert client.expect("host-pong") == {"echo": "x"}
        client.join(5, "guest")
        ack = client.call("send-message-to-pr-room",
                          {"pullRequestId": 5, "username": "guest", "message": "y" * 101})
        assert ack["error"]["code"] == "message-too-long"  # the host's config applies
        assert ack["error"]["limit"] == 100
        chat_round_trip(proc)


def test_flask_run_serves_websockets_in_threading_mode():
    port = servers.free_port()
    proc = servers.ServerProcess(
        [str(servers.BIN / "flask"), "--app", "prroom", "run", "--port", str(port)], port)
    proc.wait_ready()
    try:
        assert requests.get(proc.url + "/healthz", timeout=5).json()["asyncMode"] == "threading"
        chat_round_trip(proc, transports=["websocket"])
        chat_round_trip(proc, transports=["polling", "websocket"], pull_request_id=8)
    finally:
        proc.stop()
    assert "monkey" not in proc.log().lower()


def test_python_dash_m_prroom_serves_with_gevent():
    port = servers.free_port()
    proc = servers.ServerProcess([sys.executable, "-m", "prroom"], port,
                                 env={"PRROOM_PORT": str(port)})
    proc.wait_ready()
    try:
        assert requests.get(proc.url + "/healthz", timeout=5).json()["asyncMode"] == "gevent"
        chat_round_trip(proc)
    finally:
        proc.stop()


def test_bad_configuration_stops_the_server_with_one_clear_line():
    proc = servers.gunicorn(env={"PRROOM_MAX_MESSAGE_LENGTH": "lots"})
    try:
        assert proc.proc.wait(30) != 0
    finally:
        proc.stop()
    assert "PRROOM_MAX_MESSAGE_LENGTH='lots': expected an integer" in proc.log()


def test_package_installs_its_console_entry_points_and_imports_light():
    # the console script setup.cfg declares is installed, and lists its commands
    done = subprocess.run([str(servers.BIN / "prroom"), "--help"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert {"serve", "check-config", "issue-token", "post"} <= set(done.stdout.split())
    # importing the package must not pull in Flask: python -m prroom patches gevent first
    code = "import sys, prroom; print(sorted(m for m in sys.modules if m.startswith('flask')))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=30)
    assert imported.stdout.strip() == "[]"
