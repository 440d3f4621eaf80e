"""prroom's reaches into library internals: each fails loudly when a library changes."""
from __future__ import annotations

import gc
import inspect
import json
import os
from typing import Any, List, Tuple

import pytest
import socketio

from prroom.diagnostics import loop_monitor
from prroom.internals import packet_codec, socketio_hooks
from prroom.transport import event_path
from tests.support.wsgi import Postponed, WsgiPolling, connected, polling_server


def test_websocket_unmasking_is_accelerated_and_still_correct():
    from geventwebsocket.websocket import Header

    original = Header.__dict__["mask_payload"]
    payload = os.urandom(5000)
    header = Header(length=len(payload))
    header.mask = os.urandom(4)
    expected = bytes(original(header, payload)) if not getattr(
        original, "_prroom_wrapped", False) else None
    assert socketio_hooks.accelerate_gevent_websocket() is True
    assert Header.mask_payload._prroom_wrapped and Header.unmask_payload._prroom_wrapped
    masked = Header.mask_payload(header, payload)
    if expected is not None:
        assert bytes(masked) == expected
    assert bytes(Header.unmask_payload(header, masked)) == payload  # XOR twice: identity


def test_python_socketio_still_has_the_entry_points_prroom_wraps():
    server = socketio.Server(async_mode="threading")
    assert callable(server._handle_event_internal)
    assert "message" in server.eio.handlers and "connect" in server.eio.handlers
    assert socketio_hooks.track_ack_requests(server) is True
    assert server._handle_event_internal._prroom_wrapped


def test_registered_handlers_reads_what_the_host_registered():
    server = socketio.Server(async_mode="threading")

    def host_connect(sid, environ):
        return None

    server.on("connect", host_connect, namespace="/")
    assert socketio_hooks.registered_handlers(server, "/") == {"connect": host_connect}
    assert socketio_hooks.registered_handlers(server, "/other") == {}


def test_options_set_by_host_and_served_path_come_from_flask_socketio():
    from flask import Flask
    from flask_socketio import SocketIO

    host = SocketIO(ping_interval=7, path="chat-io")
    assert set(socketio_hooks.options_set_by_host(host)) >= {"ping_interval", "path"}
    host.init_app(Flask(__name__), async_mode="threading")
    assert socketio_hooks.served_engineio_path(host) == "/chat-io/"
    assert socketio_hooks.served_engineio_path(SocketIO()) is None


# -- a guest on the host's server: reserved names, binary packets ------------------------------
# (the CONNECT: tests/internals/test_connects.py)

def test_reserved_names_are_renamed_on_prroom_namespace_only() -> None:
    server, client = polling_server()
    seen: List[tuple] = []
    server.on("*", lambda event, sid, *args: seen.append(("/", event)), namespace="/")
    server.on("message", lambda sid, *args: seen.append(("/", "host message")), namespace="/")
    server.on("connect", lambda sid, *args: seen.append(("/other", "connect")),
              namespace="/other")
    assert socketio_hooks.track_ack_requests(server, "/") is True
    sid = connected(client)
    client.post(sid, '42["connect"]', '42["*"]', '42[7]', '42["message","hi"]',
                '42["connect_error"]')
    assert seen == [("/", "(reserved) connect"), ("/", "(reserved) *"), ("/", "(reserved) 7"),
                    ("/", "host message"), ("/", "connect_error")]
    seen.clear()
    client.post(sid, "40/other,")
    client.post(sid, '42/other,["connect"]')  # the host's namespace: python-socketio's way
    assert seen == [("/other", "connect"), ("/other", "connect")]


def test_handling_an_event_leaves_no_reference_cycle(monkeypatch: pytest.MonkeyPatch) -> None:
    # The wrapper labels its frame for the loop monitor; a frame that held itself (a label
    # token kept in a local) made every event's whole call stack cyclic garbage, paid for
    # in collections on every message.  Acked events, as prroom's clients send them.
    monkeypatch.setattr(loop_monitor, "_watching", True)  # labels on, as under gunicorn
    server, client = polling_server()
    server.on("typing", lambda sid, data: {"ok": True}, namespace="/")
    assert socketio_hooks.track_ack_requests(server, "/") is True
    sid = connected(client)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept, to be looked at
    try:
        for number in range(20):
            client.post(sid, f'42{number}["typing",{{"pullRequestId":1}}]')
        answers = client.packets(sid)
        gc.collect()
        # other tests' servers may leave garbage of their own: only the event path counts
        stuck = [item.f_code.co_name for item in gc.garbage if inspect.isframe(item)
                 and item.f_code.co_name in ("handle_event_internal", "_handle_event")]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert len(answers) == 20 and answers[0].startswith("43")
    assert stuck == [], f"{len(stuck)} frames of handled events were left to the collector"


def guarded(max_attachments: int = 3) -> Tuple[socketio.Server, WsgiPolling, List[tuple],
                                                List[tuple]]:
    """A server guarded for namespace "/": prroom's handler ``mine``, the host's ``theirs``."""
    server, client = polling_server()
    calls: List[tuple] = []
    violations: List[tuple] = []

    def mine(sid: str, payload: Any = None) -> None:
        calls.append(("mine", payload))

    def theirs(sid: str, *args: Any) -> None:
        calls.append(("theirs", *args))

    server.on("mine", mine, namespace="/")
    server.on("theirs", theirs, namespace="/")
    server.on("mine", theirs, namespace="/custom")

    def on_violation(eio_sid: str, reason: str) -> None:
        violations.append((eio_sid, reason))

    socketio_hooks.guard_packets(server, on_violation, "/", [mine], max_attachments)
    return server, client, calls, violations


PLACEHOLDER = '{"_placeholder":true,"num":%d}'


def test_binary_events_stay_the_hosts_and_are_refused_to_prroom() -> None:
    server, client, calls, violations = guarded()
    sid = connected(client, "/", "/custom")
    client.post(sid, '451-["theirs",' + PLACEHOLDER % 0 + "]", "bAQID")
    client.post(sid, '451-["mine",' + PLACEHOLDER % 0 + "]", "bAQID")
    client.post(sid, '451-/custom,["mine",' + PLACEHOLDER % 0 + "]", "bAQID")
    client.post(sid, '450-["mine",{"a":1}]')  # announces no attachment: dispatched at once
    assert calls == [("theirs", b"\x01\x02\x03"), ("mine", socketio_hooks.BINARY_PAYLOAD),
                     ("theirs", b"\x01\x02\x03"), ("mine", {"a": 1})]
    assert violations == []


@pytest.mark.parametrize("packets,reason", [
    (['454-["theirs"]'], "binary packet announcing 4 attachments (at most 3)"),
    (['451-["theirs",' + PLACEHOLDER % 0 + "]", '42["theirs"]'],
     "text frame where a binary attachment was due"),
    (['451-["theirs",' + PLACEHOLDER % 5 + "]", "bAQID"], "malformed packet (IndexError)"),
    (['451-["mine",' + PLACEHOLDER % 5 + "]", "bAQID"], "malformed packet (IndexError)"),
    (['451-{"a":1}'], "malformed packet (binary payload is not an array)"),
    (["bAQID"], "malformed packet (ValueError)"),
])
def test_binary_abuse_closes_the_connection(packets: List[str], reason: str) -> None:
    server, client, calls, violations = guarded()
    sid = connected(client)
    client.post(sid, *packets)
    assert violations == [(sid, reason)] and calls == []
    assert sid not in server._binary_packet  # nothing held for it


def test_python_socketio_would_hoard_what_the_guard_bounds() -> None:
    # a count of up to ten digits is accepted, and text is taken as an attachment
    pkt = socketio.packet.Packet(encoded_packet='59999999999-["x",' + PLACEHOLDER % 0 + "]")
    assert pkt.attachment_count == 9999999999
    pkt = socketio.packet.Packet(encoded_packet='51-["x",' + PLACEHOLDER % 0 + "]")
    assert pkt.add_attachment("text") is True and pkt.data == ["x", "text"]
    # completing a packet reconstructs through the instance (the guard's per-packet hook)
    source = inspect.getsource(socketio.packet.Packet.add_attachment)
    assert "self.reconstruct_binary(self.data, self.attachments)" in source
    server = socketio.Server(async_mode="threading")
    assert server._binary_packet == {}
    handle = inspect.getsource(socketio.Server._handle_eio_message)
    assert "self._binary_packet[eio_sid] = pkt" in handle
    assert "self._handle_event(eio_sid, pkt.namespace, pkt.id," in handle


def test_python_socketio_sends_disconnect_reasons_recovery_tells_apart() -> None:
    # events.RECOVERABLE_REASONS names python-engineio's reasons for a lost connection
    from prroom.server.events import RECOVERABLE_REASONS
    reasons = {value for name, value in vars(socketio.Server.reason).items()
               if name.isupper()}
    assert RECOVERABLE_REASONS <= reasons
    assert {"client disconnect", "server disconnect"} <= reasons
    connect = inspect.getsource(socketio.Server._handle_connect)
    assert "packet.CONNECT, {'sid': sid}, namespace=namespace))" in connect


# -- a host's class-based namespace on prroom's namespace ---------------------------------------

def test_python_socketio_looks_at_handlers_before_namespace_classes() -> None:
    # why prroom's handlers on "/" would hide a host's Namespace class there
    trigger = inspect.getsource(socketio.Server._trigger_event)
    assert trigger.index("_get_event_handler") < trigger.index("_get_namespace_handler")
    assert "handler.trigger_event(event, *args)" in trigger
    assert "handler_name = 'on_' + (event or '')" in inspect.getsource(
        socketio.Namespace.trigger_event)


def test_a_hosts_namespace_class_keeps_its_connect_events_and_acks() -> None:
    from flask import Flask
    from flask_socketio import Namespace, SocketIO, emit

    from prroom import PRRoom

    calls: List[tuple] = []

    class Host(Namespace):
        def on_connect(self, auth: Any = None) -> None:
            calls.append(("connect", auth))
            emit("welcome", {})

        def on_disconnect(self, reason: Any = None) -> None:
            calls.append(("disconnect",))

        def on_hello(self, *args: Any) -> Any:
            calls.append(("hello", *args))
            return "hi back"

    app = Flask(__name__)
    host = SocketIO()
    host.on_namespace(Host("/"))
    PRRoom(app, socketio=host)  # prroom initialises the SocketIO (threading, inline handlers)
    client = WsgiPolling(app.wsgi_app)  # through Flask-SocketIO's middleware
    sid, _ = client.handshake()
    client.post(sid, '40{"token":"t"}')
    reply, welcome = client.packets(sid)
    assert reply.startswith("40{") and welcome == '42["welcome",{}]'
    client.post(sid, '421["hello",1]', '452-2["hello",' + PLACEHOLDER % 0 + "," +
                PLACEHOLDER % 1 + "]", "bAQ==", "bAg==", '423["no-such-event"]',
                '424["join-pr-room",{"pullRequestId":1,"username":"guest"}]')
    packets = client.packets(sid)
    assert packets[:2] == ['431["hi back"]', '432["hi back"]']
    assert json.loads(packets[2][3:])[0]["error"]["code"] == "unknown-event"
    assert packets[3].startswith('42["pr-room-members"') and packets[4].startswith('434[{"ok":true')
    assert calls == [("connect", {"token": "t"}), ("hello", 1), ("hello", b"\x01", b"\x02")]
    client.post(sid, "41")
    assert calls[-1] == ("disconnect",)


# -- acks sent later ---------------------------------------------------------------------

def test_python_socketio_still_sends_acks_as_send_ack_does() -> None:
    source = inspect.getsource(socketio.Server._handle_event_internal)
    assert "r != self.not_handled and id is not None" in source
    assert "server._send_packet(eio_sid, self.packet_class(" in source
    assert "packet.ACK, namespace=namespace, id=id, data=data" in source


def test_an_ack_can_be_sent_after_the_handler_returned() -> None:
    server, client = polling_server()
    answers: List[Any] = []
    later: List[Any] = []

    def slow(sid: str, payload: Any = None) -> Any:
        answer = socketio_hooks.answer_later(server, Postponed(later))
        answers.append(answer)
        return answer if answer is not None else {"ok": "at once"}

    server.on("slow", slow)
    assert socketio_hooks.track_ack_requests(server, "/") is True
    sid = connected(client)
    client.post(sid, '421["slow",{}]')
    assert answers == [server.not_handled] and len(later) == 1
    poll, response = client.get_in_thread(sid)
    poll.join(0.3)
    assert "poll" not in response  # the handler returned, and no ack went out
    later.pop()({"ok": True, "n": 1})  # from whichever task learns the outcome
    poll.join(5)
    assert response["poll"][1] == '431[{"ok":true,"n":1}]'
    client.post(sid, '42["slow",{}]')  # no ack asked for: nothing to defer
    assert answers[-1] is None and later == []


def test_without_the_entry_point_wrapped_the_handler_answers_at_once() -> None:
    server = socketio.Server(async_mode="threading")
    assert socketio_hooks.answer_later(server, Postponed([])) is None


def test_a_replaced_connection_is_told_and_its_handlers_run_with_the_reason() -> None:
    # recovery's take-over: python-engineio's Socket.close(wait, abort, reason) runs the
    # disconnect handlers before it returns, with our reason; the DISCONNECT goes out first
    server, client = polling_server()
    reasons: List[Tuple[str, Any]] = []
    server.on("connect", lambda sid, environ, auth=None: None)
    server.on("disconnect", lambda sid, reason=None: reasons.append((sid, reason)))
    eio_sid = connected(client)
    sid = server.manager.sid_from_eio_sid(eio_sid, "/")
    sock = server.eio.sockets[eio_sid]
    socketio_hooks.close_replaced(server, eio_sid, "/", "replaced")
    assert reasons == [(sid, "replaced")]
    assert sock.closed and sock.queue.get_nowait().encode() == "41"  # then the end
    assert sock.queue.get_nowait() is None
    socketio_hooks.close_replaced(server, eio_sid, "/", "replaced")  # once only
    assert len(reasons) == 1


def test_engineio_socket_close_takes_the_reason_close_transport_passes():
    # close_transport(reason=...) relies on it: an expired token's connection must close
    # as a lost transport ("transport close"), which connection state recovery keeps
    import inspect

    from engineio.socket import Socket

    assert "reason" in inspect.signature(Socket.close).parameters


# -- prroom's own events, dispatched straight to their handlers ------------------------------

def own_events_server() -> Tuple[socketio.Server, WsgiPolling, List[tuple], Any]:
    """A server whose "/" handlers are prroom's (guarded, acks tracked), and its direct
    dispatch: ``direct(eio_sid, text)`` as the WebSocket reader calls it."""
    server, client = polling_server()
    seen: List[tuple] = []

    def answers(sid: str, payload: Any = None, *extra: Any) -> Any:
        seen.append(("answers", payload, extra, socketio_hooks.ack_requested()))
        return {"ok": True, "echo": payload}

    def pair(sid: str, payload: Any = None) -> Any:
        return 1, "two"

    def silent(sid: str, payload: Any = None) -> Any:
        return None

    def lifecycle(sid: str, *args: Any) -> None:
        seen.append(("lifecycle",))

    def catch_all(event: str, sid: str, *args: Any) -> Any:
        seen.append(("*", event))
        return {"ok": False}

    def broken(sid: str, payload: Any = None) -> Any:
        raise RuntimeError("a bug")

    mine = [answers, pair, silent, lifecycle, catch_all, broken]
    for name, handler in (("answers", answers), ("pair", pair), ("silent", silent),
                          ("connect", lifecycle), ("*", catch_all), ("broken", broken)):
        server.on(name, handler, namespace="/")
    failed: List[str] = []

    def on_error(eio_sid: str, event: str, error: BaseException, acked: bool) -> Any:
        failed.append(event)
        return {"ok": False, "error": "internal"}

    assert socketio_hooks.track_ack_requests(server, "/", on_error)
    assert packet_codec.install(server)  # the direct dispatch takes prroom's packets only
    socketio_hooks.guard_packets(server, lambda eio_sid, reason: failed.append(reason), "/",
                                 mine)
    direct = getattr(server.eio.handlers["message"], event_path.DIRECT_ATTRIBUTE)
    return server, client, seen, (direct, failed)


def test_own_events_dispatched_directly_answer_as_the_library_path_does() -> None:
    server, client, seen, (direct, failed) = own_events_server()
    eio_sid = connected(client)
    assert seen == [("lifecycle",)]  # the connect itself
    seen.clear()
    texts = ['21["answers",{"pullRequestId":1}]', '2["answers",{"a":"é"}]',
             '22["answers",1,2]', '23["pair"]', '24["silent",{}]', '25["broken",{}]',
             '26["connect",{}]', '2["connect"]', '27["*",{}]']
    for text in texts:  # the library's path
        client.post(eio_sid, "4" + text)
    library = (client.packets(eio_sid), list(seen), list(failed))
    seen[:] = []
    failed[:] = []
    for text in texts:  # the direct one
        assert direct(eio_sid, text) is True
    assert (client.packets(eio_sid), seen, failed) == library
    answers, seen_events, errors = library
    assert answers == ['431[{"ok":true,"echo":{"pullRequestId":1}}]',
                       '432[{"ok":true,"echo":1}]', '433[1,"two"]', "434[]",
                       '435[{"ok":false,"error":"internal"}]', '436[{"ok":false}]',
                       '437[{"ok":false}]']
    assert seen_events == [("answers", {"pullRequestId": 1}, (), True),
                           ("answers", {"a": "é"}, (), False), ("answers", 1, (2,), True),
                           ("*", "(reserved) connect"), ("*", "(reserved) connect"),
                           ("*", "(reserved) *")]  # the lifecycle handler never ran again
    assert errors == ["broken"]


def test_an_own_event_answered_later_is_answered_once_by_either_path() -> None:
    server, client = polling_server()
    later: List[Any] = []

    def slow(sid: str, payload: Any = None) -> Any:
        return socketio_hooks.answer_later(server, Postponed(later))

    server.on("slow", slow)
    assert socketio_hooks.track_ack_requests(server, "/")
    assert packet_codec.install(server)
    socketio_hooks.guard_packets(server, lambda eio_sid, reason: None, "/", [slow])
    direct = getattr(server.eio.handlers["message"], event_path.DIRECT_ATTRIBUTE)
    eio_sid = connected(client)
    assert direct(eio_sid, '21["slow",{}]') is True
    client.post(eio_sid, '422["slow",{}]')
    assert len(later) == 2
    later.pop()({"n": 2})
    later.pop()({"n": 1})
    assert client.packets(eio_sid) == ['432[{"n":2}]', '431[{"n":1}]']
