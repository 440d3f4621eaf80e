"""prroom as a guest in a host's Socket.IO server, checked against the protocols (issue #16).

The host app (``tests/integration/guest_app.py``) is what the official socket.io-protocol
suite expects of a server: ``auth`` emitted on connect, ``message`` echoed as
``message-back`` (binary included), ``message-with-ack`` acknowledged, on ``/`` and on
``/custom``; prroom is added to it and the whole is served by gunicorn exactly as in
production.  Every test speaks the raw protocols over real sockets -- HTTP long-polling with
``requests``, WebSocket frames with ``websocket-client`` -- or runs the npm socket.io-client,
and asserts what such a client sees.  The host's pings are 1.5 s apart with a 1 s timeout
(sub-second precision, and short enough for the heartbeat tests).
"""
from __future__ import annotations

import json
import re
import threading
import time
from typing import Callable, Dict, Iterator, List

import pytest
import requests
import websocket

from prroom.transport.worker import session_tag
from tests.support import node, servers
from tests.support.raw import (
    Closed,
    PollingSession,
    RawWebSocket,
    engineio_url,
    socketio_event,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PING_INTERVAL, PING_TIMEOUT = 1.5, 1.0
# the server's ping timeout check runs at most a second late; the machine is shared
SLACK = 3.0
PLACEHOLDERS = '{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}'
NAMESPACES = ["/", "/custom"]


host = servers.server_fixture(
    {"HOST_PING_INTERVAL": str(PING_INTERVAL), "HOST_PING_TIMEOUT": str(PING_TIMEOUT)},
    app="tests.integration.guest_app:app",
    doc="The protocol suites' host app, with prroom added, under gunicorn.")


@pytest.fixture
def ws(host: servers.ServerProcess) -> Iterator[Callable[..., RawWebSocket]]:
    """Factory of raw WebSocket sessions to the host, closed after the test."""
    opened: List[RawWebSocket] = []

    def open_socket(**kwargs) -> RawWebSocket:
        raw = RawWebSocket(host.url, **kwargs)
        opened.append(raw)
        return raw

    yield open_socket
    for raw in opened:
        raw.close()


def prefix(namespace: str) -> str:
    """What a Socket.IO packet for ``namespace`` carries after its type (``/custom,``)."""
    return "" if namespace == "/" else namespace + ","


def connected(ws: Callable[..., RawWebSocket], namespace: str = "/") -> RawWebSocket:
    """A WebSocket session connected to ``namespace``, past the host's ``auth`` event."""
    raw = ws()
    assert raw.connect(namespace).startswith("0" + prefix(namespace) + "{")
    assert raw.recv_socketio() == "2" + prefix(namespace) + '["auth",{}]'
    return raw


def poll_until(session: PollingSession, count: int) -> List[str]:
    """Packets from as many polls as it takes to get ``count`` of them (pings skipped)."""
    packets: List[str] = []
    while len(packets) < count:
        packets += [packet for packet in session.packets() if packet != "2"]
    return packets


def log_lines(host: servers.ServerProcess, text: str) -> List[str]:
    """Lines of the server's error log (not its access log) that contain ``text``."""
    return [line for line in host.log().splitlines()
            if text in line and not re.search(r'"(GET|POST|PUT|OPTIONS) ', line)]


# -- Engine.IO: the handshake ------------------------------------------------------------------

def test_polling_handshake_announces_the_hosts_exact_settings(host):
    response = requests.get(engineio_url(host.url), timeout=5)
    assert response.status_code == 200 and response.text.startswith("0")
    opening = json.loads(response.text[1:])
    assert set(opening) == {"sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"}
    assert opening["upgrades"] == ["websocket"]
    # 1.5 s, not python-engineio's whole seconds (1000): a client times out on time
    assert (opening["pingInterval"], opening["pingTimeout"]) == (1500, 1000)
    # the host left python-engineio's 1 MB default: prroom's frame limit applies
    assert opening["maxPayload"] == 65536


def test_websocket_handshake_opens_a_session_without_upgrades(ws):
    raw = ws()
    assert raw.handshake["upgrades"] == [] and raw.handshake["pingInterval"] == 1500


@pytest.mark.parametrize("query", ["transport=polling", "EIO=abc&transport=polling",
                                   "EIO=3&transport=polling", "EIO=4", "EIO=4&transport=abc",
                                   "EIO=4&transport="])
def test_a_handshake_without_a_valid_version_or_transport_is_refused(host, query):
    assert requests.get(f"{host.url}/socket.io/?{query}", timeout=5).status_code == 400


@pytest.mark.parametrize("query", ["transport=websocket", "EIO=abc&transport=websocket",
                                   "EIO=4"])
def test_a_websocket_handshake_without_a_valid_version_or_transport_is_refused(host, query):
    url = f"ws://127.0.0.1:{host.port}/socket.io/?{query}"
    try:
        conn = websocket.create_connection(url, timeout=5)
    except websocket.WebSocketBadStatusException as refused:  # what Node's engine.io does
        assert refused.status_code == 400
        return
    # gevent-websocket completes the upgrade before the application sees the request
    # (docs/protocol.md, "Conformance"): no session, a close frame at once
    try:
        assert conn.recv_data(control_frame=True)[0] == websocket.ABNF.OPCODE_CLOSE
    finally:
        conn.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_a_handshake_is_get_only(host, method):
    response = requests.request(method, engineio_url(host.url), timeout=5)
    assert response.status_code == 400


# -- Engine.IO: heartbeat -----------------------------------------------------------------------

def test_polling_pings_and_pongs_keep_a_session(host):
    session = PollingSession(host.url)
    for _ in range(3):
        assert session.packets(timeout=PING_INTERVAL + SLACK) == ["2"]
        assert session.post("3").status_code == 200


def test_a_polling_session_past_its_ping_timeout_is_gone(host):
    session = PollingSession(host.url)
    # no poll, so no pong: the session must be over once the ping timeout has passed
    time.sleep(PING_INTERVAL + PING_TIMEOUT + 0.2)
    assert session.get().status_code == 400


def test_websocket_pings_and_pongs_keep_a_session(ws):
    raw = ws(answer_pings=False)
    for _ in range(3):
        assert raw.recv(PING_INTERVAL + SLACK) == "2"
        raw.send("3")


@pytest.mark.stress  # asserts the deadline, within a bound
def test_a_websocket_that_ignores_pings_is_closed(ws):
    raw = ws(answer_pings=False)
    assert raw.recv(PING_INTERVAL + SLACK) == "2"
    started = time.monotonic()
    with pytest.raises(Closed):
        while True:
            raw.recv(PING_TIMEOUT + SLACK)
    assert time.monotonic() - started < PING_TIMEOUT + SLACK


# -- Engine.IO: closing and upgrading -------------------------------------------------------------

def in_thread(function: Callable[[], requests.Response]) -> Callable[[], requests.Response]:
    """Run ``function`` in a thread now; the returned callable joins it and gives its result."""
    result: Dict[str, requests.Response] = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", function()))
    thread.start()

    def join() -> requests.Response:
        thread.join(10)
        return result["value"]
    return join


# The server answers a poll only when it has packets, so there is no reply to wait for that
# says a poll is pending: the tests give it a moment to arrive first.
POLL_ARRIVES = 0.3


def test_a_client_closing_over_polling_ends_its_pending_poll_with_a_noop(host):
    session = PollingSession(host.url)
    pending = in_thread(session.get)
    time.sleep(POLL_ARRIVES)
    assert session.post("1").status_code == 200
    poll = pending()
    assert (poll.status_code, poll.text) == (200, "6")
    assert session.get().status_code == 400


def test_a_session_the_server_closes_ends_its_pending_poll_with_a_close_packet(host):
    session = PollingSession(host.url)
    session.post("40")
    assert poll_until(session, 2)[0].startswith("40{")
    pending = in_thread(session.get)
    time.sleep(POLL_ARRIVES)
    session.post("4abc")  # not a Socket.IO packet: the server drops the connection
    poll = pending()
    assert (poll.status_code, poll.text) == (200, "1")  # not "": a parse error for clients
    assert session.get().status_code == 400


def test_a_second_poll_while_one_is_pending_closes_the_session(host):
    session = PollingSession(host.url)
    pending = in_thread(session.get)
    time.sleep(POLL_ARRIVES)
    assert session.get().status_code == 400
    poll = pending()
    assert (poll.status_code, poll.text) == (200, "1")
    assert session.get().status_code == 400


def test_a_client_closing_over_websocket_is_disconnected(ws):
    raw = ws()
    raw.send("1")
    assert raw.closed_within(5)


def test_a_polling_session_upgrades_to_websocket_and_polling_ends(host):
    session = PollingSession(host.url)
    pending = in_thread(session.get)
    time.sleep(POLL_ARRIVES)
    raw = RawWebSocket(host.url, sid=session.sid, handshake=False)
    try:
        raw.send("2probe")
        assert raw.recv() == "3probe"
        poll = pending()
        assert (poll.status_code, poll.text) == (200, "6")  # the poll ends cleanly
        raw.send("5")
        assert session.get().status_code == 400  # HTTP is over for this session
        assert raw.connect().startswith("0{")
        assert raw.recv_socketio() == '2["auth",{}]'
    finally:
        raw.close()


def test_a_second_websocket_for_an_upgraded_session_is_refused(host):
    session = PollingSession(host.url)
    first = RawWebSocket(host.url, sid=session.sid, handshake=False)
    try:
        first.send("2probe")
        assert first.recv() == "3probe"
        first.send("5")
        assert first.connect().startswith("0{")  # the upgrade is complete
        second = RawWebSocket(host.url, sid=session.sid, handshake=False)
        assert second.closed_within(5)
    finally:
        first.close()


# -- malformed input ----------------------------------------------------------------------------

def test_a_malformed_polling_payload_closes_the_session_with_one_log_line(host):
    session = PollingSession(host.url)
    assert session.post("abc").status_code == 400
    assert session.get().status_code == 400
    # python-engineio's own line for the poll after ("Invalid session <sid>") is its
    # once-per-server error, not something the payload caused
    # (the log names a session by its tag, never by its id: a bearer secret)
    lines = [line for line in log_lines(host, session_tag(session.sid))
             if "Invalid session" not in line]
    assert len(lines) == 1 and "malformed long-polling payload" in lines[0], lines
    assert "Traceback" not in host.log()


@pytest.mark.parametrize("frame", ["4abc", "42{}", '42abc["message-with-ack",1]', "40{"])
def test_invalid_socketio_packets_close_the_connection(ws, frame):
    raw = connected(ws)
    raw.send(frame)
    assert raw.closed_within(5)


def test_an_invalid_packet_instead_of_a_connect_closes_the_connection(ws):
    raw = ws()
    raw.send("4abc")  # the socket.io-protocol suite's "invalid handshake"
    assert raw.closed_within(5)


# -- Socket.IO: connecting ------------------------------------------------------------------------

@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("auth", [None, {"token": "123"}])
def test_the_connect_reply_comes_before_what_the_connect_handler_emits(ws, namespace, auth):
    raw = ws()
    reply = raw.connect(namespace, auth)
    assert reply.startswith("0" + prefix(namespace) + "{")
    assert set(json.loads(reply[len("0" + prefix(namespace)):])) == {"sid"}
    expected = json.dumps(auth or {}, separators=(",", ":"))
    assert raw.recv_socketio() == "2" + prefix(namespace) + '["auth",' + expected + "]"


def test_the_connect_reply_comes_first_over_polling_too(host):
    session = PollingSession(host.url)
    session.post("40/custom,")
    packets = poll_until(session, 2)
    assert packets[0].startswith("40/custom,{")
    assert packets[1] == '42/custom,["auth",{}]'


@pytest.mark.parametrize("frame,reply", [
    ("40/random", '4/random,{"message":"Invalid namespace"}'),
    ('40/random,{"token":"1"}', '4/random,{"message":"Invalid namespace"}'),
])
def test_an_unknown_namespace_is_refused_as_socketio_clients_expect(ws, frame, reply):
    raw = ws()
    raw.send(frame)
    assert raw.recv_socketio() == reply
    assert raw.connect().startswith("0{")  # the session itself stays usable


def test_disconnecting_from_every_namespace_keeps_the_engineio_session(ws):
    raw = connected(ws)
    raw.answer_pings = False
    raw.send("41")
    assert raw.recv(PING_INTERVAL + SLACK) == "2"


def test_namespaces_connect_and_disconnect_independently(ws):
    raw = connected(ws)
    assert raw.connect("/custom").startswith("0/custom,{")
    assert raw.recv_socketio() == '2/custom,["auth",{}]'
    raw.send("41/custom,")
    raw.send('42["message","message to main namespace"]')
    assert raw.recv_socketio() == '2["message-back","message to main namespace"]'


# -- Socket.IO: the host's events, beside prroom's ----------------------------------------------

@pytest.mark.parametrize("namespace", NAMESPACES)
def test_the_hosts_message_event_reaches_the_host(ws, namespace):
    raw = connected(ws, namespace)
    raw.send("42" + prefix(namespace) + '["message",1,"2",{"3":[true]}]')
    assert raw.recv_socketio() == "2" + prefix(namespace) + '["message-back",1,"2",{"3":[true]}]'


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_the_hosts_binary_event_round_trips(ws, namespace):
    raw = connected(ws, namespace)
    raw.send("452-" + prefix(namespace) + '["message",' + PLACEHOLDERS + "]")
    raw.send(bytes([1, 2, 3]))
    raw.send(bytes([4, 5, 6]))
    assert raw.recv_socketio() == "52-" + prefix(namespace) + '["message-back",' + \
        PLACEHOLDERS + "]"
    assert (raw.recv_socketio(), raw.recv_socketio()) == (bytes([1, 2, 3]), bytes([4, 5, 6]))


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_the_hosts_acks_come_back(ws, namespace):
    raw = connected(ws, namespace)
    raw.send("42" + prefix(namespace) + '456["message-with-ack",1,"2",{"3":[false]}]')
    assert raw.recv_socketio() == "3" + prefix(namespace) + '456[1,"2",{"3":[false]}]'


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_the_hosts_binary_acks_come_back(ws, namespace):
    raw = connected(ws, namespace)
    raw.send("452-" + prefix(namespace) + '789["message-with-ack",' + PLACEHOLDERS + "]")
    raw.send(bytes([1, 2, 3]))
    raw.send(bytes([4, 5, 6]))
    assert raw.recv_socketio() == "62-" + prefix(namespace) + "789[" + PLACEHOLDERS + "]"
    assert (raw.recv_socketio(), raw.recv_socketio()) == (bytes([1, 2, 3]), bytes([4, 5, 6]))


def test_ten_attachments_are_fine_and_eleven_close_the_connection(ws):
    raw = connected(ws)
    placeholders = ",".join('{"_placeholder":true,"num":%d}' % n for n in range(10))
    raw.send('4510-["message",' + placeholders + "]")
    for number in range(10):
        raw.send(bytes([number]))
    assert raw.recv_socketio().startswith('510-["message-back"')
    assert [raw.recv_socketio() for _ in range(10)] == [bytes([n]) for n in range(10)]
    raw.send('4511-["message",' + placeholders + "]")  # a claim, before any attachment
    assert raw.closed_within(5)


def test_prroom_events_work_beside_the_hosts_on_one_connection(ws):
    raw = connected(ws)
    raw.send('421["join-pr-room",{"pullRequestId":16,"username":"guest"}]')
    raw.send('42["message","after the join"]')
    packets = [raw.recv_socketio() for _ in range(3)]
    members = next(p for p in packets if p.startswith('2["pr-room-members"'))
    assert socketio_event(members)[1] == {"pullRequestId": 16, "members": ["guest"]}
    ack = next(p for p in packets if p.startswith("31["))
    assert json.loads(ack[2:])[0]["ok"] is True
    assert '2["message-back","after the join"]' in packets


def test_prroom_refuses_a_binary_payload_and_keeps_the_connection(ws):
    raw = connected(ws)
    join = '["join-pr-room",{"pullRequestId":16,"username":{"_placeholder":true,"num":0}}]'
    raw.send("451-7" + join)
    raw.send(b"guest")
    ack = raw.recv_socketio()
    assert ack.startswith("37[")
    assert json.loads(ack[2:])[0]["error"]["code"] == "binary-payload"
    raw.send("451-" + join)  # no ack asked for: the refusal comes as pr-room-error
    raw.send(b"guest")
    error = socketio_event(raw.recv_socketio())
    assert error[0] == "pr-room-error" and error[1]["error"]["code"] == "binary-payload"
    assert error[1]["event"] == "join-pr-room"
    raw.send('428["join-pr-room",{"pullRequestId":16,"username":"guest"}]')
    packets = [raw.recv_socketio() for _ in range(2)]
    assert any(p.startswith("38[") and json.loads(p[2:])[0]["ok"] for p in packets), packets


def test_prroom_names_its_own_reserved_events_on_its_namespace(ws):
    raw = connected(ws)
    raw.send('42["disconnect"]')
    error = socketio_event(raw.recv_socketio())
    assert error[0] == "pr-room-error" and error[1]["error"]["code"] == "unknown-event"
    raw.send('42["message","still connected"]')
    assert raw.recv_socketio() == '2["message-back","still connected"]'


# -- logs -----------------------------------------------------------------------------------------

def test_engineio_errors_are_logged_once(host):
    assert requests.get(engineio_url(host.url, sid="no-such-session"), timeout=5) \
        .status_code == 400
    # python-engineio logs its first "Invalid session" as an error (later ones at INFO)
    assert len(log_lines(host, "Invalid session")) == 1
    line = log_lines(host, "Invalid session")[0]
    assert line.startswith("[") and "[ERROR]" in line  # gunicorn's format, not a bare line


# -- what socket.io-client shows the application ------------------------------------------------

@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_socketio_client_sees_the_host_app_as_it_was_without_prroom(host, transport):
    results = node.run_script("guest_client.js", host.url, transport)
    for namespace in ("root", "custom"):
        seen = results[namespace]
        assert seen["order"] == ["connect", "auth"]  # before: auth fired before connect
        assert seen["send"] == ["hello"]
        assert seen["binary"] == [{"buffer": [1, 2, 3]}, {"nested": {"buffer": [4]}}]
        assert seen["ack"] == [1, "2", {"buffer": [5]}]
    assert results["unknownNamespace"]["message"] == "Invalid namespace"
    assert results["binaryJoin"]["ok"] is False
    assert results["binaryJoin"]["error"]["code"] == "binary-payload"
    assert results["join"]["ok"] is True


def test_nothing_above_raised_a_traceback_in_the_server(host):
    assert "Traceback" not in host.log(), host.log()[-5000:]


# -- last: it leaves tracebacks in the module server's log ----------------------------------------

def test_a_host_handler_that_raises_is_the_servers_error_not_the_clients(host, connect):
    client = connect(host)
    client.expect("auth")  # the host's own greeting
    before = host.log()
    client.emit("host-bug", {"x": 1})
    error = client.expect("pr-room-error")
    assert error["event"] == "host-bug" and error["error"]["code"] == "internal-error"
    answer = client.call("host-bug", {"x": 2})  # asked for an ack: the error comes in it
    assert answer["ok"] is False and answer["error"]["code"] == "internal-error"
    assert client.connected  # the connection stays, and works
    assert client.call("message-with-ack", "still here") == "still here"
    new = host.log()[len(before):]
    assert new.count("RuntimeError: the host's handler failed") == 2
    assert "malformed" not in new
