"""A host's already-built SocketIO: prroom applies what it needs, or refuses in one line."""
# PRRoom.socketio is Optional (None before init_app): these tests read it after.
# mypy: disable-error-code="union-attr"
from __future__ import annotations

import logging
from typing import Any

import pytest
import socketio
from flask import Flask
from flask_socketio import SocketIO

from prroom import PRRoom
from prroom.cluster.managers import ClusterManager
from prroom.cluster.room_index import IndexedManager
from prroom.core.config import ConfigError

QUEUE = "redis://127.0.0.1:1/0"  # never connected to in these tests


def readme_example(socketio_options: Any = None, **config: Any) -> PRRoom:
    """docs/flask.md's "Inside an existing Flask app": the host initialises its SocketIO first."""
    app = Flask(__name__)
    app.config.update(config)
    host = SocketIO()
    host.init_app(app, async_mode="threading", **(socketio_options or {}))
    rooms = PRRoom()
    rooms.init_app(app, socketio=host)
    return rooms


def test_readme_example_gets_prroom_manager_frame_limit_inline_handlers_and_pings() -> None:
    rooms = readme_example(PRROOM_MESSAGE_QUEUE=QUEUE, PRROOM_MAX_FRAME_BYTES=70000,
                           PRROOM_PING_INTERVAL=7, PRROOM_PING_TIMEOUT=3)
    server = rooms.socketio.server
    assert isinstance(server.manager, ClusterManager) and server.manager.server is server
    assert server.manager.redis_url == QUEUE
    assert server.async_handlers is False
    assert server.eio.max_http_buffer_size == 70000
    assert (server.eio.ping_interval, server.eio.ping_timeout) == (7, 3)
    assert server.eio.cors_allowed_origins is None


def test_readme_example_without_queue_gets_the_indexed_manager() -> None:
    server = readme_example().socketio.server
    assert type(server.manager) is IndexedManager
    assert server.eio.max_http_buffer_size == 65536


def test_host_message_queue_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^the host's SocketIO sets message_queue "
                                          r"\(RedisManager\).*set PRROOM_MESSAGE_QUEUE"):
        readme_example({"message_queue": QUEUE}, PRROOM_MESSAGE_QUEUE=QUEUE)
    with pytest.raises(ConfigError, match="message_queue"):
        readme_example({"message_queue": QUEUE})  # prroom would not be clustered at all


def test_host_client_manager_is_refused_unless_it_is_prroom_own() -> None:
    with pytest.raises(ConfigError, match=r"^the host's SocketIO sets client_manager "
                                          r"\(RedisManager\)"):
        readme_example({"client_manager": socketio.RedisManager(QUEUE)})
    with pytest.raises(ConfigError, match="client_manager"):  # not clustered, queue asked
        readme_example({"client_manager": IndexedManager()}, PRROOM_MESSAGE_QUEUE=QUEUE)
    manager = IndexedManager()
    assert readme_example({"client_manager": manager}).socketio.server.manager is manager
    # python-socketio's default manager passed explicitly is still the default
    stock = readme_example({"client_manager": socketio.Manager()}).socketio.server
    assert type(stock.manager) is IndexedManager


def test_host_async_handlers_true_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^the host's SocketIO sets async_handlers=True.*"
                                          r"remove async_handlers"):
        readme_example({"async_handlers": True})
    assert readme_example({"async_handlers": False}).socketio.server.async_handlers is False


def test_host_choices_are_kept_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="prroom"):
        server = readme_example({"max_http_buffer_size": 100_000, "ping_interval": 5}
                                ).socketio.server
    assert server.eio.max_http_buffer_size == 100_000 and server.eio.ping_interval == 5
    assert server.eio.ping_timeout == 20  # left to prroom: its default
    kept = [r.getMessage() for r in caplog.records if "kept" in r.getMessage()]
    assert kept == ["the host's SocketIO sets max_http_buffer_size=100000: kept "
                    "(PRROOM_MAX_FRAME_BYTES is not applied)",
                    "the host's SocketIO sets ping_interval=5: kept (PRROOM_PING_INTERVAL "
                    "is not applied)"]


def test_host_choice_against_an_explicit_prroom_setting_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^the host's SocketIO sets ping_timeout=9 but "
                                          r"PRROOM_PING_TIMEOUT asks for 3.0: remove one"):
        readme_example({"ping_timeout": 9}, PRROOM_PING_TIMEOUT=3)
    # the same value twice is no conflict
    assert readme_example({"ping_timeout": 3}, PRROOM_PING_TIMEOUT=3)


def test_uninitialised_host_socketio_gets_the_same_checks() -> None:
    app = Flask(__name__)
    with pytest.raises(ConfigError, match="async_handlers=True"):
        PRRoom(app, socketio=SocketIO(async_mode="threading", async_handlers=True))


def test_any_origin_never_sends_credentials() -> None:
    server = readme_example(PRROOM_CORS_ALLOWED_ORIGINS="*").socketio.server
    assert server.eio.cors_allowed_origins == "*" and server.eio.cors_credentials is False
    with pytest.raises(ConfigError, match="cors_credentials=True with any origin"):
        readme_example({"cors_allowed_origins": "*", "cors_credentials": True})
    own = PRRoom(_app(PRROOM_CORS_ALLOWED_ORIGINS="*")).socketio
    assert own is not None and own.server.eio.cors_credentials is False
    listed = readme_example(PRROOM_CORS_ALLOWED_ORIGINS="https://a.example").socketio.server
    assert listed.eio.cors_credentials is True  # a listed origin may use cookies


def _app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config, PRROOM_ASYNC_MODE="threading")
    return app


def test_host_any_origin_with_cookie_auth_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^the host's SocketIO sets cors_allowed_origins='\*' "
                                          r"with PRROOM_AUTH_MODE='custom'"):
        readme_example({"cors_allowed_origins": "*"}, PRROOM_AUTH_MODE="custom",
                       PRROOM_AUTHENTICATE=lambda auth, request: "ann")
