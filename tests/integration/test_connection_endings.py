"""However a WebSocket connection ends, the server ends it the same way, whether a silent
connection was held by its own greenlet or by the event loop (prroom/transport/idle.py).

A silent connection on the loop has no stack left to unwind: what python-engineio's read
loop, gevent-websocket and pywsgi would have done at its end is done again by prroom.  Each
way a connection can end -- the client's close frame or Engine.IO close, a reset, a
half-close, the server disconnecting it (an operator, a malformed packet, a ping timeout)
-- is checked here on both holders, for what users and operators see: the room is told the
user left, the server's counts come back, the socket's descriptor is closed, the access
log has the session's one line, and the server closes its side.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import Callable, Dict, Optional

import pytest
import requests

from prroom.core.identity import issue_token
from tests.support import metrics, servers
from tests.support.clients import Clients, RoomClient
from tests.support.metrics import value
from tests.support.raw import RawSocket
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SECRET = servers.TOKEN_SECRET
ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"
METRICS_TOKEN = "scrape"
ENV = {"PRROOM_AUTH_MODE": "token", "PRROOM_SECRET_KEY": SECRET,
       "PRROOM_ADMIN_TOKEN": ADMIN_TOKEN, "PRROOM_PRESENCE_GRACE": "0",
       # a session left without a namespace (and the client ignoring that) closes soon
       "PRROOM_CONNECT_TIMEOUT": "2",
       "PRROOM_METRICS_PATH": "/metrics", "PRROOM_METRICS_TOKEN": METRICS_TOKEN}
STALLED = 20  # more than the loop keeps parked readers for
HOLDERS = {"loop": {}, "greenlet": {"PRROOM_IDLE_CONNECTIONS": "greenlet"}}

ending_server = servers.server_fixture(
    ENV, variants=HOLDERS,
    doc="Token mode, an operator endpoint, metrics, no presence grace; silent connections "
        "held by the loop or by their greenlet.")
short_ping_server = servers.server_fixture(
    {**ENV, "PRROOM_PING_INTERVAL": "1", "PRROOM_PING_TIMEOUT": "1"}, variants=HOLDERS,
    doc="As ending_server, with pings every second: a silent client times out fast.")


def auth(username: str) -> dict:
    return {"token": issue_token(SECRET, username)}


def holds_socket_to(pid: int, client_port: int) -> bool:
    """Whether process ``pid`` still has a descriptor for its TCP connection with the
    loopback client port ``client_port``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == client_port and fields[9] in inodes:
                return True
    return False


def client_port(client: RawSocket) -> int:
    raw = client.ws.sock
    assert raw is not None
    port: int = raw.getsockname()[1]
    return port


def upgrade_lines(server: servers.ServerProcess) -> int:
    """Access log lines of WebSocket sessions (written when a session ends)."""
    return sum('" 101 ' in line for line in server.log().splitlines())


def settled(server: servers.ServerProcess) -> Dict[str, float]:
    """The connection gauges once every open connection is silent (and so, on the loop,
    held by it: a ping's answer wakes a connection only for a moment)."""
    def read() -> Optional[Dict[str, float]]:
        samples = metrics.scrape(server, METRICS_TOKEN)
        connected = value(samples, "prroom_connected_sockets")
        held = value(samples, "prroom_loop_held_connections")
        on_loop = "PRROOM_IDLE_CONNECTIONS" not in server.env
        return {"connected": connected, "held": held} if held == (
            connected if on_loop else 0) else None

    gauges = wait_until(read, 8)
    assert gauges is not None, "silent connections are not where the setting puts them"
    return gauges


# -- the ways a connection ends ----------------------------------------------------------

def close_frame(victim: RawSocket, server: servers.ServerProcess, name: str) -> None:
    victim.ws.close(timeout=2)  # sends the close frame and waits for the server's


def engineio_close(victim: RawSocket, server: servers.ServerProcess, name: str) -> None:
    victim.send("1")


def reset(victim: RawSocket, server: servers.ServerProcess, name: str) -> None:
    raw = victim.ws.sock
    assert raw is not None
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()  # an RST, no FIN


def half_close(victim: RawSocket, server: servers.ServerProcess, name: str) -> None:
    raw = victim.ws.sock
    assert raw is not None
    raw.shutdown(socket.SHUT_WR)  # a FIN without a close frame; still reading


def operator_disconnect(victim: RawSocket, server: servers.ServerProcess, name: str) -> None:
    reply = requests.post(f"{server.url}/admin/disconnect-identity", json={"username": name},
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
    assert reply.status_code == 200 and reply.json()["closed"] == 1, reply.text


def namespace_left(victim: RawSocket, server: servers.ServerProcess, name: str) -> None:
    victim.send("41")  # the Socket.IO DISCONNECT, and then silence: no Engine.IO close


def malformed_packet(victim: RawSocket, server: servers.ServerProcess, name: str) -> None:
    victim.send('42["join-pr-room",{')  # does not decode: the server closes the connection


Ending = Callable[[RawSocket, servers.ServerProcess, str], None]
ENDINGS: Dict[str, Ending] = {
    "close-frame": close_frame, "engineio-close": engineio_close, "reset": reset,
    "half-close": half_close, "operator-disconnect": operator_disconnect,
    "namespace-left": namespace_left, "malformed-packet": malformed_packet}
#: The endings after which the victim can still read: the server must close its side.
SERVER_CLOSES = {"engineio-close", "half-close", "operator-disconnect", "namespace-left",
                 "malformed-packet"}


def server_side_closed(victim: RawSocket, timeout: float = 5.0) -> bool:
    """Whether the server closes the victim's TCP connection within ``timeout`` (a FIN, or a
    reset if the client's answer to its close frame came after it), whatever it sends first
    (its close frame).  The client neither answers nor closes meanwhile."""
    raw = victim.ws.sock
    if raw is None:  # websocket-client closed it on the server's close frame
        return True
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            raw.settimeout(max(0.01, deadline - time.monotonic()))
            if raw.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        pass
    return False


def watch(server: servers.ServerProcess, connect: Clients, room: int) -> RoomClient:
    watcher = connect(server, auth=auth("watcher"), presence=True)
    watcher.join(room, "watcher")
    return watcher


def silent_member(server: servers.ServerProcess, room: int, name: str,
                  baseline: Dict[str, float], answer_pings: bool = True) -> RawSocket:
    """A raw client in ``room``, silent and (on the loop) detached from its greenlet."""
    victim = RawSocket(server, answer_pings=answer_pings)
    victim.connect_namespace(auth=auth(name))
    victim.join(room, name)
    assert settled(server)["connected"] == baseline["connected"] + 1
    return victim


def assert_ended_cleanly(server: servers.ServerProcess, watcher: RoomClient, room: int,
                         name: str, baseline: Dict[str, float], port: int, lines: int) -> None:
    """What everybody sees once the connection of ``name`` is gone."""
    while True:  # the room is told, after the presence events of the joins
        event, payload = watcher.next_event(timeout=8)
        if event == "pr-room-user-left":
            assert payload == {"pullRequestId": room, "username": name}
            break
        assert event in ("pr-room-members", "pr-room-user-joined"), (event, payload)
    assert settled(server) == baseline
    pid = server.worker_pid()
    assert wait_until(lambda: not holds_socket_to(pid, port), 8), \
        "the worker keeps the connection's socket open"
    assert wait_until(lambda: upgrade_lines(server) == lines + 1, 8), \
        "the session's access log line is missing or doubled"
    watcher.say(room, "watcher", "still here")  # the room goes on
    assert watcher.expect("pr-room-message")["message"] == "still here"


@pytest.mark.parametrize("how", list(ENDINGS))
def test_a_silent_connection_ends_the_same_on_either_holder(
        ending_server: servers.ServerProcess, connect: Clients, pr_id: int, how: str) -> None:
    watcher = watch(ending_server, connect, pr_id)
    baseline = settled(ending_server)
    lines = upgrade_lines(ending_server)
    name = f"victim-{how}"
    victim = silent_member(ending_server, pr_id, name, baseline)
    port = client_port(victim)
    ENDINGS[how](victim, ending_server, name)
    if how in SERVER_CLOSES:  # and it does not wait for the client to close first
        assert victim.closed_within(5)
        assert server_side_closed(victim), "the server left its side open"
    assert_ended_cleanly(ending_server, watcher, pr_id, name, baseline, port, lines)


def test_a_silent_client_that_stops_answering_pings_ends_the_same_on_either_holder(
        short_ping_server: servers.ServerProcess, connect: Clients, pr_id: int) -> None:
    watcher = watch(short_ping_server, connect, pr_id)
    baseline = settled(short_ping_server)
    lines = upgrade_lines(short_ping_server)
    victim = RawSocket(short_ping_server, answer_pings=False)
    victim.connect_namespace(auth=auth("victim-ping"))
    victim.join(pr_id, "victim-ping")
    port = client_port(victim)
    assert victim.closed_within(6)  # ping interval + timeout, then the close frame
    assert_ended_cleanly(short_ping_server, watcher, pr_id, "victim-ping", baseline, port,
                         lines)


def test_clients_stalled_mid_frame_are_cut_at_their_ping_timeout_and_others_chat_meanwhile(
        short_ping_server: servers.ServerProcess, connect: Clients, pr_id: int) -> None:
    # each stalled client holds a reader greenlet (on the loop, a shared one) until then
    watcher = connect(short_ping_server, auth=auth("watcher"))
    watcher.join(pr_id, "watcher")
    baseline = settled(short_ping_server)
    stalled = []
    for index in range(STALLED):
        client = RawSocket(short_ping_server)
        client.connect_namespace(auth=auth(f"stalled-{index}"))
        client.join(pr_id, f"stalled-{index}")
        stalled.append(client)
    ports = [client_port(client) for client in stalled]
    for client in stalled:
        raw = client.ws.sock
        assert raw is not None
        raw.sendall(b"\x81\xfe")  # a masked text frame's first bytes; its length never comes
    watcher.say(pr_id, "watcher", "anyone?")
    assert watcher.expect("pr-room-message")["message"] == "anyone?"
    for client in stalled:
        assert client.closed_within(8)  # ping interval + timeout (+ the linger on the loop)
    assert settled(short_ping_server) == baseline
    pid = short_ping_server.worker_pid()
    assert wait_until(lambda: not any(holds_socket_to(pid, port) for port in ports), 8), \
        "stalled sockets stay open"
