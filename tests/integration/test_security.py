"""Identity, authorization, origins and limits, against real gunicorn servers."""
from __future__ import annotations

import subprocess

import pytest
import requests
import socketio

from tests.support import servers
from tests.support.clients import Clients
from tests.support.servers import TOKEN_SECRET

pytestmark = pytest.mark.integration


def refused(url, **connect_args) -> dict:
    """Connect and return the connect_error the server answered with."""
    client = socketio.Client(reconnection=False)
    errors: list = []
    client.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(url, transports=["websocket"], wait_timeout=5, **connect_args)
    client.disconnect()
    assert errors, "the server gave no connect_error"
    return errors[0]


def issue_token(username: str, *pull_requests: int, secret: str = TOKEN_SECRET) -> str:
    """A token from the documented CLI, as an operator would make one (for token_server)."""
    argv = [str(servers.BIN / "flask"), "--app", "prroom", "prroom", "issue-token", username]
    for pull_request in pull_requests:
        argv += ["--pr", str(pull_request)]
    env = {"PRROOM_AUTH_MODE": "token", "PRROOM_SECRET_KEY": secret, "PATH": str(servers.BIN)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30,
                          cwd=servers.ROOT, check=True)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def alice_token():
    return issue_token("alice")


def test_token_mode_refuses_connections_without_a_valid_token(token_server, alice_token):
    assert refused(token_server.url)["data"]["code"] == "unauthorized"
    assert refused(token_server.url, auth={"token": "forged"})["data"]["code"] == "unauthorized"
    tampered = alice_token[:-2] + ("AA" if not alice_token.endswith("AA") else "BB")
    assert refused(token_server.url, auth={"token": tampered})["data"]["code"] == "unauthorized"
    other_secret = issue_token("alice", secret="another-secret")
    assert refused(token_server.url, auth={"token": other_secret})["data"]["code"] == \
        "unauthorized"


def test_authenticated_socket_speaks_with_its_identity(token_server, connect, alice_token):
    alice = connect(token_server, auth={"token": alice_token})
    bob = connect(token_server, auth={"token": issue_token("bob")})
    # the username may be omitted: the token says who this is
    assert alice.call("join-pr-room", {"pullRequestId": 11})["username"] == "alice"
    assert bob.join(11, "bob")["username"] == "bob"
    claim = alice.call("join-pr-room", {"pullRequestId": 12, "username": "bob"})
    assert claim["error"]["code"] == "identity-mismatch"
    spoof = alice.call("send-message-to-pr-room",
                       {"pullRequestId": 11, "username": "bob", "message": "I am bob"})
    assert spoof["error"]["code"] == "identity-mismatch"
    assert alice.call("send-message-to-pr-room",
                      {"pullRequestId": 11, "message": "it's alice"})["ok"]
    message = bob.expect("pr-room-message")
    assert (message["username"], message["message"]) == ("alice", "it's alice")
    assert alice_token not in token_server.log()  # tokens never reach the logs


def test_scoped_token_opens_only_its_pull_requests(token_server, connect):
    scoped = connect(token_server, auth={"token": issue_token("carol", 21, 22)})
    member = connect(token_server, auth={"token": issue_token("dave")})
    member.join(23, "dave")
    assert scoped.join(21, "carol")["ok"]
    ack = scoped.call("join-pr-room", {"pullRequestId": 23})
    assert ack["ok"] is False and ack["error"]["code"] == "forbidden"
    assert scoped.call("send-message-to-pr-room",
                       {"pullRequestId": 23, "message": "x"})["error"]["code"] == \
        "not-a-member"
    member.say(23, "dave", "private")
    assert member.expect("pr-room-message")["message"] == "private"  # nothing else came


def test_connections_per_identity_are_capped(token_server):
    token = issue_token("erin")
    with Clients(token_server) as connect:
        connect(auth={"token": token})
        second = connect(auth={"token": token})
        error = refused(token_server.url, auth={"token": token})
        assert error["data"]["code"] == "too-many-connections" and error["data"]["limit"] == 2
        second.close()
        assert connect(auth={"token": token}).connected  # a slot freed up


def test_rooms_per_socket_are_capped(token_server, connect):
    client = connect(token_server, auth={"token": issue_token("frank")})
    for pull_request in (31, 32, 33):
        client.join(pull_request, "frank")
    ack = client.call("join-pr-room", {"pullRequestId": 34})
    assert ack["error"]["code"] == "too-many-rooms" and ack["error"]["limit"] == 3
    assert client.join(33, "frank")["ok"]  # re-joining a room it is in is fine
    client.call("leave-pr-room", {"pullRequestId": 31})
    assert client.join(34, "frank")["ok"]


def test_message_flood_is_rate_limited_then_disconnected(token_server, connect):
    flooder = socketio.Client(reconnection=False)
    flooder.connect(token_server.url, transports=["websocket"],
                    auth={"token": issue_token("mallory")}, wait_timeout=5)
    watcher = connect(token_server, auth={"token": issue_token("walter")})
    try:
        assert flooder.call("join-pr-room", {"pullRequestId": 41}, timeout=5)["ok"]
        watcher.join(41, "walter")
        acks = [flooder.call("send-message-to-pr-room",
                             {"pullRequestId": 41, "message": f"spam {n}"}, timeout=5)
                for n in range(7)]
        assert [ack["ok"] for ack in acks[:5]] == [True] * 5  # the burst
        limited = acks[5]["error"]
        assert limited["code"] == "rate-limited" and 0 < limited["retryAfter"] <= 0.5
        for n in range(5):
            assert watcher.expect("pr-room-message")["message"] == f"spam {n}"
        # the client may already have seen the disconnect: then it refuses to emit
        with pytest.raises((socketio.exceptions.TimeoutError,
                            socketio.exceptions.BadNamespaceError)):
            for _ in range(20):  # keep hammering after being told: disconnected
                flooder.call("send-message-to-pr-room",
                             {"pullRequestId": 41, "message": "more"}, timeout=2)
        assert not flooder.connected or flooder.eio.state != "connected"
        watcher.say(41, "walter", "quiet again")
        assert watcher.expect("pr-room-message")["message"] == "quiet again"
    finally:
        flooder.disconnect()
    assert "disconnecting sid=" in token_server.log()


def test_flask_login_session_identifies_sockets_and_rooms_follow_the_host_rules():
    with servers.running(app="tests.integration.login_app:app") as proc, \
            Clients(proc) as connect:
        assert refused(proc.url)["data"]["code"] == "unauthorized"  # no session: refused

        def logged_in(name):
            session = requests.Session()
            assert session.post(proc.url + "/login", data={"name": name}, timeout=5).ok
            cookie = "; ".join(f"{k}={v}" for k, v in session.cookies.items())
            return connect(headers={"Cookie": cookie}, presence=True)

        alice, bob = logged_in("alice"), logged_in("bob")
        assert alice.call("join-pr-room", {"pullRequestId": 1})["ok"]
        assert bob.call("join-pr-room", {"pullRequestId": 1})["error"]["code"] == "forbidden"
        assert bob.call("join-pr-room", {"pullRequestId": 2})["ok"]
        assert alice.call("join-pr-room", {"pullRequestId": 2})["ok"]
        alice.call("send-message-to-pr-room", {"pullRequestId": 2, "message": "hi"})
        assert bob.expect("pr-room-members") == {"pullRequestId": 2, "members": ["bob"]}
        assert bob.expect("pr-room-user-joined") == {"pullRequestId": 2, "username": "alice"}
        assert bob.expect("pr-room-message")["username"] == "alice"


allowlist_server = servers.server_fixture(
    {"PRROOM_CORS_ALLOWED_ORIGINS": "http://review.example"},
    doc="Browsers from http://review.example only.")


@pytest.mark.parametrize("allowlist,origin,accepted", [
    (False, "http://evil.example", False),       # default: same origin only
    (False, None, True),                         # non-browser clients send no Origin
    (True, "http://review.example", True),
    (True, "http://evil.example", False),
])
def test_browser_origins_follow_the_allowlist(server, allowlist_server, allowlist, origin,
                                              accepted):
    url = (allowlist_server if allowlist else server).url
    headers = {"Origin": origin} if origin else {}
    handshake = requests.get(url + "/socket.io/?EIO=4&transport=polling", headers=headers,
                             timeout=5)
    assert (handshake.status_code == 200) is accepted, handshake.text
    if not accepted:  # what a misconfigured browser's network tab shows
        assert handshake.status_code == 400 and "Not an accepted origin" in handshake.text


def test_none_mode_warns_at_start(server):
    assert "PRROOM_AUTH_MODE=none" in server.log()


any_origin_server = servers.server_fixture(
    {"PRROOM_CORS_ALLOWED_ORIGINS": "*"},
    doc="Browsers from any origin ('*').")


def test_any_origin_is_answered_without_credentials(any_origin_server, allowlist_server):
    evil = {"Origin": "https://evil.example"}
    url = "/socket.io/?EIO=4&transport=polling"
    handshake = requests.get(any_origin_server.url + url, headers=evil, timeout=5)
    assert handshake.status_code == 200
    assert handshake.headers["Access-Control-Allow-Origin"] == "https://evil.example"
    assert "Access-Control-Allow-Credentials" not in handshake.headers  # no cookies
    listed = requests.get(allowlist_server.url + url, timeout=5,
                          headers={"Origin": "http://review.example"})
    assert listed.headers["Access-Control-Allow-Credentials"] == "true"


def test_any_origin_with_cookie_auth_does_not_start():
    proc = servers.gunicorn(env={"PRROOM_CORS_ALLOWED_ORIGINS": "*",
                                 "PRROOM_AUTH_MODE": "custom",
                                 "PRROOM_AUTHENTICATE": "tests.integration.login_app:authenticate"})
    try:
        assert proc.proc.wait(30) != 0
    finally:
        proc.stop()
    lines = [line for line in proc.log().splitlines() if "PRROOM_CORS_ALLOWED_ORIGINS" in line]
    assert lines and lines[0].endswith("PRROOM_CORS_ALLOWED_ORIGINS='*' with "
                                       "PRROOM_AUTH_MODE='custom' (cookie-based): expected "
                                       "the allowed origins listed instead")
