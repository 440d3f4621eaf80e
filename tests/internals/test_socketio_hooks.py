"""prroom's reaches into library internals: each fails loudly when a library changes."""
import os

import socketio

from prroom.internals import socketio_hooks


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
