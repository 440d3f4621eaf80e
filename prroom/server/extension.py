"""``PRRoom``: the Flask extension that wires config, Socket.IO, handlers and blueprint."""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional

from flask import Flask
from flask_socketio import SocketIO

from prroom.core.config import DEFAULTS, ConfigError, Settings
from prroom.core.identity import (
    CallableIdentity,
    IdentityPolicy,
    JoinNameIdentity,
    TokenIdentity,
    issue_token,
    with_room_rule,
)
from prroom.core.limits import Rate, SocketLimiter
from prroom.core.presence import create_presence
from prroom.core.protocol import Limits, room_name
from prroom.core.rooms import RoomRegistry
from prroom.internals import socketio_hooks, websocket_writes
from prroom.internals.managers import ClusterManager, IndexedManager
from prroom.server.api import api
from prroom.server.events import Caps, RoomEvents
from prroom.server.flask_commands import commands
from prroom.server.metrics import Metrics
from prroom.server.ops import metrics_view, ops
from prroom.server.web import blueprint

logger = logging.getLogger("prroom")


def resolve_async_mode(setting: str) -> str:
    """``auto`` means gevent when gevent has patched the process (gunicorn, wsgi.py,
    ``python -m prroom``) and threading otherwise (``flask run``, plain scripts)."""
    if setting != "auto":
        return setting
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return "threading"
    return "gevent" if monkey.is_module_patched("socket") else "threading"


class PRRoom:
    """Pull request chat rooms for a Flask app.

    Use ``PRRoom(app)`` or the app-factory form ``rooms = PRRoom(); rooms.init_app(app)``.
    Pass ``socketio=`` to share the host app's own :class:`flask_socketio.SocketIO` (its
    other handlers keep working; if it is not initialised yet, prroom initialises it with
    prroom's settings), and ``identity=`` to replace how sockets are identified altogether
    (otherwise ``PRROOM_AUTH_MODE`` picks a policy).  :meth:`authenticator` and
    :meth:`room_authorizer` are decorators for ``custom`` authentication and per-room rules.

    After ``init_app``: ``socketio`` (the SocketIO), ``settings`` (validated ``PRROOM_*``
    config), ``registry`` (room state) and ``events`` (the handlers) are set, and the
    extension is ``app.extensions["prroom"]``.
    """

    def __init__(self, app: Optional[Flask] = None, socketio: Optional[SocketIO] = None,
                 identity: Optional[IdentityPolicy] = None) -> None:
        self.socketio = socketio
        self.identity = identity
        self._authenticate: Optional[Callable] = None
        self._can_join: Optional[Callable] = None
        self.app: Optional[Flask] = None
        self.settings: Optional[Settings] = None
        self.registry: Optional[RoomRegistry] = None
        self.events: Optional[RoomEvents] = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, socketio: Optional[SocketIO] = None) -> None:
        """Register prroom on ``app``; refuses an app that already has it."""
        if "prroom" in app.extensions:
            raise RuntimeError("prroom is already registered on this Flask app")
        if self.app is not None:
            raise RuntimeError("this PRRoom is already bound to another app; create one "
                               "PRRoom per app")
        if self._authenticate is not None:
            app.config.setdefault("PRROOM_AUTHENTICATE", self._authenticate)
        if self._can_join is not None:
            app.config.setdefault("PRROOM_CAN_JOIN", self._can_join)
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        settings = Settings.from_mapping(app.config)
        self.identity = self.identity or self._identity_policy(app, settings)
        if settings.can_join is not None:
            with_room_rule(self.identity, settings.can_join)
        if not self.identity.authenticates and not app.debug:
            logger.warning("PRROOM_AUTH_MODE=none: anyone who can reach this server can join "
                           "any room under any name; use 'token' or 'custom' in production")

        socketio = socketio or self.socketio or SocketIO()
        if socketio.server is None:
            options = self._socketio_options(settings)
            socketio.init_app(app, **{key: value for key, value in options.items()
                                      if key not in socketio_hooks.options_set_by_host(socketio)})
        if socketio.async_mode == "gevent":
            socketio_hooks.accelerate_gevent_websocket()
            if settings.websocket_writes == "direct":
                websocket_writes.install(socketio.server)
        self.registry = RoomRegistry(typing_timeout=settings.typing_timeout)
        limiter = SocketLimiter(
            {"message": Rate(settings.message_rate, settings.message_burst),
             "typing": Rate(settings.typing_rate, settings.typing_burst),
             "room": Rate(settings.room_rate, settings.room_burst)},
            disconnect_after=settings.rate_limit_disconnect_after)
        self.presence = create_presence(settings.message_queue, settings.channel,
                                        settings.presence_ttl)
        self.metrics = Metrics()
        manager = socketio.server.manager
        if hasattr(manager, "on_delivered"):  # prroom's own managers count deliveries
            manager.on_delivered = self.metrics.record_deliveries
        self.events = RoomEvents(socketio.server, self.registry, self.identity,
                                 Limits(settings.max_username_length,
                                        settings.max_message_length),
                                 limiter,
                                 Caps(settings.max_rooms_per_socket,
                                      settings.max_connections_per_identity,
                                      settings.max_queued_packets),
                                 self.presence, self.metrics)
        self.metrics.watch_state(lambda: self.events.connected, self.registry.room_sizes,
                                 self.queue_up)
        self.events.register()
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix or None)
        app.register_blueprint(api, url_prefix=settings.url_prefix or None)
        app.register_blueprint(ops, url_prefix=settings.url_prefix or None)
        if settings.metrics_path:
            app.add_url_rule(settings.url_prefix + settings.metrics_path, "prroom_metrics",
                             metrics_view)
        app.cli.add_command(commands)
        app.extensions["prroom"] = self
        self.app, self.socketio, self.settings = app, socketio, settings

    def queue_up(self):
        """None when not clustered; else whether the message queue and presence are up."""
        if not self.settings or not self.settings.message_queue:
            return None
        manager = self.socketio.server.manager
        start_listening = getattr(manager, "start_listening", None)
        if start_listening is not None:  # subscribed before the first client, not after
            start_listening()
        return bool(getattr(manager, "queue_healthy", True) and self.presence.healthy())

    def shutdown(self) -> int:
        """Tell this process's clients it is going away and close their connections.

        Called by prroom's gunicorn worker on SIGTERM; call it yourself from other servers.
        Returns the number of connections closed.
        """
        return self.events.shutdown() if self.events is not None else 0

    # -- identity -----------------------------------------------------------------------

    def authenticator(self, function: Callable) -> Callable:
        """Decorator: ``custom`` mode's ``authenticate(auth, request)``; use before init_app.

        Runs in a request context of the connection's request; returns the username (or an
        :class:`~prroom.core.identity.Identity`), or None to refuse the connection.
        """
        self._authenticate = function
        return function

    def room_authorizer(self, function: Callable) -> Callable:
        """Decorator: ``can_join(identity, pull_request_id) -> bool``; use before init_app."""
        self._can_join = function
        return function

    def issue_token(self, username: str, pull_requests: Optional[Iterable[int]] = None) -> str:
        """A token for ``token`` mode, valid ``PRROOM_TOKEN_MAX_AGE`` seconds from now."""
        if self.app is None:
            raise RuntimeError("call init_app() before issuing tokens")
        return issue_token(self._secret_key(self.app, self.settings), username, pull_requests)

    @staticmethod
    def _secret_key(app: Flask, settings: Settings) -> str:
        key = settings.secret_key or app.config.get("SECRET_KEY")
        if not key:
            raise ConfigError("PRROOM_AUTH_MODE='token': expected PRROOM_SECRET_KEY or the "
                              "app's SECRET_KEY to be set")
        return key

    def _identity_policy(self, app: Flask, settings: Settings) -> IdentityPolicy:
        if settings.auth_mode == "token":
            return TokenIdentity(self._secret_key(app, settings), settings.token_max_age)
        if settings.auth_mode == "custom":
            return CallableIdentity(settings.authenticate, app.request_context)
        return JoinNameIdentity()

    @staticmethod
    def _socketio_options(settings: Settings) -> dict:
        origins = settings.cors_allowed_origins
        if origins == ("*",):
            origins = "*"
        elif origins is not None:
            origins = list(origins)
        return {
            "async_mode": resolve_async_mode(settings.async_mode),
            # Handlers run inline on the connection's reader: no greenlet per event, and a
            # client's events are handled in the order it sent them.
            "async_handlers": False,
            "client_manager": (ClusterManager(settings.message_queue,
                                              channel=f"prroom:{settings.channel}",
                                              room_prefix=room_name(""),
                                              pubsub=settings.queue_pubsub)
                               if settings.message_queue else IndexedManager()),
            "max_http_buffer_size": settings.max_frame_bytes,
            "ping_interval": settings.ping_interval,
            "ping_timeout": settings.ping_timeout,
            "cors_allowed_origins": origins,
            "path": settings.socketio_path,
        }
