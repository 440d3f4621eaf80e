"""Connection state recovery after a silent loss: the client notices first, the server
still holds its old connection.

alice reaches the server through a :class:`TcpProxy` that goes silent (:meth:`TcpProxy.stall`:
nothing crosses any more, nothing is closed), as a Wi-Fi switch or a NAT timeout does; bob
keeps talking meanwhile.  socket.io-client gives up on the silent connection and comes back
with its ``{pid, offset}`` while the server has not yet seen the loss: the new connection
takes the session over.

Ping settings: the fast tests shorten the server's ping interval (1 s) and keep its ping
timeout long (10 s), and let alice's client give up one second after a missed ping (the
driver's ``noticeWithin``): the client deterministically notices first, as it usually does
with the defaults (the server's sweep runs every ``pingTimeout / 2``).  The ``stress``
test uses the default ping settings on both sides (a 45 s wait), unchanged: there either
side may notice first (python-engineio also checks a connection's ping deadline at each
packet it is sent, and bob keeps talking), and either way alice must get everything.
"""
from __future__ import annotations

import itertools
import json
import time
from typing import Iterator, Optional, Tuple

import pytest

from prroom.core.identity import issue_token
from tests.support import servers
from tests.support.cluster import cluster_env
from tests.support.node import NodeDriver
from tests.support.proxy import TcpProxy
from tests.support.raw import Closed, RawWebSocket, socketio_event
from tests.support.redis_server import RedisProcess

SEND = "send-message-to-pr-room"
MESSAGE = "pr-room-message"
FAST_PINGS = {"PRROOM_PING_INTERVAL": "1", "PRROOM_PING_TIMEOUT": "10"}
NOTICE_WITHIN_MS = 1000

silent_server = servers.server_fixture(
    {"PRROOM_RECOVERY_WINDOW": "120", "PRROOM_PRESENCE_GRACE": "3", **FAST_PINGS},
    doc="Recovery on; pings every second, a 10 s ping timeout.")
silent_token_server = servers.server_fixture(
    {"PRROOM_RECOVERY_WINDOW": "120", "PRROOM_PRESENCE_GRACE": "0", "PRROOM_AUTH_MODE": "token",
     "PRROOM_SECRET_KEY": servers.TOKEN_SECRET, "PRROOM_MAX_CONNECTIONS_PER_IDENTITY": "1",
     **FAST_PINGS},
    doc="Recovery on, token mode, no presence grace; pings every second, a 10 s timeout.")

_rooms = itertools.count(9800)


@pytest.fixture(scope="module")
def cluster(redis_server: RedisProcess
            ) -> Iterator[Tuple[servers.ServerProcess, servers.ServerProcess]]:
    env = cluster_env(redis_server, "silent", PRROOM_RECOVERY_WINDOW="120",
                      PRROOM_PRESENCE_GRACE="3", **FAST_PINGS)
    with servers.running(env=env) as first, servers.running(env=env) as second:
        yield first, second


def _token(username: str) -> dict:
    return {"token": issue_token(servers.TOKEN_SECRET, username)}


def _away_and_back(driver: NodeDriver, server: servers.ServerProcess, proxy: TcpProxy,
                   room: int, pace: float) -> list:
    """alice's path goes silent; bob talks until she is back; what bob said, in order."""
    said: list = []
    proxy.stall()
    deadline = time.monotonic() + 120
    while not any(r["name"] == "alice" and r["ev"] == "connect" for r in driver.records):
        assert time.monotonic() < deadline, "alice never came back"
        text = f"m{len(said)}"
        driver.say("bob", room, text)
        said.append(text)
        driver.events("bob", MESSAGE)  # drains the record stream into driver.records
        time.sleep(pace)  # bob's pace (under the message rate), not a wait for an event
    assert driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect")["recovered"]
    for _ in range(3):  # and after she is back
        text = f"m{len(said)}"
        driver.say("bob", room, text)
        said.append(text)
    driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                  and r["args"][0]["message"] == said[-1], timeout=10)
    return said


def test_a_silent_loss_the_client_notices_first_is_recovered_exactly(
        silent_server: servers.ServerProcess, driver: NodeDriver) -> None:
    server, room = silent_server, next(_rooms)
    proxy = TcpProxy(server.port)
    try:
        driver.connect("alice", proxy.url, noticeWithin=NOTICE_WITHIN_MS)
        driver.join("alice", room)
        driver.connect("bob", server.url)
        driver.join("bob", room)
        driver.say("bob", room, "before")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE)
        said = _away_and_back(driver, server, proxy, room, pace=0.25)
        # her client reconnected for a "ping timeout" the server had not seen yet
        assert driver.expect(lambda r: r["name"] == "alice"
                             and r["ev"] == "disconnect")["reason"] == "ping timeout"
        assert "reason=replaced" in server.log()
        assert len(said) >= 4
        assert driver.texts("alice") + [said[-1]] == said  # once each, in order
        # no presence flicker: bob never heard alice leave or come back
        assert not driver.events("bob", "pr-room-user-left")
        assert not driver.events("bob", "pr-room-user-joined")
    finally:
        proxy.close()


def test_the_replacing_connection_keeps_identity_and_rooms_without_a_grace(
        silent_token_server: servers.ServerProcess, driver: NodeDriver) -> None:
    # token mode, PRROOM_PRESENCE_GRACE=0: a takeover still makes no left/joined pair, and
    # the identity's connection cap counts the replaced connection out first
    server, room = silent_token_server, next(_rooms)
    proxy = TcpProxy(server.port)
    try:
        driver.connect("alice", proxy.url, auth=_token("alice"),
                 noticeWithin=NOTICE_WITHIN_MS)
        driver.join("alice", room)
        driver.connect("bob", server.url, auth=_token("bob"))
        driver.join("bob", room)
        said = _away_and_back(driver, server, proxy, room, pace=0.25)
        assert driver.texts("alice") + [said[-1]] == said
        assert not driver.events("bob", "pr-room-user-left")
        assert not driver.events("bob", "pr-room-user-joined")
        reply = driver.call("alice", SEND, {"pullRequestId": room, "message": "still me"})
        assert reply["ok"], reply
        driver.expect(lambda r: r["name"] == "bob" and r.get("event") == MESSAGE
                      and r["args"][0]["username"] == "alice"
                      and r["args"][0]["message"] == "still me")
    finally:
        proxy.close()


def test_a_stolen_live_pid_of_another_identity_disconnects_nobody(
        silent_token_server: servers.ServerProcess, driver: NodeDriver) -> None:
    server, room = silent_token_server, next(_rooms)
    driver.connect("alice", server.url, auth=_token("alice"))
    driver.join("alice", room)
    driver.connect("bob", server.url, auth=_token("bob"))
    driver.join("bob", room)
    driver.say("bob", room, "secret")
    driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE)
    # alice's current {pid, offset}, as someone watching her connection would see it
    driver.send("snapshot", name="alice")
    assert driver.expect(lambda r: r["ev"] == "snapshot")["has_pid"]
    driver.send("steal", name="mallory", victim="alice", url=server.url,
                auth=_token("mallory"))
    assert driver.expect(lambda r: r["name"] == "mallory"
                         and r["ev"] == "connect")["recovered"] is False
    driver.say("bob", room, "after")
    driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                  and r["args"][0]["message"] == "after")
    assert not [r for r in driver.records if r["ev"] == "disconnect"]
    assert driver.texts("mallory") == []
    assert not driver.events("bob", "pr-room-user-left")
    reply = driver.call("mallory", SEND, {"pullRequestId": room, "message": "hi"})
    assert reply["error"]["code"] == "not-a-member"


def test_a_stale_pid_does_not_disconnect_the_live_owner(
        silent_server: servers.ServerProcess, driver: NodeDriver) -> None:
    # anonymous mode: only the offset rule guards the session; an offset from before the
    # owner's latest restore takes nothing over
    server, room = silent_server, next(_rooms)
    proxy = TcpProxy(server.port)
    try:
        driver.connect("alice", proxy.url)
        driver.join("alice", room)
        driver.connect("bob", server.url)
        driver.join("bob", room)
        driver.send("snapshot", name="alice")
        driver.expect(lambda r: r["ev"] == "snapshot")
        proxy.cut()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "disconnect")
        proxy.reopen()
        assert driver.expect(lambda r: r["name"] == "alice"
                             and r["ev"] == "connect")["recovered"] is True
        driver.send("steal", name="mallory", victim="alice", url=server.url)
        assert driver.expect(lambda r: r["name"] == "mallory"
                             and r["ev"] == "connect")["recovered"] is False
        driver.say("bob", room, "after")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "after")
        assert not [r for r in driver.records if r["ev"] == "disconnect"]
        assert driver.texts("mallory") == []
    finally:
        proxy.close()


def _raw_session(url: str, auth: Optional[dict] = None) -> Tuple[RawWebSocket, str, list]:
    raw = RawWebSocket(url)
    reply = raw.connect(auth=auth)
    assert reply.startswith("0{"), reply
    session = socketio_event(raw.recv_socketio())
    assert session[0] == "pr-room-session"
    return raw, json.loads(reply[1:])["pid"], session


def test_at_the_protocol_level_the_old_connection_is_told_and_closed(
        silent_server: servers.ServerProcess) -> None:
    # what a client that is still reading sees when it is replaced: a Socket.IO DISCONNECT
    # (socket.io-client then does not reconnect), then the close
    room = next(_rooms)
    old, pid, session = _raw_session(silent_server.url)
    offset = session[2]
    old.send('421["join-pr-room",{"pullRequestId":%d,"username":"alice"}]' % room)
    while not old.recv_socketio().startswith("31["):  # its ack
        pass
    new, new_pid, restored = _raw_session(silent_server.url, {"pid": pid, "offset": offset})
    try:
        assert new_pid == pid and restored[1] == {"recovered": True}
        assert old.recv_socketio() == "1"  # DISCONNECT
        with pytest.raises(Closed):
            old.recv_socketio()
        new.send('422["send-message-to-pr-room",{"pullRequestId":%d,"username":"alice",'
                 '"message":"hi"}]' % room)
        while True:  # the room is hers again: her own message, then its ack
            packet = new.recv_socketio()
            if packet.startswith("32["):
                assert '"ok":true' in packet, packet
                break
    finally:
        old.close()
        new.close()


def test_clustered_the_same_process_takes_the_session_over(cluster, driver: NodeDriver
                                                           ) -> None:
    # one code path: the session goes through Redis as for any loss, on the same process
    first, second = cluster
    room = next(_rooms)
    proxy = TcpProxy(first.port)
    try:
        driver.connect("alice", proxy.url, noticeWithin=NOTICE_WITHIN_MS)
        driver.join("alice", room)
        driver.connect("bob", second.url)
        driver.join("bob", room)
        said = _away_and_back(driver, first, proxy, room, pace=0.25)
        assert "reason=replaced" in first.log()
        assert driver.texts("alice") + [said[-1]] == said
        assert not driver.events("bob", "pr-room-user-left")
        assert not driver.events("bob", "pr-room-user-joined")
    finally:
        proxy.close()


@pytest.mark.stress
def test_with_default_ping_settings_a_silent_loss_is_recovered(driver: NodeDriver) -> None:
    # the issue's scenario as a new user would try it: nothing shortened, ~47 s
    env = {"PRROOM_RECOVERY_WINDOW": "120"}
    with servers.running(env=env) as server:
        room = next(_rooms)
        proxy = TcpProxy(server.port)
        try:
            driver.connect("alice", proxy.url)
            driver.join("alice", room)
            driver.connect("bob", server.url)
            driver.join("bob", room)
            said = _away_and_back(driver, server, proxy, room, pace=0.5)
            assert len(said) > 50
            assert driver.texts("alice") + [said[-1]] == said
            assert not driver.events("bob", "pr-room-user-left")
            assert not driver.events("bob", "pr-room-user-joined")
        finally:
            proxy.close()
