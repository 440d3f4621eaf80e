"""PRRoom as a Flask extension, driven through Flask's and Flask-SocketIO's test clients."""
# PRRoom.socketio is Optional (None before init_app): these tests read it after.
# mypy: disable-error-code="union-attr"
from __future__ import annotations

import gc

import pytest
from flask import Flask
from flask_socketio import SocketIO

from prroom import PRRoom, create_app
from prroom.cluster.room_index import IndexedManager
from prroom.core.config import ConfigError
from prroom.server.extension import resolve_async_mode
from tests.support.clients import PRESENCE_EVENTS

# create_app() also reads PRROOM_* from the environment: tests/conftest.py clears them for
# every test.
THREADING = {"PRROOM_ASYNC_MODE": "threading"}


def make_app(**config) -> Flask:
    app = Flask(__name__)
    app.config.update(THREADING)
    app.config.update(config)
    return app


@pytest.fixture
def ext():
    return PRRoom(make_app())


def client_of(ext, **kwargs):
    client = ext.socketio.test_client(ext.app, **kwargs)
    assert client.is_connected()
    return client


def events(client, name=None):
    """What the client received: all of one event, or everything but presence events."""
    received = [(item["name"], item["args"][0] if item["args"] else None)
                for item in client.get_received()]
    if name:
        return [payload for event, payload in received if event == name]
    return [(event, payload) for event, payload in received if event not in PRESENCE_EVENTS]


def join(client, pr, username):
    ack = client.emit("join-pr-room", {"pullRequestId": pr, "username": username},
                      callback=True)
    assert ack["ok"] is True, ack
    return ack


# -- registration ---------------------------------------------------------------------

def test_direct_form_keeps_its_app_alive():
    # PRRoom(Flask(...)) may hold the only reference to the app
    ext = PRRoom(make_app())
    gc.collect()
    assert ext.app is not None
    assert ext.socketio.server is not None


def test_direct_form_registers_extension():
    app = make_app()
    ext = PRRoom(app)
    assert app.extensions["prroom"].extension is ext
    assert ext.app is app
    assert ext.socketio is not None and ext.socketio.server is not None
    assert ext.registry is not None and ext.events is not None
    assert ext.settings.async_mode == "threading"
    assert ext.socketio.async_mode == "threading"


def test_app_factory_form():
    ext = PRRoom()
    assert ext.app is None and ext.socketio is None
    app = make_app()
    ext.init_app(app)
    assert app.extensions["prroom"].extension is ext
    assert ext.app is app
    client = client_of(ext)
    assert join(client, 1, "alice")["room"] == "pr:1"


def test_defaults_are_written_into_app_config():
    app = make_app()
    PRRoom(app)
    assert app.config["PRROOM_MAX_MESSAGE_LENGTH"] == 4000
    assert app.config["PRROOM_URL_PREFIX"] == ""


def test_init_app_twice_on_same_app_raises():
    app = make_app()
    ext = PRRoom(app)
    with pytest.raises(RuntimeError, match="already registered"):
        ext.init_app(app)
    with pytest.raises(RuntimeError):
        PRRoom(app)
    assert app.extensions["prroom"].extension is ext


def test_one_prroom_serves_two_apps_each_with_its_own_state():
    ext = PRRoom()
    first, second = make_app(PRROOM_MAX_MESSAGE_LENGTH=10), make_app()
    ext.init_app(first)
    ext.init_app(second)
    one, two = first.extensions["prroom"], second.extensions["prroom"]
    assert one.extension is ext and two.extension is ext
    assert one.socketio is not two.socketio and one.registry is not two.registry
    with first.app_context():
        assert ext.settings.max_message_length == 10
    with second.app_context():
        assert ext.settings.max_message_length == 4000
    with pytest.raises(RuntimeError, match="several apps"):
        ext.settings  # noqa: B018 - outside an app context it is ambiguous
    alice = one.socketio.test_client(first)
    bob = two.socketio.test_client(second)
    assert join(alice, 1, "alice")["ok"] and join(bob, 1, "bob")["ok"]
    assert one.registry.members(1) != {} and list(two.registry.members(1).values()) == ["bob"]


def test_decorators_applied_after_init_app_are_used():
    app = make_app(PRROOM_AUTH_MODE="custom")
    ext = PRRoom(app)
    state = app.extensions["prroom"]
    refused = state.socketio.test_client(app, auth={"name": "alice"})
    assert not refused.is_connected()  # no authenticator yet: refused, not crashed

    @ext.authenticator
    def authenticate(auth, request):
        return auth.get("name")

    @ext.room_authorizer
    def can_join(identity, pull_request_id):
        return pull_request_id != 2

    client = state.socketio.test_client(app, auth={"name": "alice"})
    assert client.is_connected()
    assert client.emit("join-pr-room", {"pullRequestId": 1}, callback=True)["username"] == \
        "alice"
    reply = client.emit("join-pr-room", {"pullRequestId": 2}, callback=True)
    assert reply["error"]["code"] == "forbidden"


def test_socketio_created_with_prroom_settings():
    ext = PRRoom(make_app(PRROOM_MAX_FRAME_BYTES=2048, PRROOM_MAX_MESSAGE_LENGTH=10,
                          PRROOM_PING_INTERVAL=7, PRROOM_PING_TIMEOUT=3,
                          PRROOM_CORS_ALLOWED_ORIGINS="*"))
    server = ext.socketio.server
    assert isinstance(server.manager, IndexedManager)
    assert server.eio.max_http_buffer_size == 2048
    assert server.eio.ping_interval == 7
    assert server.eio.ping_timeout == 3
    assert server.eio.cors_allowed_origins == "*"
    assert server.async_handlers is False


def test_cors_origin_list_and_same_origin():
    listed = PRRoom(make_app(PRROOM_CORS_ALLOWED_ORIGINS="https://a.example, https://b.x"))
    assert listed.socketio.server.eio.cors_allowed_origins == ["https://a.example",
                                                               "https://b.x"]
    same = PRRoom(make_app())
    assert same.socketio.server.eio.cors_allowed_origins is None  # same origin only


def test_bad_config_raises_config_error_at_init():
    app = make_app(PRROOM_TYPING_TIMEOUT="soon")
    with pytest.raises(ConfigError, match="^PRROOM_TYPING_TIMEOUT="):
        PRRoom(app)
    assert "prroom" not in app.extensions


def test_bad_config_in_factory_form():
    app = make_app(PRROOM_ASYNC_MODE="eventlet")
    ext = PRRoom()
    with pytest.raises(ConfigError, match="^PRROOM_ASYNC_MODE="):
        ext.init_app(app)


def test_resolve_async_mode():
    assert resolve_async_mode("threading") == "threading"
    assert resolve_async_mode("gevent") == "gevent"
    from gevent import monkey
    patched = monkey.is_module_patched("socket")
    assert resolve_async_mode("auto") == ("gevent" if patched else "threading")


# -- HTTP -----------------------------------------------------------------------------

def test_healthz(ext):
    http = ext.app.test_client()
    response = http.get("/healthz")
    assert response.status_code == 200
    # no event loop to watch under threading: eventLoop is null
    assert response.get_json() == {"status": "ok", "rooms": 0, "asyncMode": "threading",
                                   "eventLoop": None}
    join(client_of(ext), 5, "alice")
    assert http.get("/healthz").get_json()["rooms"] == 1


@pytest.mark.parametrize("prefix, path", [("/chat", "/chat/healthz"),
                                          ("/chat/", "/chat/healthz"),
                                          ("/a/b", "/a/b/healthz")])
def test_url_prefix_moves_healthz(prefix, path):
    app = make_app(PRROOM_URL_PREFIX=prefix)
    PRRoom(app)
    http = app.test_client()
    assert http.get(path).status_code == 200
    assert http.get("/healthz").status_code == 404


def test_url_prefix_without_slash_is_config_error():
    with pytest.raises(ConfigError, match="^PRROOM_URL_PREFIX="):
        PRRoom(make_app(PRROOM_URL_PREFIX="chat"))


# -- host app with its own SocketIO ----------------------------------------------------

def make_host_app():
    app = Flask(__name__)
    socketio = SocketIO(app, async_mode="threading")
    calls: list = []

    @socketio.on("connect")
    def host_connect(auth=None):
        calls.append("connect")

    @socketio.on("ping-host")
    def ping_host(data):
        calls.append(("ping", data))
        return {"pong": data}

    @app.get("/host")
    def host_page():
        return "host page"

    return app, socketio, calls


def test_host_socketio_and_routes_keep_working():
    app, socketio, calls = make_host_app()
    ext = PRRoom(app, socketio=socketio)
    assert ext.socketio is socketio
    assert app.extensions["prroom"].extension is ext

    http = app.test_client()
    assert http.get("/host").get_data(as_text=True) == "host page"
    assert http.get("/healthz").status_code == 200

    client = socketio.test_client(app)
    assert client.is_connected()
    assert calls == ["connect"]  # host connect handler still runs
    assert client.emit("ping-host", 7, callback=True) == {"pong": 7}
    assert calls[-1] == ("ping", 7)
    assert join(client, 3, "alice")["room"] == "pr:3"
    ack = client.emit("send-message-to-pr-room",
                      {"pullRequestId": 3, "username": "alice", "message": "hi"},
                      callback=True)
    assert ack["ok"] is True
    assert [m["message"] for m in events(client, "pr-room-message")] == ["hi"]


def test_host_handlers_registered_after_prroom_work():
    app = Flask(__name__)
    socketio = SocketIO(app, async_mode="threading")
    PRRoom(app, socketio=socketio)

    @socketio.on("late-event")
    def late(data):
        return "late ok"

    client = socketio.test_client(app)
    assert client.emit("late-event", None, callback=True) == "late ok"


def test_host_connect_handler_can_refuse():
    app = Flask(__name__)
    socketio = SocketIO(app, async_mode="threading")

    @socketio.on("connect")
    def refuse(auth=None):
        return False

    ext = PRRoom(app, socketio=socketio)
    client = socketio.test_client(app)
    assert not client.is_connected()
    assert ext.registry.room_count() == 0


def test_host_disconnect_handler_and_prroom_cleanup_both_run():
    app = Flask(__name__)
    socketio = SocketIO(app, async_mode="threading")
    gone = []

    @socketio.on("disconnect")
    def host_disconnect(*args):
        gone.append("host")

    ext = PRRoom(app, socketio=socketio)
    client = socketio.test_client(app)
    join(client, 1, "alice")
    client.disconnect()
    assert gone == ["host"]
    assert ext.registry.room_count() == 0


def test_uninitialised_host_socketio_is_initialised_by_prroom():
    app = make_app()
    socketio = SocketIO(max_http_buffer_size=5000)
    ext = PRRoom(app, socketio=socketio)
    assert ext.socketio is socketio
    assert socketio.server is not None
    assert socketio.server.eio.max_http_buffer_size == 5000  # the host's option wins
    assert isinstance(socketio.server.manager, IndexedManager)
    join(client_of(ext), 1, "alice")


# -- the chat itself through test clients ----------------------------------------------

def test_join_and_send_reaches_both_members(ext):
    alice, bob = client_of(ext), client_of(ext)
    assert join(alice, 10, "alice") == {"ok": True, "pullRequestId": 10, "room": "pr:10",
                                        "username": "alice"}
    join(bob, 10, "bob")
    ack = alice.emit("send-message-to-pr-room",
                     {"pullRequestId": 10, "username": "alice", "message": "LGTM\nship it"},
                     callback=True)
    assert ack["ok"] is True and ack["pullRequestId"] == 10
    for client in (alice, bob):
        [message] = events(client, "pr-room-message")
        assert message["pullRequestId"] == 10
        assert message["username"] == "alice"
        assert message["message"] == "LGTM\nship it"
        assert message["id"] == ack["id"]
        assert message["sentAt"] == ack["sentAt"]


def test_message_not_delivered_to_other_rooms(ext):
    alice, carol = client_of(ext), client_of(ext)
    join(alice, 10, "alice")
    join(carol, 11, "carol")
    alice.emit("send-message-to-pr-room",
               {"pullRequestId": 10, "username": "alice", "message": "hi"}, callback=True)
    assert events(carol) == []


def test_message_ids_are_unique(ext):
    alice = client_of(ext)
    join(alice, 1, "alice")
    payload = {"pullRequestId": 1, "username": "alice", "message": "x"}
    ids = {alice.emit("send-message-to-pr-room", payload, callback=True)["id"]
           for _ in range(5)}
    assert len(ids) == 5


def test_error_with_ack_comes_back_in_the_ack_only(ext):
    client = client_of(ext)
    ack = client.emit("join-pr-room", {"pullRequestId": "7", "username": "alice"},
                      callback=True)
    assert ack == {"ok": False, "error": {"code": "invalid-field", "field": "pullRequestId",
                                          "message": ack["error"]["message"]}}
    assert events(client) == []


def test_error_without_ack_arrives_as_event(ext):
    client = client_of(ext)
    client.emit("send-message-to-pr-room",
                {"pullRequestId": 4, "username": "alice", "message": "hi"})
    [(name, body)] = events(client)
    assert name == "pr-room-error"
    assert body["ok"] is False
    assert body["event"] == "send-message-to-pr-room"
    assert body["pullRequestId"] == 4
    assert body["error"]["code"] == "not-a-member"


def test_error_event_without_usable_pull_request_id(ext):
    client = client_of(ext)
    client.emit("join-pr-room", {"pullRequestId": True, "username": "alice"})
    [(name, body)] = events(client)
    assert name == "pr-room-error"
    assert "pullRequestId" not in body
    assert body["error"]["code"] == "invalid-field"
    client.emit("join-pr-room", "not an object")
    [(name, body)] = events(client)
    assert body["error"]["code"] == "invalid-payload"


def test_unknown_event(ext):
    client = client_of(ext)
    ack = client.emit("no-such-event", {"x": 1}, callback=True)
    assert ack["ok"] is False and ack["error"]["code"] == "unknown-event"
    client.emit("no-such-event")
    [(name, body)] = events(client)
    assert name == "pr-room-error"
    assert body["event"] == "no-such-event"
    assert body["error"]["code"] == "unknown-event"


def test_rejoin_under_other_name_refused(ext):
    client = client_of(ext)
    join(client, 1, "alice")
    assert join(client, 1, "alice")["ok"] is True  # idempotent
    ack = client.emit("join-pr-room", {"pullRequestId": 1, "username": "mallory"},
                      callback=True)
    assert ack["error"]["code"] == "identity-mismatch"


def test_send_under_other_name_refused(ext):
    alice, bob = client_of(ext), client_of(ext)
    join(alice, 1, "alice")
    join(bob, 1, "bob")
    ack = alice.emit("send-message-to-pr-room",
                     {"pullRequestId": 1, "username": "bob", "message": "spoof"},
                     callback=True)
    assert ack["error"]["code"] == "identity-mismatch"
    assert events(bob) == []


def test_leave_then_send_is_refused(ext):
    alice, bob = client_of(ext), client_of(ext)
    join(alice, 1, "alice")
    join(bob, 1, "bob")
    ack = alice.emit("leave-pr-room", {"pullRequestId": 1, "username": "alice"},
                     callback=True)
    assert ack == {"ok": True, "pullRequestId": 1, "room": "pr:1"}
    bob.emit("send-message-to-pr-room",
             {"pullRequestId": 1, "username": "bob", "message": "still there?"},
             callback=True)
    assert events(alice, "pr-room-message") == []
    ack = alice.emit("send-message-to-pr-room",
                     {"pullRequestId": 1, "username": "alice", "message": "hi"},
                     callback=True)
    assert ack["error"]["code"] == "not-a-member"


def test_typing_reaches_others_only(ext):
    alice, bob = client_of(ext), client_of(ext)
    join(alice, 1, "alice")
    join(bob, 1, "bob")
    ack = alice.emit("typing", {"pullRequestId": 1, "username": "alice"}, callback=True)
    assert ack == {"ok": True, "pullRequestId": 1, "expiresIn": 5.0}
    assert events(bob) == [("typing", {"pullRequestId": 1, "username": "alice"})]
    assert events(alice) == []
    alice.emit("stop-typing", {"pullRequestId": 1, "username": "alice"}, callback=True)
    assert events(bob) == [("stop-typing", {"pullRequestId": 1, "username": "alice"})]
    alice.emit("stop-typing", {"pullRequestId": 1, "username": "alice"}, callback=True)
    assert events(bob) == []  # nothing to retract twice


def test_disconnect_while_typing_tells_the_others(ext):
    alice, bob = client_of(ext), client_of(ext)
    join(alice, 1, "alice")
    join(bob, 1, "bob")
    alice.emit("typing", {"pullRequestId": 1, "username": "alice"}, callback=True)
    events(bob)
    alice.disconnect()
    assert events(bob) == [("stop-typing", {"pullRequestId": 1, "username": "alice"})]
    assert ext.registry.members(1) == {
        ext.socketio.server.manager.sid_from_eio_sid(bob.eio_sid, "/"): "bob"}


def test_message_length_limit_from_config():
    ext = PRRoom(make_app(PRROOM_MAX_MESSAGE_LENGTH=5))
    client = client_of(ext)
    join(client, 1, "alice")
    ok = client.emit("send-message-to-pr-room",
                     {"pullRequestId": 1, "username": "alice", "message": "12345"},
                     callback=True)
    assert ok["ok"] is True
    ack = client.emit("send-message-to-pr-room",
                      {"pullRequestId": 1, "username": "alice", "message": "123456"},
                      callback=True)
    assert ack["error"]["code"] == "message-too-long"
    assert ack["error"]["limit"] == 5


# -- create_app -----------------------------------------------------------------------

def test_create_app_applies_config():
    app = create_app(config={**THREADING, "PRROOM_MAX_USERNAME_LENGTH": 3,
                             "PRROOM_URL_PREFIX": "/rooms"})
    ext = app.extensions["prroom"]
    assert ext.settings.max_username_length == 3
    assert app.test_client().get("/rooms/healthz").status_code == 200
    client = client_of(ext)
    ack = client.emit("join-pr-room", {"pullRequestId": 1, "username": "dave"},
                      callback=True)
    assert ack["error"] == {"code": "invalid-field", "field": "username", "limit": 3,
                            "message": ack["error"]["message"]}
    assert join(client, 1, "dav")["ok"] is True


def test_create_app_reads_environment_and_config_wins(monkeypatch):
    monkeypatch.setenv("PRROOM_ASYNC_MODE", "threading")
    monkeypatch.setenv("PRROOM_MAX_MESSAGE_LENGTH", "10")
    monkeypatch.setenv("PRROOM_TYPING_TIMEOUT", "2.5")
    app = create_app(config={"PRROOM_MAX_MESSAGE_LENGTH": 20})
    settings = app.extensions["prroom"].settings
    assert settings.async_mode == "threading"
    assert settings.max_message_length == 20
    assert settings.typing_timeout == 2.5


def test_create_app_bad_config_raises():
    with pytest.raises(ConfigError, match="^PRROOM_MAX_MESSAGE_LENGTH="):
        create_app(config={**THREADING, "PRROOM_MAX_MESSAGE_LENGTH": "long"})


def test_create_app_bad_environment_raises(monkeypatch):
    monkeypatch.setenv("PRROOM_PING_INTERVAL", "often")
    with pytest.raises(ConfigError, match="^PRROOM_PING_INTERVAL="):
        create_app(config=THREADING)


# -- regressions: defects found earlier, now fixed ------------------------------------

def test_refusal_reaches_client_when_ack_tracking_is_unavailable(ext):
    client = client_of(ext)
    # Simulate a python-socketio without _handle_event_internal to wrap: the server
    # dispatches events through the unwrapped class method.
    del ext.socketio.server._handle_event_internal
    client.emit("typing", {"pullRequestId": 1, "username": "alice"})  # not a member
    names = [name for name, _ in events(client)]
    assert names == ["pr-room-error"]


def test_disconnected_test_client_leaves_no_trace(ext):
    alice = client_of(ext)
    bob = client_of(ext)  # re-initialises the manager
    manager = ext.socketio.server.manager
    alice_sid = manager.sid_from_eio_sid(alice.eio_sid, "/")
    join(alice, 1, "alice")
    join(bob, 1, "bob")
    alice.disconnect()
    assert not manager.is_connected(alice_sid, "/")
    assert all(alice_sid not in members for members in manager.rooms["/"].values())


# -- background loops -----------------------------------------------------------------

def test_the_app_state_starts_the_sweepers_once_at_the_first_connection(ext, monkeypatch):
    from prroom.server import sweepers

    started = []
    monkeypatch.setattr(sweepers, "start", lambda *args, **kwargs: started.append(kwargs))
    state = ext.state()
    assert started == []  # not at init_app: gunicorn may fork after loading the app
    client_of(ext)
    client_of(ext)
    assert len(started) == 1
    # anonymous connections never expire; recovery is off by default
    assert started[0] == {"identities": None, "resume": state.events.resume}
