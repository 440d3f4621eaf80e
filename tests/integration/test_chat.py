"""The product's contract over real sockets: gunicorn + gevent-websocket, python clients."""
from __future__ import annotations

import threading
import time
from typing import NamedTuple

import pytest
import requests
import socketio

from tests.support import servers
from tests.support.clients import Clients, new_pull_request_id
from tests.support.servers import SHARED_TYPING_TIMEOUT
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def test_product_doc_flow_delivers_to_everyone_in_the_room_including_sender(connect, pr_id):
    john, jane = connect(), connect()
    # The doc's clients emit without asking for an ack: that must keep working.
    john.emit("join-pr-room", {"pullRequestId": pr_id, "username": "johndoe"})
    jane.join(pr_id, "janedoe")  # ack: after it, both joins are done (john's came first)
    john.emit("send-message-to-pr-room", {"pullRequestId": pr_id, "username": "johndoe",
                                          "message": "This looks great! Approved."})
    for client in (john, jane):
        message = client.expect("pr-room-message")
        assert message["username"] == "johndoe"
        assert message["message"] == "This looks great! Approved."
        assert message["pullRequestId"] == pr_id
        assert isinstance(message["id"], str) and isinstance(message["sentAt"], int)


def test_acks_report_success(connect, pr_id):
    client = connect()
    assert client.join(pr_id, "ann") == {"ok": True, "pullRequestId": pr_id,
                                         "room": f"pr:{pr_id}", "username": "ann"}
    ack = client.say(pr_id, "ann", "hello")
    delivered = client.expect("pr-room-message")
    assert ack["id"] == delivered["id"] and ack["sentAt"] == delivered["sentAt"]
    assert client.call("leave-pr-room", {"pullRequestId": pr_id, "username": "ann"}) == {
        "ok": True, "pullRequestId": pr_id, "room": f"pr:{pr_id}"}


def test_rooms_are_isolated(connect, pr_id):
    other_room = pr_id + 500_000
    alice, bob, carol = connect(), connect(), connect()
    alice.join(pr_id, "alice")
    bob.join(pr_id, "bob")
    carol.join(other_room, "carol")
    alice.say(pr_id, "alice", "for pr room only")
    assert bob.expect("pr-room-message")["message"] == "for pr room only"
    # carol's next event is her own message: nothing from the other room got in first
    carol.say(other_room, "carol", "mine")
    assert carol.expect("pr-room-message")["message"] == "mine"
    assert alice.expect("pr-room-message")["message"] == "for pr room only"


def test_one_socket_in_many_rooms_leaving_one_keeps_the_others(connect, pr_id):
    first, second = pr_id, pr_id + 500_000
    multi, peer = connect(), connect()
    multi.join(first, "multi")
    multi.join(second, "multi")
    peer.join(first, "peer")
    peer.join(second, "peer")
    peer.say(first, "peer", "one")
    peer.say(second, "peer", "two")
    got = [multi.expect("pr-room-message") for _ in range(2)]
    assert [(m["pullRequestId"], m["message"]) for m in got] == [(first, "one"), (second, "two")]

    assert multi.call("leave-pr-room", {"pullRequestId": first, "username": "multi"})["ok"]
    peer.say(first, "peer", "after leave")
    peer.say(second, "peer", "still here?")
    assert multi.expect("pr-room-message")["message"] == "still here?"


def test_must_join_before_sending_and_room_sees_nothing(connect, pr_id):
    member, outsider = connect(), connect()
    member.join(pr_id, "member")
    payload = {"pullRequestId": pr_id, "username": "outsider", "message": "let me in"}
    ack = outsider.call("send-message-to-pr-room", payload)
    assert ack["ok"] is False and ack["error"]["code"] == "not-a-member"
    outsider.emit("send-message-to-pr-room", payload)  # no ack: told by event
    error = outsider.expect("pr-room-error")
    assert error["event"] == "send-message-to-pr-room"
    assert error["error"]["code"] == "not-a-member" and error["pullRequestId"] == pr_id
    member.say(pr_id, "member", "only me")
    assert member.expect("pr-room-message")["message"] == "only me"


def test_left_socket_gets_no_more_messages_and_cannot_send(connect, pr_id):
    leaver, stayer = connect(), connect()
    leaver.join(pr_id, "leaver")
    stayer.join(pr_id, "stayer")
    assert leaver.call("leave-pr-room", {"pullRequestId": pr_id, "username": "leaver"})["ok"]
    stayer.say(pr_id, "stayer", "gone?")
    ack = leaver.call("send-message-to-pr-room",
                      {"pullRequestId": pr_id, "username": "leaver", "message": "x"})
    assert ack["error"]["code"] == "not-a-member"
    again = leaver.call("leave-pr-room", {"pullRequestId": pr_id, "username": "leaver"})
    assert again["error"]["code"] == "not-a-member"
    # the message sent while it was out never reached it: its queue is empty of room events
    leaver.join(pr_id, "leaver")
    stayer.say(pr_id, "stayer", "welcome back")
    assert leaver.expect("pr-room-message")["message"] == "welcome back"


def test_disconnect_leaves_every_room_and_ends_typing_at_once(connect, pr_id):
    first, second = pr_id, pr_id + 500_000
    quitter, watcher = connect(), connect()
    for room in (first, second):
        quitter.join(room, "quitter")
        watcher.join(room, "watcher")
    assert quitter.call("typing", {"pullRequestId": first, "username": "quitter"})["ok"]
    assert watcher.expect("typing") == {"pullRequestId": first, "username": "quitter"}
    quitter.close()
    # within the client's wait, far shorter than the server's typing timeout: at once, not
    # by expiry
    assert watcher.expect("stop-typing") == {"pullRequestId": first, "username": "quitter"}
    watcher.say(second, "watcher", "anyone?")
    assert watcher.expect("pr-room-message")["message"] == "anyone?"


def test_typing_reaches_the_others_not_the_sender_and_stops(connect, pr_id):
    typist, reader = connect(), connect()
    typist.join(pr_id, "typist")
    reader.join(pr_id, "reader")
    ack = typist.call("typing", {"pullRequestId": pr_id, "username": "typist"})
    assert ack["ok"] is True and ack["expiresIn"] == SHARED_TYPING_TIMEOUT
    assert reader.expect("typing") == {"pullRequestId": pr_id, "username": "typist"}
    assert typist.call("stop-typing", {"pullRequestId": pr_id, "username": "typist"})["ok"]
    assert reader.expect("stop-typing") == {"pullRequestId": pr_id, "username": "typist"}
    # the typist itself saw neither: its next event is its own message
    typist.say(pr_id, "typist", "done")
    assert typist.expect("pr-room-message")["message"] == "done"


def test_sending_a_message_ends_the_typing_indicator(connect, pr_id):
    typist, reader = connect(), connect()
    typist.join(pr_id, "typist")
    reader.join(pr_id, "reader")
    typist.call("typing", {"pullRequestId": pr_id, "username": "typist"})
    assert reader.expect("typing")["username"] == "typist"
    typist.say(pr_id, "typist", "here it is")
    assert reader.expect("stop-typing")["username"] == "typist"
    assert reader.expect("pr-room-message")["message"] == "here it is"


# Short enough that the expiry tests wait about a second.
EXPIRY_TYPING_TIMEOUT = 1.0
short_typing_server = servers.server_fixture(
    {"PRROOM_TYPING_TIMEOUT": str(EXPIRY_TYPING_TIMEOUT)},
    doc="Typing indicators expire after a second.")


class Expiry(NamedTuple):
    """A typist who never said stop-typing, as its reader saw it."""

    pull_request_id: int
    stopped: dict   # the stop-typing the reader got
    after: float    # seconds from the reader's typing event to it


@pytest.fixture(scope="module")
def typing_expiry(short_typing_server: servers.ServerProcess) -> Expiry:
    """Run once, checked by a functional and a stress test."""
    pull_request_id = new_pull_request_id()
    with Clients(short_typing_server) as connect:
        typist, reader = connect.many(2)
        typist.join(pull_request_id, "typist")
        reader.join(pull_request_id, "reader")
        typist.call("typing", {"pullRequestId": pull_request_id, "username": "typist"})
        assert reader.expect("typing")["username"] == "typist"
        started = time.monotonic()
        stopped = reader.expect("stop-typing", timeout=EXPIRY_TYPING_TIMEOUT + 10)
        return Expiry(pull_request_id, stopped, time.monotonic() - started)


def test_typing_expires_without_stop_typing(typing_expiry):
    assert typing_expiry.stopped == {"pullRequestId": typing_expiry.pull_request_id,
                                     "username": "typist"}


@pytest.mark.stress
def test_typing_expires_on_time(typing_expiry):
    # the timeout plus at most one sweep interval (timeout / 5) and some slack
    assert EXPIRY_TYPING_TIMEOUT * 0.8 <= typing_expiry.after <= \
        EXPIRY_TYPING_TIMEOUT * 1.2 + 0.5, typing_expiry.after


def test_leave_ends_typing_at_once(connect, pr_id):
    typist, reader = connect(), connect()
    typist.join(pr_id, "typist")
    reader.join(pr_id, "reader")
    typist.call("typing", {"pullRequestId": pr_id, "username": "typist"})
    assert reader.expect("typing")["username"] == "typist"
    typist.call("leave-pr-room", {"pullRequestId": pr_id, "username": "typist"})
    # within the client's wait, far shorter than the typing timeout: not by expiry
    assert reader.expect("stop-typing")["username"] == "typist"


@pytest.mark.parametrize("event,extra", [
    ("send-message-to-pr-room", {"message": "I am somebody else"}),
    ("typing", {}),
    ("stop-typing", {}),
    ("leave-pr-room", {}),
])
def test_a_socket_cannot_speak_under_another_name(connect, pr_id, event, extra):
    alice, bob = connect(), connect()
    alice.join(pr_id, "alice")
    bob.join(pr_id, "bob")
    ack = alice.call(event, {"pullRequestId": pr_id, "username": "bob", **extra})
    assert ack["ok"] is False and ack["error"]["code"] == "identity-mismatch"
    alice.say(pr_id, "alice", "it was me")
    message = bob.expect("pr-room-message")  # nothing under bob's name came first
    assert (message["username"], message["message"]) == ("alice", "it was me")


def test_rejoining_under_another_name_is_refused(connect, pr_id):
    client = connect()
    client.join(pr_id, "alice")
    assert client.join(pr_id, "alice")["ok"]  # same name: idempotent
    ack = client.call("join-pr-room", {"pullRequestId": pr_id, "username": "mallory"})
    assert ack["error"]["code"] == "identity-mismatch"
    client.say(pr_id, "alice", "still alice")
    assert client.expect("pr-room-message")["username"] == "alice"


BAD_INPUTS = [
    # (event, payload, expected code)
    ("join-pr-room", None, "invalid-payload"),
    ("join-pr-room", "pr 1", "invalid-payload"),
    ("join-pr-room", [1, "bob"], "invalid-payload"),
    ("join-pr-room", {"username": "bob"}, "missing-field"),
    ("join-pr-room", {"pullRequestId": 1}, "missing-field"),
    ("join-pr-room", {"pullRequestId": "1", "username": "bob"}, "invalid-field"),
    ("join-pr-room", {"pullRequestId": 1.5, "username": "bob"}, "invalid-field"),
    ("join-pr-room", {"pullRequestId": True, "username": "bob"}, "invalid-field"),
    ("join-pr-room", {"pullRequestId": 0, "username": "bob"}, "invalid-field"),
    ("join-pr-room", {"pullRequestId": -4, "username": "bob"}, "invalid-field"),
    ("join-pr-room", {"pullRequestId": 1, "username": ""}, "invalid-field"),
    ("join-pr-room", {"pullRequestId": 1, "username": 42}, "invalid-field"),
    ("join-pr-room", {"pullRequestId": 1, "username": "b\u0007ob"}, "invalid-field"),
    ("join-pr-room", {"pullRequestId": 1, "username": "x" * 65}, "invalid-field"),
    ("send-message-to-pr-room", {"pullRequestId": "12", "username": "u", "message": "m"},
     "invalid-field"),
    ("send-message-to-pr-room", {"pullRequestId": "ROOM", "username": "u"}, "missing-field"),
    ("send-message-to-pr-room", {"pullRequestId": "ROOM", "username": "u", "message": "   "},
     "invalid-field"),
    ("send-message-to-pr-room", {"pullRequestId": "ROOM", "username": "u", "message": 7},
     "invalid-field"),
    ("send-message-to-pr-room", {"pullRequestId": "ROOM", "username": "u",
                                 "message": "x" * 4001}, "message-too-long"),
    ("typing", {"pullRequestId": "ROOM"}, "missing-field"),
    ("stop-typing", 12, "invalid-payload"),
    ("leave-pr-room", {"pullRequestId": 10 ** 20, "username": "u"}, "invalid-field"),
    ("no-such-event", {"pullRequestId": "ROOM"}, "unknown-event"),
]


@pytest.mark.parametrize("event,payload,code", BAD_INPUTS)
def test_bad_input_gets_a_documented_error_and_harms_nobody(connect, pr_id, event, payload,
                                                            code):
    sender, bystander = connect(), connect()
    sender.join(pr_id, "u")
    bystander.join(pr_id, "bystander")
    if isinstance(payload, dict) and payload.get("pullRequestId") == "ROOM":
        payload = {**payload, "pullRequestId": pr_id}

    ack = sender.call(event, payload)
    assert ack["ok"] is False and ack["error"]["code"] == code
    assert isinstance(ack["error"]["message"], str) and ack["error"]["message"]

    sender.emit(event, payload)  # the same without an ack: a pr-room-error event
    error = sender.expect("pr-room-error")
    assert error["ok"] is False and error["event"] == event and error["error"]["code"] == code

    # the sender is still connected and useful; the bystander saw only the good message
    sender.say(pr_id, "u", "still fine")
    for client in (sender, bystander):
        message = client.expect("pr-room-message")
        assert message["message"] == "still fine"


def test_a_message_at_the_limit_is_delivered_whole(connect, pr_id):
    client = connect()
    client.join(pr_id, "u")
    text = "é" * 4000
    client.say(pr_id, "u", text)
    assert client.expect("pr-room-message")["message"] == text


def test_oversized_frame_closes_only_that_connection(server, connect, pr_id):
    member = connect()
    member.join(pr_id, "member")
    flooder = socketio.Client(reconnection=False)
    dropped = threading.Event()
    flooder.on("disconnect", lambda *reason: dropped.set())
    flooder.connect(server.url, transports=["websocket"], wait_timeout=5)
    try:
        assert flooder.call("join-pr-room", {"pullRequestId": pr_id, "username": "flooder"},
                            timeout=5)["ok"]
        # 200 KB frame, above PRROOM_MAX_FRAME_BYTES (64 KB): the server hangs up
        flooder.emit("send-message-to-pr-room", {"pullRequestId": pr_id, "username": "flooder",
                                                 "message": "x" * 200_000})
        assert dropped.wait(5), "the server kept a connection that sent an oversized frame"
    finally:
        flooder.disconnect()
    member.say(pr_id, "member", "unaffected")
    assert member.expect("pr-room-message")["message"] == "unaffected"


@pytest.mark.parametrize("transports", [["polling"], None])
def test_long_polling_and_default_transports_work(connect, pr_id, transports):
    polling = connect(transports=transports or ["polling", "websocket"])
    websocket = connect()
    polling.join(pr_id, "poller")
    websocket.join(pr_id, "socketeer")
    polling.say(pr_id, "poller", "over polling")
    websocket.say(pr_id, "socketeer", "over websocket")
    for client in (polling, websocket):
        assert client.expect("pr-room-message")["message"] == "over polling"
        assert client.expect("pr-room-message")["message"] == "over websocket"


def test_health_endpoint_and_server_log_show_activity(server, connect, pr_id):
    body = requests.get(server.url + "/healthz", timeout=5).json()
    assert body["status"] == "ok" and body["asyncMode"] == "gevent"
    client = connect()
    client.join(pr_id, "logged")
    sid = client.sid
    client.close()
    # the log is a file: poll it
    assert wait_until(lambda: f"disconnect sid={sid}" in server.log(), timeout=5)
    log = server.log()
    assert f"connect sid={sid}" in log
    assert f"join sid={sid} user=logged pr={pr_id}" in log
    assert '"GET /healthz HTTP/1.1" 200' in log  # gunicorn's access log is back


def test_presence_in_one_process_counts_users_not_tabs(connect, pr_id):
    ann = connect(presence=True)
    ann.join(pr_id, "ann")
    assert ann.expect("pr-room-members") == {"pullRequestId": pr_id, "members": ["ann"]}
    tab1, tab2 = connect(presence=True), connect(presence=True)
    tab1.join(pr_id, "ben")
    assert tab1.expect("pr-room-members") == {"pullRequestId": pr_id,
                                              "members": ["ann", "ben"]}
    assert ann.expect("pr-room-user-joined") == {"pullRequestId": pr_id, "username": "ben"}
    tab2.join(pr_id, "ben")  # a second tab of the same user: nobody is told
    assert tab2.expect("pr-room-members")["members"] == ["ann", "ben"]
    tab1.close()
    ann.say(pr_id, "ann", "ben still here")
    assert ann.expect("pr-room-message")["message"] == "ben still here"
    tab2.close()  # the last tab: ben left
    assert ann.expect("pr-room-user-left") == {"pullRequestId": pr_id, "username": "ben"}


engineio_writes_server = servers.server_fixture(
    {"PRROOM_WEBSOCKET_WRITES": "engineio"}, doc="python-engineio's own WebSocket writer.")


@pytest.mark.parametrize("transports", [["websocket"], ["polling"], None])
def test_the_engineio_write_path_still_serves_every_transport(engineio_writes_server, connect,
                                                              pr_id, transports):
    # PRROOM_WEBSOCKET_WRITES=engineio is the escape hatch from
    # prroom/transport/writes.py: it must be a working server, not a lesser-tested one.
    clients = [connect(engineio_writes_server, transports=transports),
               connect(engineio_writes_server)]
    for number, client in enumerate(clients):
        client.join(pr_id, f"member-{number}")
    clients[0].say(pr_id, "member-0", "through engine.io's writer")
    for client in clients:
        assert client.expect("pr-room-message")["message"] == "through engine.io's writer"
