"""Tripwires for prroom's changes to a Socket.IO server the host built (host_server.py)."""
from __future__ import annotations

import threading
from typing import Any, List

import socketio
from flask import Flask
from flask_socketio import SocketIO

from prroom.internals import host_server
from tests.support.wsgi import WsgiPolling, connected


class RecordingManager(socketio.Manager):
    """A manager that records its initialisation and the emits it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.initialized = 0
        self.emits: List[Any] = []

    def initialize(self) -> None:
        self.initialized += 1
        super().initialize()

    def emit(self, event: str, data: Any, *args: Any, **kwargs: Any) -> Any:
        self.emits.append(event)
        return super().emit(event, data, *args, **kwargs)


def test_host_options_are_what_flask_socketio_was_given() -> None:
    host = SocketIO(ping_interval=7)
    host.init_app(Flask(__name__), async_mode="threading", message_queue=None)
    options = host_server.host_options(host)
    assert options["ping_interval"] == 7 and options["async_mode"] == "threading"
    assert "client_manager" not in options
    assert host_server.has_stock_manager(host.server)


def test_a_replaced_manager_serves_the_server_from_its_first_client() -> None:
    server = socketio.Server(async_mode="threading", async_handlers=True)
    manager = RecordingManager()
    host_server.replace_manager(server, manager)
    assert not host_server.has_stock_manager(server)
    assert manager.server is server and manager.initialized == 0
    host_server.set_async_handlers(server, False)
    assert not host_server.async_handlers(server)
    server.on("hello", lambda sid, data: server.emit("back", data, to=sid))
    client = WsgiPolling(server)
    sid = connected(client)
    assert manager.initialized == 1  # python-socketio initialised the new one
    client.post(sid, '42["hello",1]')  # inline handler: it ran before the POST returned
    assert manager.emits == ["back"]
    assert '42["back",1]' in client.packets(sid)


def test_a_manager_replaced_after_the_server_initialised_its_own_is_initialised() -> None:
    server = socketio.Server(async_mode="threading")
    connected(WsgiPolling(server))
    manager = RecordingManager()
    host_server.replace_manager(server, manager)
    assert manager.initialized == 1


def test_engineio_options_change_what_clients_get() -> None:
    server = socketio.Server(async_mode="threading", ping_interval=(25, 5))
    assert set(host_server.engineio_options(server)) == set(host_server.ENGINEIO_OPTIONS)
    host_server.set_engineio_option(server, "ping_interval", 7)
    host_server.set_engineio_option(server, "ping_timeout", 3)
    host_server.set_engineio_option(server, "max_http_buffer_size", 100)
    client = WsgiPolling(server)
    _, opening = client.handshake()  # the grace period of the host's tuple is gone too
    assert opening["pingInterval"] == 7000 and opening["pingTimeout"] == 3000
    assert opening["maxPayload"] == 100


def test_cors_credentials_and_origins_are_read_per_request() -> None:
    server = socketio.Server(async_mode="threading")
    host_server.set_engineio_option(server, "cors_allowed_origins", "*")
    host_server.set_engineio_option(server, "cors_credentials", False)
    headers = dict(server.eio._cors_headers({"REQUEST_METHOD": "GET",
                                             "HTTP_ORIGIN": "https://evil.example"}))
    assert headers["Access-Control-Allow-Origin"] == "https://evil.example"
    assert "Access-Control-Allow-Credentials" not in headers


def test_async_handlers_is_read_at_every_event() -> None:
    server = socketio.Server(async_mode="threading", async_handlers=False)
    threads: List[str] = []
    server.on("where", lambda sid: threads.append(threading.current_thread().name))
    client = WsgiPolling(server)
    sid = connected(client)
    client.post(sid, '42["where"]')
    assert threads == [threading.current_thread().name]
