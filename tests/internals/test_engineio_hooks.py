"""prroom.internals.engineio_hooks: python-engineio brought to the protocol, and what it needs.

Each fix is checked twice, on a real ``engineio.Server`` driven through its WSGI entry point:
once without prroom (python-engineio still behaves as the fix assumes: if a release fixes or
changes it, the test says so), once with it.
"""
from __future__ import annotations

import inspect
import json
import threading
import time
from typing import Any, Dict, Tuple

import engineio
import pytest
import socketio
from engineio import packet

from prroom.internals import engineio_hooks
from tests.support.wsgi import Response, WsgiPolling


def make_server(prroom: bool, **options: Any) -> socketio.Server:
    server = socketio.Server(async_mode="threading", **options)
    if prroom:
        assert engineio_hooks.install(server) is True
    return server


def request(server: socketio.Server, method: str = "GET", query: str = "EIO=4&transport=polling",
            body: bytes = b"") -> Response:
    return WsgiPolling(server).request(method, query, body)


def handshake(server: socketio.Server) -> Tuple[str, dict]:
    return WsgiPolling(server).handshake()


def session_query(sid: str) -> str:
    return WsgiPolling.query(sid)


def in_thread(server: socketio.Server, sid: str) -> Tuple[threading.Thread, Dict[str, Response]]:
    return WsgiPolling(server).get_in_thread(sid)


def wait_for_pending_poll(server: socketio.Server, sid: str) -> None:
    """Until the poll started by :func:`in_thread` waits in the session's queue."""
    sock = server.eio.sockets[sid]
    deadline = time.monotonic() + 5
    while not sock.__dict__.get("_prroom_polling") and time.monotonic() < deadline:
        time.sleep(0.005)  # another thread's progress: nothing to await but its flag


# -- the handshake --------------------------------------------------------------------------

@pytest.mark.parametrize("interval,expected", [(0.3, 300), (1.5, 1500), (25, 25000)])
def test_handshake_announces_the_exact_ping_interval(interval: float, expected: int) -> None:
    plain = make_server(False, ping_interval=interval)
    # python-engineio truncates to whole seconds; if a release stops doing so, the fix can go
    assert handshake(plain)[1]["pingInterval"] == int(interval) * 1000
    assert engineio_hooks.announced_ping_interval(plain.eio) == int(interval) * 1000
    fixed = make_server(True, ping_interval=interval)
    assert handshake(fixed)[1]["pingInterval"] == expected


def test_grace_period_is_announced_with_the_interval() -> None:
    fixed = make_server(True, ping_interval=(0.5, 0.25))
    assert handshake(fixed)[1]["pingInterval"] == 750


def test_handshake_without_transport_is_refused() -> None:
    status, body = request(make_server(False), query="EIO=4")
    assert status.startswith("200") and body.startswith("0")  # python-engineio: a session
    for query in ("EIO=4", "EIO=4&transport=", "EIO=4&xtransport=polling"):
        status, body = request(make_server(True), query=query)
        assert status.startswith("400"), query
        assert json.loads(body) == {"code": 0, "message": "Transport unknown"}


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
def test_unsupported_methods_get_400(method: str) -> None:
    assert request(make_server(False), method)[0].startswith("405")
    status, body = request(make_server(True), method)
    assert status.startswith("400")
    assert json.loads(body) == {"code": 2, "message": "Bad handshake method"}


def test_other_handshakes_are_left_to_python_engineio() -> None:
    server = make_server(True)
    assert request(server, "OPTIONS")[0].startswith("200")
    assert request(server, "POST")[0].startswith("400")  # no sid
    assert request(server, query="transport=polling")[0].startswith("400")  # no EIO
    assert request(server, query="EIO=4&transport=abc")[0].startswith("400")


# -- long-polling -----------------------------------------------------------------------------

def test_malformed_payload_closes_the_session_with_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    plain = make_server(False)
    sid, _ = handshake(plain)
    assert request(plain, "POST", session_query(sid), b"abc")[0].startswith("200")
    assert sid in plain.eio.sockets  # python-engineio: kept, and a traceback logged

    fixed = make_server(True)
    sid, _ = handshake(fixed)
    caplog.clear()
    with caplog.at_level("INFO", logger="prroom"):
        status, _ = request(fixed, "POST", session_query(sid), b"abc")
    assert status.startswith("400")
    lines = [r.getMessage() for r in caplog.records if r.name == "prroom"]
    assert lines == [f"closing eio_sid={sid}: malformed long-polling payload (ValueError)"]
    assert not any(r.exc_info for r in caplog.records)
    assert request(fixed, query=session_query(sid))[0].startswith("400")


def test_a_pending_poll_of_a_client_that_closes_gets_a_noop() -> None:
    server = make_server(True)
    sid, _ = handshake(server)
    thread, result = in_thread(server, sid)
    wait_for_pending_poll(server, sid)
    assert request(server, "POST", session_query(sid), b"1")[0].startswith("200")
    thread.join(5)
    assert result["poll"] == ("200 OK", "6")
    assert request(server, query=session_query(sid))[0].startswith("400")


@pytest.mark.parametrize("prroom,expected", [(False, ""), (True, "1")])
def test_a_pending_poll_of_a_session_the_server_closes(prroom: bool, expected: str) -> None:
    server = make_server(prroom)
    sid, _ = handshake(server)
    thread, result = in_thread(server, sid)
    if prroom:
        wait_for_pending_poll(server, sid)
    else:
        time.sleep(0.2)  # no flag to wait for without prroom: give the poll time to start
    server.eio.sockets[sid].close(wait=False, abort=True)  # as prroom's close_transport
    thread.join(5)
    assert result["poll"] == ("200 OK", expected)  # "": a parse error for engine.io-client


def test_a_second_poll_closes_the_session() -> None:
    server = make_server(True)
    sid, _ = handshake(server)
    thread, result = in_thread(server, sid)
    wait_for_pending_poll(server, sid)
    assert request(server, query=session_query(sid))[0].startswith("400")
    thread.join(5)
    assert result["poll"] == ("200 OK", "1")
    assert request(server, query=session_query(sid))[0].startswith("400")


@pytest.mark.parametrize("prroom,expected", [(False, "200"), (True, "400")])
def test_a_poll_past_the_ping_timeout(prroom: bool, expected: str) -> None:
    server = make_server(prroom, ping_interval=0.2, ping_timeout=0.2)
    sid, _ = handshake(server)
    sock = server.eio.sockets[sid]
    sock.last_ping = time.time() - 1  # a ping went out a second ago and no pong came back
    sock.queue.put(packet.Packet(packet.PING))
    assert request(server, query=session_query(sid))[0].startswith(expected)


def test_servers_prroom_is_not_installed_on_keep_python_engineios_behaviour() -> None:
    make_server(True)  # patches the Socket class for the whole process
    plain = make_server(False)
    sid, _ = handshake(plain)
    assert request(plain, "POST", session_query(sid), b"abc")[0].startswith("200")


# -- what the fixes rely on ---------------------------------------------------------------------

def test_python_engineio_still_has_what_the_fixes_wrap() -> None:
    cls = engineio.socket.Socket
    for name in ("handle_get_request", "handle_post_request", "close", "check_ping_timeout"):
        assert callable(getattr(cls, name)), name
    assert cls.upgrade_protocols == ["websocket"]
    assert set(inspect.signature(cls.close).parameters) >= {"wait", "abort", "reason"}
    source = inspect.getsource(engineio.server.Server.handle_request)
    # a failed poll or post is a 400 and the end of the session
    assert "except exceptions.EngineIOError:" in source and "self.disconnect(sid)" in source
    # the OPEN packet is queued, then the connect handler runs, then the poll or websocket
    connect = inspect.getsource(engineio.server.Server._handle_connect)
    assert connect.index("s.send(pkt)") < connect.index("self._trigger_event('connect'")
    assert engineio.Server.reason.CLIENT_DISCONNECT == "client disconnect"


def test_installing_twice_or_on_something_else_is_harmless() -> None:
    server = make_server(True)
    wrapped = server.eio.handle_request
    assert engineio_hooks.install(server) is True
    assert server.eio.handle_request is wrapped
    assert engineio_hooks.install(object()) is False
