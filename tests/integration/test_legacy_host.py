"""Living inside a legacy Flask app (docs/flask.md).

A host view that blocks gevent's event loop is named, with its stack, in one warning, counted
in the metrics and shown in /healthz; chat messages sent meanwhile arrive after it, none
lost; a module holding an unpatched function is reported at start-up; and an app that runs
on sync workers uses prroom as a separate service (tokens with the shared key, posts through
Redis).  All against gunicorn as production runs it.
"""
from __future__ import annotations

import re
import subprocess
import threading
from typing import Iterator

import pytest
import requests

from tests.support import servers
from tests.support.redis_server import running_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

blocking_server = servers.server_fixture(
    {"PRROOM_BLOCKING_THRESHOLD": "100"}, app="tests.integration.blocking_app:app",
    doc="A host app with views that block the loop, prroom inside it, detector at 100 ms.")


def get_in_background(url: str) -> threading.Thread:
    thread = threading.Thread(target=requests.get, args=(url,), kwargs={"timeout": 30})
    thread.start()
    return thread


def warnings_about(server: servers.ServerProcess, path: str, serving: str = "GET") -> list:
    return [block for block in server.log().split("WARNING")
            if "event loop blocked" in block and f"serving {serving} {path}" in block]


def warning_naming(server: servers.ServerProcess, path: str, *names: str,
                   serving: str = "GET") -> str:
    """The last warning about ``path`` once one names all of ``names``, or the last seen.

    A warning is written a line at a time, its innermost frames last: one read of the log
    can catch it half-written, so it is awaited whole."""
    seen = ""

    def named() -> bool:
        nonlocal seen
        blocks = warnings_about(server, path, serving)
        seen = blocks[-1] if blocks else ""
        return all(name in seen for name in names)

    wait_until(named, 10)
    return seen


def blocked_count(server: servers.ServerProcess) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    match = re.search(r"^prroom_event_loop_blocked_seconds_count (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def server_is_held(server: servers.ServerProcess) -> bool:
    try:
        requests.get(server.url + "/healthz", timeout=0.2)
        return False
    except requests.Timeout:
        return True


def test_a_cpu_bound_view_is_named_with_its_stack_and_no_message_is_lost(blocking_server,
                                                                          connect, pr_id):
    alice, bob = connect(blocking_server), connect(blocking_server)
    alice.join(pr_id, "alice")
    bob.join(pr_id, "bob")
    before = blocked_count(blocking_server)
    view = get_in_background(blocking_server.url + "/reports/diff?ms=1500")
    assert wait_until(lambda: server_is_held(blocking_server), 5)  # the view holds the loop
    alice.emit("send-message-to-pr-room",
               {"pullRequestId": pr_id, "username": "alice", "message": "sent during"})
    view.join(30)
    assert bob.expect("pr-room-message", timeout=10)["message"] == "sent during"
    assert alice.expect("pr-room-message")["message"] == "sent during"

    warning = warning_naming(blocking_server, "/reports/diff", "render_huge_diff")
    found = re.search(r"blocked for (\d+) ms", warning)
    assert found is not None, warning
    held = float(found.group(1))
    assert held >= 500
    assert "render_huge_diff" in warning and "blocking_app.py" in warning  # the stack
    assert blocked_count(blocking_server) >= before + 1
    health = requests.get(blocking_server.url + "/healthz", timeout=5).json()
    assert health["eventLoop"]["worstLagMs"] >= 500
    assert health["eventLoop"]["thresholdMs"] == 100


def test_a_call_on_an_unpatched_socket_is_named(blocking_server):
    before = blocked_count(blocking_server)
    assert requests.get(blocking_server.url + "/reports/db?ms=600", timeout=30).ok
    warning = warning_naming(blocking_server, "/reports/db", "query_with_a_c_driver",
                             "client.recv(1)")
    assert "query_with_a_c_driver" in warning and "client.recv(1)" in warning
    assert blocked_count(blocking_server) >= before + 1


def test_a_host_socketio_event_that_blocks_is_named(blocking_server, connect):
    client = connect(blocking_server)
    assert client.call("render-diff", 600, timeout=30)["lines"] > 0
    warning = warning_naming(blocking_server, "render-diff", "render_diff_event",
                             serving="event")
    assert "render_diff_event" in warning


def test_a_module_holding_an_unpatched_function_is_reported_at_start(blocking_server):
    assert "gevent trap: module tests.integration.blocking_app holds the unpatched " \
           "socket.create_connection" in blocking_server.log()


def test_check_config_reports_the_same_trap():
    result = subprocess.run([str(servers.BIN / "prroom"), "check-config", "--wsgi",
                             "tests.integration.blocking_app:app"], cwd=servers.ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "gevent trap: module tests.integration.blocking_app holds the unpatched " \
           "socket.create_connection" in result.stdout


def test_prroom_own_app_has_no_trap(server):
    assert "gevent trap" not in server.log()


@pytest.fixture
def separate_service() -> Iterator[tuple]:
    """prroom in token mode on Redis, and a sync-worker host app sharing its key and Redis."""
    secret = "shared-between-the-app-and-prroom"
    with running_redis() as redis:
        env = {"PRROOM_SECRET_KEY": secret, "PRROOM_MESSAGE_QUEUE": redis.url}
        with servers.running({**env, "PRROOM_AUTH_MODE": "token"}) as prroom_service:
            port = servers.free_port()
            host = servers.ServerProcess(
                # -c /dev/null: not the checkout's gunicorn.conf.py, which is prroom's
                [str(servers.BIN / "gunicorn"), "-c", "/dev/null", "-k", "sync", "-w", "2", "-b",
                 f"127.0.0.1:{port}", "tests.integration.sync_host_app:app"], port, env=env)
            try:
                yield prroom_service, host.wait_ready()
            finally:
                host.stop()


def test_a_sync_app_uses_prroom_as_a_separate_service(separate_service, connect, pr_id):
    prroom_service, host = separate_service
    token = requests.get(f"{host.url}/pull-requests/{pr_id}/chat-token",
                         headers={"X-User": "alice"}, timeout=5).json()["token"]
    alice = connect(prroom_service, auth={"token": token})
    assert alice.call("join-pr-room", {"pullRequestId": pr_id})["username"] == "alice"
    other = alice.call("join-pr-room", {"pullRequestId": pr_id + 1})
    assert other["error"]["code"] == "forbidden"  # the token is scoped to its PR
    merged = requests.post(f"{host.url}/pull-requests/{pr_id}/merge", timeout=10).json()
    assert merged["gevent_loaded"] is False  # the sync app never runs gevent
    message = alice.expect("pr-room-message", timeout=10)
    assert (message["username"], message["message"], message["id"]) == \
        ("merge-bot", "merged to main", merged["id"])
