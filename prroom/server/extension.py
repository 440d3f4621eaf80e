"""``PRRoom``: the Flask extension that wires config, Socket.IO, handlers and blueprints.

As Flask's own extensions do it: one :class:`PRRoom` may serve several apps (an app factory,
tests), everything it builds for one app is that app's :class:`PRRoomState` in
``app.extensions["prroom"]``, and the decorators (:meth:`PRRoom.authenticator`,
:meth:`PRRoom.room_authorizer`) are read when they are used, so they work whenever they
are applied.
"""
from __future__ import annotations

import importlib.util
import logging
import weakref
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from flask import Flask, current_app, has_app_context
from flask_socketio import SocketIO

from prroom.cluster.managers import ClusterManager, IndexedManager
from prroom.cluster.presence import create_presence
from prroom.cluster.recovery_store import RedisRecoveryStore
from prroom.core import logtext
from prroom.core.config import DEFAULTS, ConfigError, Settings
from prroom.core.identity import (
    CallableIdentity,
    Identity,
    IdentityPolicy,
    JoinNameIdentity,
    TokenIdentity,
    issue_token,
    with_room_rule,
)
from prroom.core.limits import Rate, SocketLimiter
from prroom.core.presence import Presence
from prroom.core.protocol import ErrorCode, Limits, ProtocolError
from prroom.core.rooms import RoomRegistry
from prroom.diagnostics import gevent_traps, loop_monitor
from prroom.diagnostics.loop_monitor import LoopMonitor
from prroom.internals import (
    host_server,
    packet_codec,
    redis_sockets,
    seams,
    socketio_hooks,
    stacks,
)
from prroom.server import host_socketio
from prroom.server.api import api
from prroom.server.events import Caps, RoomEvents
from prroom.server.flask_commands import commands
from prroom.server.metrics import Metrics
from prroom.server.ops import metrics_view, ops
from prroom.server.recovery import Recovery
from prroom.server.web import blueprint
from prroom.transport import event_path
from prroom.transport import frames as websocket_frames
from prroom.transport import writes as websocket_writes

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


def recovery_of(settings: Settings) -> Recovery:
    """The recovery a server with ``settings`` runs (``window`` 0: none)."""
    return Recovery(settings.recovery_window, settings.recovery_buffer,
                    settings.recovery_sessions, settings.presence_grace)


def recovery_store_of(settings: Settings) -> Optional[RedisRecoveryStore]:
    """Clustered mode with recovery on: the deployment's sessions and packets in Redis."""
    if not (settings.recovery_window and settings.message_queue):
        return None
    return RedisRecoveryStore(settings.message_queue, settings.channel,
                              settings.recovery_window, settings.recovery_buffer,
                              settings.recovery_sessions)


class Disconnected(NamedTuple):
    """What :meth:`PRRoom.disconnect_identity` did."""

    #: connections closed on this process
    closed: int
    #: whether every other process was told (False: one process, nothing to tell)
    published: bool


class PRRoomState:
    """Everything prroom holds for one Flask app: ``app.extensions["prroom"]``."""

    def __init__(self, extension: "PRRoom", app: Flask, settings: Settings,
                 socketio: SocketIO, identity: IdentityPolicy) -> None:
        self.extension = extension
        self.app = app
        self.settings = settings
        self.socketio = socketio
        self.identity = identity
        self.registry = RoomRegistry(typing_timeout=settings.typing_timeout)
        self.presence: Presence = create_presence(settings.message_queue, settings.channel,
                                                  settings.presence_ttl)
        self.metrics = Metrics()
        #: one bucket per bearer token of the HTTP posting endpoint
        self.post_limiter = SocketLimiter(
            {"post": Rate(settings.post_rate, settings.post_burst)}, disconnect_after=10 ** 9)
        self.loop_monitor: Optional[LoopMonitor] = None
        self.traps: List[str] = []
        self.events = RoomEvents(
            socketio.server, registry=self.registry, identity=identity,
            limits=Limits.of(settings), limiter=socket_limiter(settings),
            caps=Caps.of(settings), presence=self.presence, metrics=self.metrics,
            recovery=recovery_of(settings), recovery_store=recovery_store_of(settings))

    def queue_up(self) -> Optional[bool]:
        """None when not clustered; else whether the message queue and presence are up."""
        if not self.settings.message_queue:
            return None
        manager = self.socketio.server.manager
        start_listening = getattr(manager, "start_listening", None)
        if start_listening is not None:  # subscribed before the first client, not after
            start_listening()
        return bool(getattr(manager, "queue_healthy", True) and self.presence.healthy())

    def seam_statuses(self) -> Dict[str, str]:
        """Each library seam's status at start (README "Library internals")."""
        return {outcome.seam.name: outcome.status
                for outcome in seams.report(self.socketio.server)}

    def shutdown(self) -> int:
        """Tell this app's clients it is going away and close their connections.

        Called by prroom's gunicorn worker on SIGTERM; call it yourself from other servers.
        Returns the number of connections closed.
        """
        return self.events.shutdown()

    def issue_token(self, username: str, pull_requests: Optional[Iterable[int]] = None) -> str:
        """A token for ``token`` mode, valid ``PRROOM_TOKEN_MAX_AGE`` seconds from now."""
        return issue_token(secret_key(self.app, self.settings), username, pull_requests)

    def disconnect_identity(self, username: str) -> Disconnected:
        """Close every connection of ``username`` on every process of the deployment.

        Each gets ``pr-room-error`` ``identity-revoked``, then a Socket.IO disconnect (the
        client does not reconnect by itself); in ``token`` mode the tokens signed until now
        for that name are refused.  Raises QueueUnavailable if the other processes could
        not be told (this one's connections are closed all the same).
        """
        closed, published = self.events.identities.disconnect_identity(username)
        return Disconnected(closed, published)


def watch_the_event_loop(app: Flask, state: PRRoomState) -> None:
    """Under gevent: name the traps present now, and watch for blocks from now on."""
    seams.apply("loop-monitor-stacks", stacks.available, server=state.socketio.server)
    state.traps = gevent_traps.find_traps()
    for trap in state.traps:
        logger.warning("gevent trap: %s", trap)
    app.wsgi_app = label_requests(app.wsgi_app)  # type: ignore[method-assign]
    threshold = state.settings.blocking_threshold / 1000
    if threshold > 0:
        state.loop_monitor = loop_monitor.monitor_of_hub(threshold,
                                                         state.metrics.record_loop_block)
        monitor = state.loop_monitor
        state.metrics.watch_loop(lambda: monitor.last_lag, monitor.worst_recent_lag)


def label_requests(wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
    """WSGI middleware: label each request's greenlet (``GET /path``) for the loop monitor."""

    def labelled(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        loop_monitor.serving(environ.get("REQUEST_METHOD", "-"), environ.get("PATH_INFO", "-"))
        try:
            return wsgi_app(environ, start_response)
        finally:
            loop_monitor.served()
    return labelled


def accepted_missing(settings: Settings) -> Tuple[str, ...]:
    """``PRROOM_ACCEPT_MISSING``'s seam names; ConfigError for a name that is no protection."""
    try:
        return seams.parse_accepted(settings.accept_missing)
    except ValueError as err:
        raise ConfigError(f"PRROOM_ACCEPT_MISSING: {err}") from None


def install_speed_seams(socketio: SocketIO, settings: Settings,
                        accepted: Tuple[str, ...]) -> None:
    """The seams installed on the server before prroom's handlers: the codec, the transport's
    fast paths, and the cluster managers' reaches (each with its status for the report)."""
    server = socketio.server
    live = (server, server.eio)

    def seam(name: str, install: Callable[[], Any]) -> seams.Outcome:
        try:
            return seams.apply(name, install, server=server, objects=live, accepted=accepted)
        except seams.SeamRefused as refused:
            raise ConfigError(str(refused)) from None

    seams.warn_about_newer_releases()
    seam("cluster-managers", lambda: True)  # prroom's managers subclass what it names
    if importlib.util.find_spec("redis") is not None:
        seam("redis-raw-reads", redis_sockets.install)
    else:
        seams.off("redis-raw-reads", "redis-py is not installed", server)
    seam("packet-codec", lambda: packet_codec.install(server))
    if socketio.async_mode != "gevent":
        for name in ("refused-body-unread", "frame-size-bound", "frame-unmasking",
                     "direct-writes", "ping-wheel", "event-path"):
            seams.off(name, f"async mode {socketio.async_mode}", server)
        return
    seam("refused-body-unread", lambda: True)  # used per request (prroom.server.api)
    seam("frame-size-bound", lambda: websocket_frames.install(server.eio))  # 1009 at the header
    seam("frame-unmasking", socketio_hooks.accelerate_gevent_websocket)
    if settings.websocket_writes != "direct":
        seams.off("direct-writes", "PRROOM_WEBSOCKET_WRITES=library", server)
        seams.off("ping-wheel", "PRROOM_WEBSOCKET_WRITES=library", server)
    else:
        wheel = seam("ping-wheel", lambda: True).status == seams.INSTALLED
        seam("direct-writes", lambda: websocket_writes.install(server, ping_wheel=wheel))
    if settings.event_path == "direct":
        seam("event-path", lambda: event_path.install(server))
    else:
        seams.off("event-path", "PRROOM_EVENT_PATH=library", server)


def socket_limiter(settings: Settings) -> SocketLimiter:
    """The per-socket rate limits of ``settings``."""
    return SocketLimiter(
        {"message": Rate(settings.message_rate, settings.message_burst),
         "typing": Rate(settings.typing_rate, settings.typing_burst),
         "room": Rate(settings.room_rate, settings.room_burst)},
        disconnect_after=settings.rate_limit_disconnect_after)


def secret_key(app: Flask, settings: Settings) -> str:
    """The key that signs tokens: ``PRROOM_SECRET_KEY``, else the app's ``SECRET_KEY``."""
    key = settings.secret_key or app.config.get("SECRET_KEY")
    if not key:
        raise ConfigError("PRROOM_AUTH_MODE='token': expected PRROOM_SECRET_KEY or the "
                          "app's SECRET_KEY to be set")
    return str(key)


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
