"""``PRRoom``: the Flask extension that wires config, Socket.IO, handlers and blueprints.

As Flask's own extensions do it: one :class:`PRRoom` may serve several apps (an app factory,
tests), everything it builds for one app is that app's :class:`PRRoomState` in
``app.extensions["prroom"]``, and the decorators (:meth:`PRRoom.authenticator`,
:meth:`PRRoom.room_authorizer`) are read when they are used, so they work whenever they
are applied.  The state and how it is built from the settings are in
:mod:`prroom.server.state`; what is done to the server before the handlers, in
:mod:`prroom.server.startup` (both re-exported here).
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional

from flask import Flask, current_app, has_app_context
from flask_socketio import SocketIO

from prroom.cluster.managers import ClusterManager
from prroom.cluster.room_index import IndexedManager
from prroom.core import logtext
from prroom.core.config import DEFAULTS, ConfigError, Settings
from prroom.core.identity import (
    CallableIdentity,
    Identity,
    IdentityPolicy,
    JoinNameIdentity,
    TokenIdentity,
    with_room_rule,
)
from prroom.core.presence import Presence
from prroom.core.protocol import ErrorCode, ProtocolError
from prroom.core.rooms import RoomRegistry
from prroom.internals import host_server, seams, socketio_hooks
from prroom.server import host_socketio
from prroom.server.api import api
from prroom.server.events import RoomEvents
from prroom.server.flask_commands import commands
from prroom.server.metrics import Metrics
from prroom.server.ops import metrics_view, ops
from prroom.server.startup import (
    accepted_missing,
    install_speed_seams,
    label_requests,
    resolve_async_mode,
    watch_the_event_loop,
)
from prroom.server.state import (
    Disconnected,
    PRRoomState,
    recovery_of,
    recovery_store_of,
    secret_key,
    socket_limiter,
)
from prroom.server.web import blueprint

__all__ = ["PRRoom", "PRRoomState", "Disconnected", "resolve_async_mode", "recovery_of",
           "recovery_store_of", "socket_limiter", "secret_key", "accepted_missing",
           "install_speed_seams", "label_requests", "watch_the_event_loop"]

logger = logging.getLogger("prroom")


class PRRoom:
    """Pull request chat rooms for a Flask app.

    Use ``PRRoom(app)`` or the app-factory form ``rooms = PRRoom(); rooms.init_app(app)``
    (one ``PRRoom`` may be initialised on several apps).  Pass ``socketio=`` to share the
    host app's own :class:`flask_socketio.SocketIO` (its other handlers keep working; if it
    is not initialised yet, prroom initialises it with prroom's settings), and ``identity=``
    to replace how sockets are identified altogether (otherwise ``PRROOM_AUTH_MODE`` picks a
    policy).  :meth:`authenticator` and :meth:`room_authorizer` are decorators for ``custom``
    authentication and per-room rules; they may be applied before or after ``init_app``.

    The app's :class:`PRRoomState` is ``app.extensions["prroom"]``; ``settings``,
    ``socketio``, ``registry``, ``events``, ``presence`` and ``metrics`` here are the current
    app's (or the only app's, outside an app context).
    """

    def __init__(self, app: Optional[Flask] = None, socketio: Optional[SocketIO] = None,
                 identity: Optional[IdentityPolicy] = None) -> None:
        self._socketio = socketio
        self._identity = identity
        self._authenticate: Optional[Callable[[Any, Any], Any]] = None
        self._can_join: Optional[Callable[[Optional[Identity], int], bool]] = None
        self._apps: List["weakref.ReferenceType[Flask]"] = []
        # The direct form ``PRRoom(Flask(...))`` may be the only reference to its app; keep it
        # alive, as Flask-SQLAlchemy's direct form does. init_app() holds apps weakly.
        self._direct_app = app
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, socketio: Optional[SocketIO] = None) -> None:
        """Register prroom on ``app``; refuses an app that already has it."""
        if "prroom" in app.extensions:
            raise RuntimeError("prroom is already registered on this Flask app")
        logtext.install()  # client text in log lines escaped, whatever the host's logging
        # what the host chose itself, before defaults fill the config: see host_socketio
        prroom_set = frozenset(key for key in DEFAULTS if app.config.get(key) is not None)
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        config = dict(app.config)
        if config.get("PRROOM_AUTHENTICATE") is None:
            # the decorator, read when a connection arrives (it may come after init_app)
            config["PRROOM_AUTHENTICATE"] = self._authenticate_by_decorator
        settings = Settings.from_mapping(config)
        identity = self._identity or self._identity_policy(app, settings)
        with_room_rule(identity, self._room_rule(settings))
        if not identity.authenticates and not app.debug:
            logger.warning("PRROOM_AUTH_MODE=none: anyone who can reach this server can join "
                           "any room under any name; use 'token' or 'custom' in production")

        socketio = socketio or self._socketio or SocketIO()
        host_set = socketio_hooks.options_set_by_host(socketio)
        host = host_server.host_options(socketio)  # a copy: init_app below adds prroom's
        options = self._socketio_options(settings)
        if socketio.server is None:
            if "client_manager" not in host_set and "message_queue" not in host_set:
                options["client_manager"] = self._client_manager(settings)
            socketio.init_app(app, **{key: value for key, value in options.items()
                                      if key not in host_set})
        accepted = accepted_missing(settings)
        server = socketio.server
        try:
            adopting = seams.apply("host-server", lambda: True, server=server,
                                   objects=(server, server.eio), accepted=accepted)
        except seams.SeamRefused as refused:
            raise ConfigError(str(refused)) from None
        if adopting.status == seams.INSTALLED:
            host_socketio.adopt(server, host, options, settings, prroom_set,
                                lambda: self._client_manager(settings))
        install_speed_seams(socketio, settings, accepted)
        state = PRRoomState(self, app, settings, socketio, identity)
        if socketio.async_mode == "gevent":
            watch_the_event_loop(app, state)
        manager = socketio.server.manager
        if hasattr(manager, "on_delivered"):  # prroom's own managers count deliveries
            manager.on_delivered = state.metrics.record_deliveries
        send_via = getattr(state.presence, "send_via", None)
        if send_via is not None and isinstance(manager, ClusterManager) and \
                manager.redis_url == settings.message_queue:
            # presence shares the publisher's pipelined connection: a join's count and
            # roster ride in the same write as whatever else that loop turn sends
            send_via(manager.publisher.call)
            store = state.events.resume.shared if state.events.resume else None
            if store is not None:  # recovery's calls too
                store.send_via(manager.publisher.call)
        state.metrics.watch_state(lambda: state.events.connected, state.registry.room_sizes,
                                  state.queue_up)
        if state.events.resume is not None:
            state.metrics.watch_recovery(state.events.resume.stored_sessions,
                                         state.events.resume.buffered_packets)
        try:
            state.events.register(accepted)
        except seams.SeamRefused as refused:
            raise ConfigError(str(refused)) from None
        state.metrics.watch_seams(lambda: seams.report(socketio.server))
        prefix = settings.url_prefix or None
        app.register_blueprint(blueprint, url_prefix=prefix)
        app.register_blueprint(api, url_prefix=prefix)
        app.register_blueprint(ops, url_prefix=prefix)
        if settings.metrics_path:
            app.add_url_rule(settings.url_prefix + settings.metrics_path, "prroom_metrics",
                             metrics_view)
        app.cli.add_command(commands)
        app.extensions["prroom"] = state
        self._apps.append(weakref.ref(app))

    # -- the current app's state ------------------------------------------------------

    def state(self, app: Optional[Flask] = None) -> PRRoomState:
        """``app``'s state; by default the current app's, or the only app's."""
        if app is None and has_app_context():
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        if app is None:
            apps = [bound for bound in (ref() for ref in self._apps) if bound is not None]
            if len(apps) != 1:
                raise RuntimeError("this PRRoom serves several apps (or none yet): use it "
                                   "inside an app context, or pass the app")
            app = apps[0]
        state = app.extensions.get("prroom")
        if not isinstance(state, PRRoomState) or state.extension is not self:
            raise RuntimeError("this PRRoom is not initialised on that app: call init_app()")
        return state

    @property
    def settings(self) -> Settings:
        """The app's validated ``PRROOM_*`` settings."""
        return self.state().settings

    @property
    def socketio(self) -> Optional[SocketIO]:
        """The app's SocketIO (before ``init_app``: the one passed in, if any)."""
        if not self._apps:
            return self._socketio
        return self.state().socketio

    @property
    def app(self) -> Optional[Flask]:
        """The app this PRRoom serves, when it serves exactly one (else None)."""
        apps = [ref() for ref in self._apps if ref() is not None]
        return apps[0] if len(apps) == 1 else None

    @property
    def registry(self) -> RoomRegistry:
        """The app's room state."""
        return self.state().registry

    @property
    def events(self) -> RoomEvents:
        """The app's Socket.IO handlers."""
        return self.state().events

    @property
    def presence(self) -> Presence:
        """The app's presence backend."""
        return self.state().presence

    @property
    def metrics(self) -> Metrics:
        """The app's metrics."""
        return self.state().metrics

    @property
    def identity(self) -> IdentityPolicy:
        """How the app's connections are identified."""
        return self.state().identity

    def queue_up(self) -> Optional[bool]:
        """None when not clustered; else whether the message queue and presence are up."""
        return self.state().queue_up()

    def shutdown(self) -> int:
        """Close the app's connections with a goodbye (see :meth:`PRRoomState.shutdown`)."""
        return self.state().shutdown()

    def disconnect_identity(self, username: str) -> Disconnected:
        """Disconnect ``username`` everywhere (see :meth:`PRRoomState.disconnect_identity`)."""
        return self.state().disconnect_identity(username)

    def issue_token(self, username: str, pull_requests: Optional[Iterable[int]] = None) -> str:
        """A token for ``token`` mode, valid ``PRROOM_TOKEN_MAX_AGE`` seconds from now."""
        if not self._apps:
            raise RuntimeError("call init_app() before issuing tokens")
        return self.state().issue_token(username, pull_requests)

    # -- identity -----------------------------------------------------------------------

    def authenticator(self, function: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """Decorator: ``custom`` mode's ``authenticate(auth, request)``.

        Runs in a request context of the connection's request; returns the username (or an
        :class:`~prroom.core.identity.Identity`), or None to refuse the connection.
        ``PRROOM_AUTHENTICATE``, when set, takes precedence.
        """
        self._authenticate = function
        return function

    def room_authorizer(self, function: Callable[[Optional[Identity], int], bool]
                        ) -> Callable[[Optional[Identity], int], bool]:
        """Decorator: ``can_join(identity, pull_request_id) -> bool``, checked at every join
        on top of ``PRROOM_CAN_JOIN`` and a token's scope."""
        self._can_join = function
        return function

    def _authenticate_by_decorator(self, auth: Any, request: Any) -> Any:
        if self._authenticate is None:
            logger.error("PRROOM_AUTH_MODE=custom but no authenticator: set "
                         "PRROOM_AUTHENTICATE or decorate a function with "
                         "@rooms.authenticator; refusing connections")
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "authentication is not configured")
        return self._authenticate(auth, request)

    def _room_rule(self, settings: Settings) -> Callable[[Optional[Identity], int], bool]:
        configured = settings.can_join

        def can_join(identity: Optional[Identity], pull_request_id: int) -> bool:
            if configured is not None and not configured(identity, pull_request_id):
                return False
            decorated = self._can_join
            return decorated is None or bool(decorated(identity, pull_request_id))
        return can_join

    def _identity_policy(self, app: Flask, settings: Settings) -> IdentityPolicy:
        if settings.auth_mode == "token":
            return TokenIdentity(secret_key(app, settings), settings.token_max_age)
        if settings.auth_mode == "custom":
            assert settings.authenticate is not None
            return CallableIdentity(settings.authenticate, app.request_context)
        return JoinNameIdentity()

    @staticmethod
    def _client_manager(settings: Settings) -> Any:
        """The client manager prroom runs on: clustered over Redis, or in-process."""
        if settings.message_queue:
            return ClusterManager.of_deployment(settings.message_queue, settings.channel,
                                                pubsub=settings.queue_pubsub)
        return IndexedManager()

    @staticmethod
    def _socketio_options(settings: Settings) -> Dict[str, Any]:
        origins: Any = settings.cors_allowed_origins
        if origins == ("*",):
            origins = "*"
        elif origins is not None:
            origins = list(origins)
        return {
            "async_mode": resolve_async_mode(settings.async_mode),
            # Handlers run inline on the connection's reader: no greenlet per event, and a
            # client's events are handled in the order it sent them.
            "async_handlers": False,
            "max_http_buffer_size": settings.max_frame_bytes,
            "ping_interval": settings.ping_interval,
            "ping_timeout": settings.ping_timeout,
            "cors_allowed_origins": origins,
            # a page on any origin must not ride its visitors' cookies (see Security)
            "cors_credentials": origins != "*",
            "path": settings.socketio_path,
        }
