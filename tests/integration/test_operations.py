"""What operators see and do: metrics, health, readiness, graceful restarts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from typing import Dict, Optional

import pytest
import requests
import socketio

from tests.support import metrics, servers
from tests.support.environ import without_settings
from tests.support.metrics import value

pytestmark = pytest.mark.integration

METRICS_TOKEN = "scrape-me"


observed = servers.server_fixture(
    {"PRROOM_METRICS_PATH": "/metrics", "PRROOM_METRICS_TOKEN": METRICS_TOKEN,
     # a refill of one message per 100 s: a slow machine cannot earn a token mid-test
     "PRROOM_MESSAGE_BURST": "3", "PRROOM_MESSAGE_RATE": "0.01"},
    doc="Metrics at /metrics behind a token; a burst of 3 messages, hardly refilled.")


def scrape(server) -> dict:
    """Every sample of ``server``'s metrics, scraped over HTTP with the token."""
    return metrics.scrape(server, METRICS_TOKEN)


def test_metrics_are_guarded(observed):
    assert requests.get(observed.url + "/metrics", timeout=5).status_code == 401
    wrong = requests.get(observed.url + "/metrics", timeout=5,
                         headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_metrics_are_off_unless_configured(server):
    assert requests.get(server.url + "/metrics", timeout=5).status_code == 404


def test_metrics_move_as_clients_act(observed, connect):
    before = scrape(observed)
    alice, bob = connect.many(2, observed)
    alice.join(1, "alice")
    bob.join(1, "bob")
    alice.say(1, "alice", "one")
    bob.call("send-message-to-pr-room",
             {"pullRequestId": 2, "username": "bob", "message": "not a member"})
    for _ in range(4):  # burst 3: the fourth is rate-limited
        alice.call("typing", {"pullRequestId": 1, "username": "alice"})
        alice.call("send-message-to-pr-room",
                   {"pullRequestId": 1, "username": "alice", "message": "m"})
    during = scrape(observed)

    assert value(during, "prroom_connected_sockets") == \
        value(before, "prroom_connected_sockets") + 2
    assert value(during, "prroom_rooms") == 1
    assert value(during, "prroom_room_members_count") == 1  # one room…
    assert value(during, "prroom_room_members_sum") == 2    # …of two members
    assert value(during, "prroom_room_members_bucket", le="1.0") == 0
    assert value(during, "prroom_room_members_bucket", le="2.0") == 1

    def grew(name, **labels):
        return value(during, name, **labels) - value(before, name, **labels)

    assert grew("prroom_events_total", event="join-pr-room", outcome="ok") == 2
    assert grew("prroom_events_total", event="send-message-to-pr-room",
                outcome="not-a-member") == 1
    assert grew("prroom_errors_total", code="not-a-member") == 1
    assert grew("prroom_events_total", event="send-message-to-pr-room", outcome="ok") == 3
    assert grew("prroom_events_total", event="send-message-to-pr-room",
                outcome="rate-limited") == 2
    assert grew("prroom_rate_limit_hits_total", kind="message") == 2
    assert grew("prroom_messages_total") == 3
    assert grew("prroom_messages_delivered_total") == 6  # 3 messages x 2 members
    assert grew("prroom_connections_total", outcome="accepted") == 2
    assert grew("prroom_event_seconds_count", event="join-pr-room") == 2
    assert "prroom_message_queue_up" not in {key[0] for key in during}  # not clustered


def test_health_and_readiness(server):
    health = requests.get(server.url + "/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = requests.get(server.url + "/readyz", timeout=5)
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert ready.json()["status"] == "ready" and checks["queue"] == "not clustered"
    # every library seam installed under gunicorn, on the releases the tests run with
    assert checks["seams"] == {name: "installed" for name in checks["seams"]}
    assert {"packet-guard", "connect-handling", "event-path", "direct-writes"} <= \
        set(checks["seams"])


def test_sigterm_tells_clients_and_they_reconnect_to_the_next_instance():
    # a socketio.Client, not the factory's: this one reconnects, as the chat page does
    client = socketio.Client(reconnection_delay=0.2, reconnection_delay_max=0.5)
    told, connected, rejoined = threading.Event(), [], threading.Event()
    received = []

    @client.on("pr-room-server-shutdown")
    def on_shutdown(data):
        told.set()

    @client.on("connect")
    def on_connect():
        connected.append(client.sid)
        if len(connected) > 1:  # what the chat page does: rejoin after a reconnect
            client.emit("join-pr-room", {"pullRequestId": 3, "username": "rita"},
                        callback=lambda ack: rejoined.set())

    @client.on("pr-room-message")
    def on_message(data):
        received.append(data["message"])

    try:
        with servers.running() as first:
            client.connect(first.url, transports=["websocket"], wait_timeout=5)
            assert client.call("join-pr-room", {"pullRequestId": 3, "username": "rita"},
                               timeout=5)["ok"]
            first.proc.send_signal(signal.SIGTERM)
            assert told.wait(5), "no pr-room-server-shutdown before the connection closed"
            assert first.proc.wait(15) == 0  # exits cleanly, well within graceful_timeout
        # the next instance comes up where the load balancer points
        with servers.running(port=first.port):
            assert rejoined.wait(15), "the client did not reconnect and rejoin"
            assert len(connected) == 2 and connected[0] != connected[1]
            assert client.call("send-message-to-pr-room",
                               {"pullRequestId": 3, "username": "rita", "message": "back"},
                               timeout=5)["ok"]
    finally:
        client.shutdown()  # the servers are gone: disconnect() would leave it reconnecting
    assert "back" in received


def run_prroom(*args: str, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """The ``prroom`` console script with ``env`` as its only settings."""
    full_env = without_settings(os.environ)
    full_env.update(env or {})
    return subprocess.run([str(servers.BIN / "prroom"), *args], capture_output=True,
                          text=True, timeout=60, env=full_env, cwd=servers.ROOT)


def test_check_config_prints_the_effective_settings_with_secrets_masked():
    done = run_prroom("check-config", env={"PRROOM_POST_TOKENS": "very-secret-token=ci-bot",
                                           "PRROOM_MESSAGE_RATE": "7"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "PRROOM_MESSAGE_RATE=7.0  (env)" in lines
    assert "PRROOM_MAX_MESSAGE_LENGTH=4000  (default)" in lines
    assert "PRROOM_POST_TOKENS=********  (env)" in lines
    assert "very-secret-token" not in done.stdout


def test_secrets_are_masked_in_check_config_and_in_refusals():
    done = run_prroom("check-config", env={
        "PRROOM_MESSAGE_QUEUE": "redis://queue-user:hunter2@127.0.0.1:1/0",
        "PRROOM_SECRET_KEY": "key-hunter2", "PRROOM_METRICS_TOKEN": "metrics-hunter2"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "PRROOM_MESSAGE_QUEUE=redis://queue-user:****@127.0.0.1:1/0  (env)" in lines
    assert "PRROOM_SECRET_KEY=********  (env)" in lines
    assert "PRROOM_METRICS_TOKEN=********  (env)" in lines
    assert "hunter2" not in done.stdout + done.stderr
    # a malformed URL is refused at start without its password, by the CLI and by gunicorn
    bad = "redis+cluster://u:hunter2@nohostport"
    done = run_prroom("check-config", env={"PRROOM_MESSAGE_QUEUE": bad})
    assert done.returncode == 2 and "hunter2" not in done.stderr
    assert "PRROOM_MESSAGE_QUEUE='redis+cluster://u:****@nohostport'" in done.stderr
    proc = servers.gunicorn(env={"PRROOM_MESSAGE_QUEUE": bad})
    try:
        assert proc.proc.wait(30) != 0
    finally:
        proc.stop()
    assert "u:****@nohostport" in proc.log() and "hunter2" not in proc.log()


@pytest.mark.parametrize("key,raw,expected", [
    ("PRROOM_TYPING_TIMEOUT", "soon", "expected a number"),
    ("PRROOM_PORT", "70000", "expected an integer from 0 to 65535"),
    ("PRROOM_AUTH_MODE", "magic", "expected one of none, token, custom"),
    ("PRROOM_MESSAGE_QUEUE", "http://redis", "expected empty or a redis://"),
    ("PRROOM_LOG_FORMAT", "xml", "expected one of text, json"),
])
def test_a_bad_setting_is_one_clear_line_and_exit_2(key, raw, expected):
    done = run_prroom("check-config", env={key: raw})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {key}={raw!r}: {expected}"), lines


def test_prroom_serve_runs_the_production_server_with_flags_over_env(connect):
    port = servers.free_port()
    proc = servers.ServerProcess([str(servers.BIN / "prroom"), "serve", "--port", str(port),
                                  "--log-format", "json"], port,
                                 env={"PRROOM_PORT": "1", "PRROOM_GRACEFUL_TIMEOUT": "2"})
    proc.wait_ready()
    try:
        client = connect(proc)
        client.join(4, "sam")
        client.say(4, "sam", "served")
        assert client.expect("pr-room-message")["message"] == "served"
        client.close()  # before the stop: its exit code is the assertion
    finally:
        assert proc.stop() == 0
    records = [json.loads(line) for line in proc.log().splitlines() if line.strip()]
    assert any(r["logger"] == "prroom" and r["message"].startswith("join sid=")
               for r in records)
    assert any(r["logger"] == "gunicorn.access" for r in records)
    assert "served" not in proc.log()  # message text is never logged


def test_prroom_issue_token_signs_with_the_configured_secret():
    done = run_prroom("issue-token", "alice", "--pr", "5",
                      env={"PRROOM_SECRET_KEY": "cli-secret"})
    assert done.returncode == 0, done.stderr
    from prroom.core.identity import Identity, TokenIdentity
    identity = TokenIdentity("cli-secret", 60).authenticate({}, {"token": done.stdout.strip()})
    assert identity is not None
    assert identity._replace(expires_at=None) == Identity("alice", frozenset({5}))
    assert run_prroom("issue-token", "alice").returncode == 2  # no secret: usage error


def test_a_bad_setting_is_a_usage_error_for_every_command():
    # the docs: exit 2 for bad usage or configuration, for issue-token and post as for the others
    bad = {"PRROOM_SECRET_KEY": "cli-secret", "PRROOM_TOKEN_MAX_AGE": "-5"}
    done = run_prroom("issue-token", "alice", env=bad)
    assert done.returncode == 2 and "PRROOM_TOKEN_MAX_AGE" in done.stderr
    done = run_prroom("post", "5", "bot", "hi", env={"PRROOM_MESSAGE_QUEUE": "redis://x:1/0",
                                                     "PRROOM_MAX_MESSAGE_LENGTH": "zero"})
    assert done.returncode == 2 and "PRROOM_MAX_MESSAGE_LENGTH" in done.stderr
    # an option is checked as the setting it stands for
    done = run_prroom("post", "5", "bot", "hi", "--message-queue", "http://x:1/0")
    assert done.returncode == 2 and "PRROOM_MESSAGE_QUEUE='http://x:1/0'" in done.stderr


def test_a_post_from_outside_a_server_applies_the_configured_message_limit():
    # no server in this process: validated with the environment's limits, before any publish
    done = run_prroom("post", "5", "bot", "x" * 11, env={
        "PRROOM_MESSAGE_QUEUE": "redis://127.0.0.1:1/0", "PRROOM_MAX_MESSAGE_LENGTH": "10"})
    assert done.returncode == 2
    assert "the limit is 10" in done.stderr
