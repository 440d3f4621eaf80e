"""After CONNECT: a token's expiry closes its connection, an operator can disconnect an
identity on every process, and posted messages carry their bot's name, marked as a bot's.

Real gunicorn servers, npm socket.io-client (expiry with its auth callback and recovery)
and python-socketio clients; a real Redis for the cluster.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from contextlib import ExitStack
from typing import Iterator, List

import pytest
import requests
import socketio

from prroom.core.identity import issue_token
from tests.support import servers
from tests.support.clients import Clients, RoomClient, new_pull_request_id
from tests.support.cluster import cluster_env
from tests.support.environ import without_settings
from tests.support.node import NodeDriver
from tests.support.redis_server import RedisProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SECRET = servers.TOKEN_SECRET
ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"
BOT_TOKEN = "bot-token-for-identity-tests"
SCOPED_TOKEN = "scoped-token-for-identity-tests"
MAX_AGE = 4  # PRROOM_TOKEN_MAX_AGE of the expiry server: a connection lives 3 to 4 s

expiry_server = servers.server_fixture(
    {"PRROOM_AUTH_MODE": "token", "PRROOM_SECRET_KEY": SECRET,
     "PRROOM_TOKEN_MAX_AGE": str(MAX_AGE), "PRROOM_RECOVERY_WINDOW": "30",
     "PRROOM_POST_TOKENS": f"{BOT_TOKEN}=ci-bot"},
    doc="Token mode with 4 s tokens, recovery on, a posting bot.")
admin_server = servers.server_fixture(
    {"PRROOM_AUTH_MODE": "token", "PRROOM_SECRET_KEY": SECRET,
     "PRROOM_ADMIN_TOKEN": ADMIN_TOKEN,
     "PRROOM_POST_TOKENS": f"{BOT_TOKEN}=ci-bot,{SCOPED_TOKEN}=deploy-bot:7+8"},
    doc="Token mode with the admin endpoint and two posting bots (one scoped).")


def token(username: str) -> dict:
    return {"token": issue_token(SECRET, username)}


def signed_second() -> int:
    """The whole second a token issued now carries (itsdangerous' timestamp)."""
    return int(time.time())


def test_an_expired_token_s_connection_is_told_closed_and_recovers_with_a_fresh_token(
        expiry_server: servers.ServerProcess, driver: NodeDriver) -> None:
    room = new_pull_request_id()
    # socket.io-client waits 1.5 s before reconnecting: a post lands in the gap
    options = {"reconnectionDelay": 1500, "reconnectionDelayMax": 1500,
               "randomizationFactor": 0}
    driver.send("connect", name="alice", url=expiry_server.url, auth=token("alice"),
                options=options)
    driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect")
    assert driver.call("alice", "join-pr-room", {"pullRequestId": room})["ok"]
    error = driver.expect(lambda r: r["name"] == "alice" and r.get("event") == "pr-room-error",
                          timeout=MAX_AGE + 3)["args"][0]
    # what the auth callback gives for the reconnect: a fresh token
    driver.send("set_auth", name="alice", auth=token("alice"))
    assert error["ok"] is False and error["event"] is None
    assert error["error"]["code"] == "token-expired" and error["error"]["reconnect"] is True
    closed = driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "disconnect")
    assert closed["reason"] == "transport close"  # a lost connection: the client reconnects
    posted = requests.post(f"{expiry_server.url}/pull-requests/{room}/messages",
                           json={"message": "while you were away"},
                           headers={"Authorization": f"Bearer {BOT_TOKEN}"}, timeout=5)
    assert posted.status_code == 201, posted.text
    back = driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect", timeout=5)
    assert back["recovered"] is True
    missed = driver.expect(lambda r: r["name"] == "alice" and r.get("event") ==
                           "pr-room-message")["args"][0]
    assert (missed["username"], missed["message"], missed["via"]) == \
        ("ci-bot", "while you were away", "api")
    assert "its token expired" in expiry_server.log()


def test_a_connection_with_an_expired_static_token_is_refused_not_looped(
        expiry_server: servers.ServerProcess, connect: Clients) -> None:
    static = token("bob")
    client = connect(expiry_server, auth=static)
    client.expect("pr-room-session")  # recovery is on for this server
    assert client.expect("pr-room-error", timeout=MAX_AGE + 3)["error"]["code"] == \
        "token-expired"
    # a client without an auth callback comes back with the same token: refused once
    stale = socketio.Client(reconnection=False)
    errors: list = []
    stale.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        stale.connect(expiry_server.url, auth=static, transports=["websocket"], wait_timeout=5)
    assert errors and errors[0]["data"]["code"] == "unauthorized"


def admin(server: servers.ServerProcess, username: str, bearer: str = ADMIN_TOKEN
          ) -> requests.Response:
    return requests.post(f"{server.url}/admin/disconnect-identity", json={"username": username},
                         headers={"Authorization": f"Bearer {bearer}"}, timeout=5)


def revoked(client: RoomClient) -> dict:
    """The identity-revoked error ``client`` got, once it was disconnected."""
    error = client.expect("pr-room-error")
    # the DISCONNECT follows it (SimpleClient only notes it; nothing to await)
    assert wait_until(lambda: not client.connected, 5)
    return error


def test_the_admin_endpoint_disconnects_an_identity_and_refuses_its_earlier_tokens(
        admin_server: servers.ServerProcess, connect: Clients) -> None:
    old = token("mallory")
    tabs = [connect(admin_server, auth=old) for _ in range(2)]
    bystander = connect(admin_server, auth=token("bob"))
    assert admin(admin_server, "mallory", bearer="wrong" * 10).status_code == 401
    reply = admin(admin_server, "mallory")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"ok": True, "username": "mallory", "closed": 2, "published": False}
    for tab in tabs:
        error = revoked(tab)
        assert error["error"]["code"] == "identity-revoked" and error["event"] is None
    assert bystander.connected and bystander.call("join-pr-room", {"pullRequestId": 1})["ok"]
    stale = socketio.Client(reconnection=False)
    errors: list = []
    stale.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        stale.connect(admin_server.url, auth=old, transports=["websocket"], wait_timeout=5)
    assert errors[0]["data"]["code"] == "identity-revoked"
    assert "admin: disconnected identity=mallory" in admin_server.log()
    assert ADMIN_TOKEN not in admin_server.log()


def test_the_admin_endpoint_is_off_without_its_token(server: servers.ServerProcess) -> None:
    assert admin(server, "anyone").status_code == 404


def test_a_post_token_speaks_only_as_its_bot_and_only_where_it_may(
        admin_server: servers.ServerProcess, connect: Clients) -> None:
    member = connect(admin_server, auth=token("alice"))
    member.call("join-pr-room", {"pullRequestId": 7})

    def post(bearer: str, pull_request_id: int, body: dict) -> requests.Response:
        return requests.post(f"{admin_server.url}/pull-requests/{pull_request_id}/messages",
                             json=body, headers={"Authorization": f"Bearer {bearer}"},
                             timeout=5)
    impostor = post(BOT_TOKEN, 7, {"username": "alice", "message": "I am alice"})
    assert impostor.status_code == 403 and \
        impostor.json()["error"]["code"] == "identity-mismatch"
    outside = post(SCOPED_TOKEN, 9, {"message": "not my pull request"})
    assert outside.status_code == 403 and outside.json()["error"]["code"] == "forbidden"
    assert post(SCOPED_TOKEN, 7, {"message": "deployed"}).status_code == 201
    message = member.expect("pr-room-message")
    assert (message["username"], message["message"], message["via"]) == \
        ("deploy-bot", "deployed", "api")
    # a person's message carries no via
    member.call("send-message-to-pr-room", {"pullRequestId": 7, "message": "thanks"})
    assert "via" not in member.expect("pr-room-message")


def raw_post(server: servers.ServerProcess, headers: str) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    conn.sendall((f"POST /pull-requests/7/messages HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: Bearer {BOT_TOKEN}\r\nContent-Type: application/json\r\n"
                  f"{headers}\r\n").encode())
    return conn


def answer(conn: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return received
        received += chunk


@pytest.mark.parametrize("headers,status", [
    ("Transfer-Encoding: chunked\r\n", b"411"),
    ("Content-Length: 100000000\r\n", b"413"),
])
def test_a_body_is_refused_by_its_headers_before_it_is_read(
        admin_server: servers.ServerProcess, headers: str, status: bytes) -> None:
    conn = raw_post(admin_server, headers)
    started = time.monotonic()
    try:
        # no body byte is sent: the answer and the close come from the headers alone
        reply = answer(conn)
    finally:
        conn.close()
    assert reply.split(b"\r\n", 1)[0].split(b" ")[1] == status, reply[:200]
    assert b"Connection: close" in reply
    assert time.monotonic() - started < 3


@pytest.fixture(scope="module")
def cluster(redis_server: RedisProcess) -> Iterator[List[servers.ServerProcess]]:
    """Two token-mode processes of one deployment, each with the admin endpoint."""
    env = cluster_env(redis_server, "identity", PRROOM_AUTH_MODE="token",
                      PRROOM_SECRET_KEY=SECRET, PRROOM_ADMIN_TOKEN=ADMIN_TOKEN)
    with ExitStack() as stack:
        yield [stack.enter_context(servers.running(env=env)) for _ in range(2)]


def test_disconnecting_an_identity_reaches_every_process(
        cluster: List[servers.ServerProcess], redis_server: RedisProcess,
        connect: Clients) -> None:
    # over the admin endpoint of one process
    here, there = connect(cluster[0], auth=token("eve")), connect(cluster[1], auth=token("eve"))
    other = connect(cluster[1], auth=token("frank"))
    reply = admin(cluster[0], "eve")
    assert reply.json() == {"ok": True, "username": "eve", "closed": 1, "published": True}
    for client in (here, there):
        assert revoked(client)["error"]["code"] == "identity-revoked"
    assert other.connected and other.call("join-pr-room", {"pullRequestId": 1})["ok"]
    # with the CLI, from a process that is no server; eve's new tokens must be signed
    # after the revocation (whole seconds: one signed in the same second is refused)
    revoked_at = time.time()
    while signed_second() <= revoked_at:
        time.sleep(0.05)
    tabs = [connect(server, auth=token("eve")) for server in cluster]
    done = subprocess.run([str(servers.BIN / "prroom"), "disconnect-identity", "eve"],
                          env={**without_settings(os.environ),
                               "PRROOM_MESSAGE_QUEUE": redis_server.url,
                               "PRROOM_CHANNEL": "identity"},
                          capture_output=True, text=True, timeout=30, cwd=servers.ROOT)
    assert done.returncode == 0, done.stderr
    for tab in tabs:
        assert revoked(tab)["error"]["code"] == "identity-revoked"
    # and from a host app's Flask CLI, with its configuration
    revoked_at = time.time()
    while signed_second() <= revoked_at:
        time.sleep(0.05)
    tab = connect(cluster[1], auth=token("eve"))
    done = subprocess.run([str(servers.BIN / "flask"), "--app", "prroom", "prroom",
                           "disconnect-identity", "eve"],
                          env={**without_settings(os.environ),
                               "PRROOM_MESSAGE_QUEUE": redis_server.url,
                               "PRROOM_CHANNEL": "identity"},
                          capture_output=True, text=True, timeout=30, cwd=servers.ROOT)
    assert done.returncode == 0, done.stderr
    assert revoked(tab)["error"]["code"] == "identity-revoked"


def refused_with(server: servers.ServerProcess, auth: dict) -> str:
    """Connect with ``auth``; the code of the connect_error the server answered with."""
    client = socketio.Client(reconnection=False)
    errors: list = []
    client.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(server.url, auth=auth, transports=["websocket"], wait_timeout=5)
    client.disconnect()
    return errors[0]["data"]["code"]


def test_the_connection_cap_is_cluster_wide_and_a_dead_process_gives_its_slots_back(
        redis_server: RedisProcess, connect: Clients) -> None:
    env = cluster_env(redis_server, "cap", PRROOM_AUTH_MODE="token", PRROOM_SECRET_KEY=SECRET,
                      PRROOM_MAX_CONNECTIONS_PER_IDENTITY="2")
    with servers.running(env=env) as first, servers.running(env=env) as doomed:
        here = connect(first, auth=token("gina"))
        connect(doomed, auth=token("gina"))
        # two connections anywhere: a third is refused on either process
        assert refused_with(first, token("gina")) == "too-many-connections"
        assert refused_with(doomed, token("gina")) == "too-many-connections"
        assert connect(first, auth=token("hank")).connected  # others are not affected
        here.close()
        assert connect(first, auth=token("gina")).connected  # a closed one frees its slot
        assert refused_with(first, token("gina")) == "too-many-connections"
        # a process killed without a goodbye holds its slots only until it is reaped
        os.killpg(doomed.proc.pid, signal.SIGKILL)
        assert wait_until(lambda: "presence: reaped server" in first.log(), 10)
        assert connect(first, auth=token("gina")).connected


def test_a_custom_identity_with_an_expiry_is_closed_at_it(connect: Clients) -> None:
    env = {"PRROOM_AUTH_MODE": "custom",
           "PRROOM_AUTHENTICATE": "tests.integration.expiring_auth:authenticate"}
    with servers.running(env=env) as server:
        short = connect(server, auth={"name": "ivy", "seconds": 1})
        long = connect(server, auth={"name": "jon", "seconds": 600})
        started = time.monotonic()
        assert short.expect("pr-room-error", timeout=4)["error"]["code"] == "token-expired"
        assert wait_until(lambda: not short.connected, 5)
        assert time.monotonic() - started < 3  # its deadline plus at most one sweep
        assert long.connected and long.call("join-pr-room", {"pullRequestId": 1})["ok"]
