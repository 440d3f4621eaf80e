"""Connection state recovery with npm socket.io-client through a proxy that is cut (a blip).

prroom runs under gunicorn as in production; one client (alice) reaches it through a
:class:`TcpProxy`, the others directly.  Each test uses its own room.
"""
from __future__ import annotations

import itertools
from typing import List, Optional

import requests

from prroom.core.identity import issue_token
from tests.support import servers
from tests.support.clients import Clients
from tests.support.node import NodeDriver
from tests.support.proxy import TcpProxy
from tests.support.raw import RawWebSocket
from tests.support.waiting import wait_until

SEND = "send-message-to-pr-room"
MESSAGE = "pr-room-message"
BUFFER = 5

recovery_server = servers.server_fixture(
    {"PRROOM_RECOVERY_WINDOW": "30", "PRROOM_RECOVERY_BUFFER": str(BUFFER),
     "PRROOM_PRESENCE_GRACE": "3"},
    doc="Recovery on: a 30 s window, 5 packets per room, a 3 s presence grace.")
token_recovery_server = servers.server_fixture(
    {"PRROOM_RECOVERY_WINDOW": "30", "PRROOM_PRESENCE_GRACE": "3", "PRROOM_AUTH_MODE": "token",
     "PRROOM_SECRET_KEY": servers.TOKEN_SECRET},
    doc="Recovery on, token mode.")
flood_server = servers.server_fixture(
    {"PRROOM_RECOVERY_WINDOW": "30", "PRROOM_RECOVERY_SESSIONS": "20",
     "PRROOM_METRICS_PATH": "/metrics"},
    doc="Recovery on, at most 20 lost sessions kept.")
short_window_server = servers.server_fixture(
    {"PRROOM_RECOVERY_WINDOW": "1", "PRROOM_PRESENCE_GRACE": "0.5"},
    doc="Recovery on with a 1 s window.")

_rooms = itertools.count(9100)


def _blip_setup(driver: NodeDriver, server: servers.ServerProcess, proxy: TcpProxy) -> int:
    room = next(_rooms)
    driver.connect("alice", proxy.url)
    driver.join("alice", room)
    driver.connect("bob", server.url)
    driver.join("bob", room)
    driver.expect(lambda r: r["name"] == "alice" and r.get("event") == "pr-room-user-joined")
    return room


def _cut(driver: NodeDriver, proxy: TcpProxy) -> None:
    proxy.cut()
    driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "disconnect")


def test_missed_messages_arrive_once_in_order_and_buffered_sends_land(
        recovery_server: servers.ServerProcess, driver: NodeDriver) -> None:
    proxy = TcpProxy(recovery_server.port)
    try:
        room = _blip_setup(driver, recovery_server, proxy)
        driver.say("bob", room, "before")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE)
        _cut(driver, proxy)
        for n in range(3):
            driver.say("bob", room, f"missed {n}")
        # socket.io-client buffers this while offline and sends it once reconnected
        driver.send("emit", name="alice", event=SEND,
                    payload={"pullRequestId": room, "username": "alice",
                             "message": "written offline"})
        proxy.reopen()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect"
                      and r["recovered"] is True)
        driver.expect(lambda r: r["name"] == "bob" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "written offline")
        driver.say("bob", room, "after")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "after")
        assert driver.texts("alice") == ["missed 0", "missed 1", "missed 2",
                                           "written offline"]
        # the offset is the last argument, as socket.io-client expects
        assert all(isinstance(args[-1], str) for args in driver.events("bob", MESSAGE))
        # no presence flicker: bob never heard alice leave or join again
        assert not driver.events("bob", "pr-room-user-left")
        assert not driver.events("bob", "pr-room-user-joined")
    finally:
        proxy.close()


def test_a_replayed_pid_gets_a_fresh_session_and_nothing(
        recovery_server: servers.ServerProcess, driver: NodeDriver) -> None:
    proxy = TcpProxy(recovery_server.port)
    try:
        room = _blip_setup(driver, recovery_server, proxy)
        driver.say("bob", room, "secret plan")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE)
        _cut(driver, proxy)
        # what alice is about to present, as someone watching her reconnect would see it
        driver.send("snapshot", name="alice")
        assert driver.expect(lambda r: r["ev"] == "snapshot")["has_pid"]
        driver.say("bob", room, "while alice was away")
        proxy.reopen()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect"
                      and r["recovered"] is True)
        driver.send("steal", name="mallory", victim="alice", url=recovery_server.url)
        assert driver.expect(lambda r: r["name"] == "mallory"
                             and r["ev"] == "connect")["recovered"] is False
        driver.say("bob", room, "after the replay")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "after the replay")
        assert driver.texts("mallory") == []
        # (awaited records are consumed: "after the replay" was, just above)
        assert driver.texts("alice") == ["while alice was away"]
        # the replay cost alice nothing: her next blip is recovered too
        _cut(driver, proxy)
        driver.say("bob", room, "second blip")
        proxy.reopen()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect"
                      and r["recovered"] is True)
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "second blip")
        assert driver.texts("mallory") == []
    finally:
        proxy.close()


def test_what_a_room_said_before_the_join_is_never_replayed(
        recovery_server: servers.ServerProcess, driver: NodeDriver) -> None:
    # alice connects, the room talks, and only then does she join: a blip right after must
    # not hand her what was said before she was there
    proxy = TcpProxy(recovery_server.port)
    try:
        room = next(_rooms)
        driver.connect("bob", recovery_server.url)
        driver.join("bob", room)
        driver.connect("alice", proxy.url)
        driver.say("bob", room, "before alice joined")
        driver.join("alice", room)
        _cut(driver, proxy)
        driver.say("bob", room, "while alice was away")
        proxy.reopen()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect"
                      and r["recovered"] is True)
        driver.say("bob", room, "after")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "after")
        assert driver.texts("alice") == ["while alice was away"]
    finally:
        proxy.close()


def test_an_overflowed_buffer_gives_a_fresh_session(
        recovery_server: servers.ServerProcess, driver: NodeDriver) -> None:
    proxy = TcpProxy(recovery_server.port)
    try:
        room = _blip_setup(driver, recovery_server, proxy)
        _cut(driver, proxy)
        for n in range(BUFFER + 1):
            driver.say("bob", room, f"flood {n}")
        proxy.reopen()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect"
                      and r["recovered"] is False)
        # not partially restored: no replay, no membership (a send is refused)
        reply = driver.call("alice", SEND, {"pullRequestId": room, "username": "alice",
                                            "message": "hello?"})
        assert reply["error"]["code"] == "not-a-member"
        assert driver.texts("alice") == []
        # her session is gone for good: bob hears she left
        driver.expect(lambda r: r["name"] == "bob" and r.get("event") == "pr-room-user-left")
    finally:
        proxy.close()


def test_an_expired_window_gives_a_fresh_session(
        short_window_server: servers.ServerProcess, driver: NodeDriver) -> None:
    proxy = TcpProxy(short_window_server.port)
    try:
        room = _blip_setup(driver, short_window_server, proxy)
        _cut(driver, proxy)
        driver.say("bob", room, "too late")
        # the grace (0.5 s) passes: bob hears alice left; then the window (1 s) passes
        driver.expect(lambda r: r["name"] == "bob" and r.get("event") == "pr-room-user-left")
        driver.call("bob", "typing", {"pullRequestId": room, "username": "bob"})
        import time
        time.sleep(1.2)  # nothing announces that a window passed: wait it out
        proxy.reopen()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect"
                      and r["recovered"] is False)
        assert driver.texts("alice") == []
    finally:
        proxy.close()


def test_client_message_id_duplicates_are_delivered_once(
        recovery_server: servers.ServerProcess, driver: NodeDriver) -> None:
    room = next(_rooms)
    driver.connect("alice", recovery_server.url)
    driver.join("alice", room)
    first = driver.say("alice", room, "once", clientMessageId="c-1")
    again = driver.say("alice", room, "once", clientMessageId="c-1")
    other = driver.say("alice", room, "twice", clientMessageId="c-2")
    assert (again["id"], again["sentAt"]) == (first["id"], first["sentAt"])
    assert other["id"] != first["id"]
    driver.expect(lambda r: r.get("event") == MESSAGE and r["args"][0]["message"] == "twice")
    assert driver.texts("alice") == ["once"]  # "twice" was consumed just above
    bad = driver.call("alice", SEND, {"pullRequestId": room, "username": "alice",
                                      "message": "x", "clientMessageId": "x" * 65})
    assert bad["error"]["code"] == "invalid-field"
    # a new joiner gets nothing of what was said before (the buffer is for returning sessions)
    driver.connect("carol", recovery_server.url)
    driver.join("carol", room)
    driver.say("carol", room, "hi all")
    driver.expect(lambda r: r["name"] == "carol" and r.get("event") == MESSAGE
                  and r["args"][0]["message"] == "hi all")
    assert driver.texts("carol") == []


def _token(username: str, rooms: Optional[List[int]] = None) -> dict:
    return {"token": issue_token(servers.TOKEN_SECRET, username, rooms)}


def test_a_restore_is_bound_to_the_identity_and_rechecks_each_room(
        token_recovery_server: servers.ServerProcess, driver: NodeDriver) -> None:
    server = token_recovery_server
    proxy = TcpProxy(server.port)
    kept, lost = next(_rooms), next(_rooms)
    try:
        driver.send("connect", name="alice", url=proxy.url, auth=_token("alice", [kept, lost]))
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect")
        driver.send("connect", name="bob", url=server.url, auth=_token("bob"))
        driver.expect(lambda r: r["name"] == "bob" and r["ev"] == "connect")
        for room in (kept, lost):
            driver.join("alice", room)
            driver.join("bob", room)
        _cut(driver, proxy)
        driver.say("bob", kept, "in kept")
        driver.say("bob", lost, "in lost")
        # alice's new token no longer covers `lost`
        driver.send("set_auth", name="alice", auth=_token("alice", [kept]))
        proxy.reopen()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect"
                      and r["recovered"] is True)
        left = driver.expect(lambda r: r["name"] == "bob"
                             and r.get("event") == "pr-room-user-left")
        assert left["args"][0]["pullRequestId"] == lost
        # bob hears of the lost room while alice's replay may still be on its way: a barrier
        # message after it, and alice's messages up to it are exactly the kept room's
        driver.say("bob", kept, "barrier")
        driver.expect(lambda r: r["name"] == "alice" and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "barrier")
        assert driver.texts("alice") == ["in kept"]
        reply = driver.call("alice", SEND, {"pullRequestId": lost, "message": "hi"})
        assert reply["error"]["code"] == "not-a-member"
        # another identity presenting alice's session gets a fresh one
        _cut(driver, proxy)
        driver.say("bob", kept, "not for carol")
        driver.send("set_auth", name="alice", auth=_token("carol", [kept]))
        proxy.reopen()
        driver.expect(lambda r: r["name"] == "alice" and r["ev"] == "connect"
                      and r["recovered"] is False)
        assert driver.texts("alice") == ["in kept"]
    finally:
        proxy.close()


def test_window_zero_sends_no_pid_and_no_offset(driver: NodeDriver) -> None:
    with servers.running() as server:
        room = next(_rooms)
        assert not driver.connect("alice", server.url)["has_pid"]
        driver.join("alice", room)
        driver.say("alice", room, "plain")
        args = driver.expect(lambda r: r.get("event") == MESSAGE)["args"]
        assert len(args) == 1 and args[0]["message"] == "plain"


def test_python_clients_work_unchanged_but_see_the_offset(
        recovery_server: servers.ServerProcess, connect: Clients) -> None:
    # python-socketio's Client has no recovery: it reconnects as a new session, as before;
    # it receives the offset as one more argument and pr-room-session, which it may ignore
    client = connect(recovery_server)
    session = client.sio.receive(timeout=5)
    assert session[0] == "pr-room-session" and session[1] == {"recovered": False}
    room = next(_rooms)
    client.join(room, "py")
    client.say(room, "py", "from python")
    received = client.sio.receive(timeout=5)
    while received[0] != MESSAGE:
        received = client.sio.receive(timeout=5)
    assert received[1]["message"] == "from python" and isinstance(received[2], str)


def _gauge(server: servers.ServerProcess, name: str) -> float:
    text = requests.get(server.url + "/metrics", timeout=5).text
    return float(next(line.split()[1] for line in text.splitlines()
                      if line.startswith(name + " ")))


def test_a_flood_of_lost_connections_keeps_a_bounded_number_of_sessions(
        flood_server: servers.ServerProcess, connect: Clients) -> None:
    lost = 0
    for _ in range(60):
        raw = RawWebSocket(flood_server.url)
        assert '"pid"' in raw.connect()
        raw.close()  # the transport goes away: a recoverable loss, kept for the window
        lost += 1
    wait_until(lambda: _gauge(flood_server, "prroom_recovery_sessions") == 20, 10)
    assert _gauge(flood_server, "prroom_recovery_sessions") == 20
    # and the server still serves
    client = connect(flood_server)
    room = next(_rooms)
    client.join(room, "after-flood")
    assert client.say(room, "after-flood", "still here")["ok"]
