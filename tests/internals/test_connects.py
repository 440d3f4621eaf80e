"""Tripwires and behaviour of prroom/internals/connects.py: the Socket.IO CONNECT as the
protocol has it, on a bare python-socketio server (each test checks python-socketio's own
behaviour too, so a release that fixes or changes it shows here first)."""
from __future__ import annotations

import inspect
import json
from typing import Any, List, Tuple

import pytest
import socketio

from prroom.internals import connects
from tests.support.waiting import wait_until
from tests.support.wsgi import WsgiPolling, connected, polling_server


def host_with_greeting(**options: Any) -> Tuple[socketio.Server, WsgiPolling]:
    server, client = polling_server(**options)

    def connect(sid: str, environ: dict, auth: Any = None) -> None:
        server.emit("greeting", {"hello": sid}, to=sid, namespace="/")

    server.on("connect", connect, namespace="/")
    return server, client


@pytest.mark.parametrize("fixed", [False, True])
def test_the_connect_reply_goes_out_before_what_the_handler_emits(fixed: bool) -> None:
    server, client = host_with_greeting()
    if fixed:
        assert connects.fix_connects(server) is True
    sid, _ = client.handshake()
    client.post(sid, "40")
    first, second = client.packets(sid)
    if fixed:
        assert first.startswith("40{") and second.startswith('42["greeting"')
    else:  # python-socketio's order, which the fix exists for
        assert first.startswith('42["greeting"') and second.startswith("40{")


@pytest.mark.parametrize("fixed,reply", [(False, '44/random,"Unable to connect"'),
                                         (True, '44/random,{"message":"Invalid namespace"}')])
def test_unknown_namespaces_are_refused_as_node_does(fixed: bool, reply: str) -> None:
    server, client = host_with_greeting()
    if fixed:
        connects.fix_connects(server)
    sid, _ = client.handshake()
    client.post(sid, "40/random,")
    assert client.packets(sid) == [reply]
    client.post(sid, "40")  # the known one still connects
    assert any(packet.startswith("40{") for packet in client.packets(sid))


def test_sessions_that_never_connect_are_closed_after_the_timeout() -> None:
    server, client = host_with_greeting()
    assert connects.fix_connects(server, connect_timeout=0.2) is True
    idle, _ = client.handshake()
    connected_sid = connected(client)
    # the sweep runs in its own thread: poll its effect
    wait_until(lambda: idle not in server.eio.sockets or server.eio.sockets[idle].closed,
               timeout=5, interval=0.02)
    assert client.get(idle)[0].startswith("400")
    assert not server.eio.sockets[connected_sid].closed


@pytest.mark.parametrize("left_by", ["client", "server"])
def test_sessions_that_left_their_last_namespace_are_closed_after_the_timeout(
        left_by: str) -> None:
    server, client = host_with_greeting()
    assert connects.fix_connects(server, connect_timeout=0.2) is True
    left, staying = connected(client), connected(client)
    if left_by == "client":
        client.post(left, "41")
    else:  # an operator's disconnect that the client ignores
        server.disconnect(server.manager.sid_from_eio_sid(left, "/"), namespace="/")
    assert wait_until(lambda: left not in server.eio.sockets or server.eio.sockets[left].closed,
                      timeout=5, interval=0.02)
    assert not server.eio.sockets[staying].closed


def test_the_connect_reply_carries_what_reply_extra_adds() -> None:
    # connection state recovery's pid, next to the sid python-socketio put there
    server, client = host_with_greeting()
    seen: List[Tuple[str, str]] = []

    def extra(namespace: str, sid: str) -> dict:
        seen.append((namespace, sid))
        return {"pid": "p-" + sid}

    assert connects.fix_connects(server, reply_extra=extra) is True
    sid, _ = client.handshake()
    client.post(sid, "40")
    first, second = client.packets(sid)
    [(namespace, socket_sid)] = seen
    assert namespace == "/" and json.loads(first[2:]) == {"sid": socket_sid,
                                                          "pid": "p-" + socket_sid}
    assert second.startswith('42["greeting"')


def test_python_socketio_still_has_what_fix_connects_wraps() -> None:
    server = socketio.Server(async_mode="threading")
    assert callable(server._handle_connect)
    assert server.namespaces == ["/"] and server.namespace_handlers == {}
    handle = inspect.getsource(socketio.Server._handle_eio_message)
    assert "self._handle_connect(eio_sid, pkt.namespace, pkt.data)" in handle
    connect = inspect.getsource(socketio.Server._handle_connect)
    assert "if namespace in self.handlers or namespace in self.namespace_handlers \\" in connect
    assert "or self.namespaces == '*' or namespace in self.namespaces:" in connect
    assert {"connect", "disconnect", "message"} <= set(server.eio.handlers)
