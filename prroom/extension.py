"""``PRRoom``: the Flask extension that wires config, Socket.IO, handlers and blueprint."""
from __future__ import annotations

from typing import Optional

from flask import Flask
from flask_socketio import SocketIO

from .config import DEFAULTS, Settings
from .events import RoomEvents
from .identity import IdentityPolicy, JoinNameIdentity
from .manager import IndexedManager
from .protocol import Limits
from .rooms import RoomRegistry
from .web import blueprint


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
    prroom's settings), and ``identity=`` to replace how sockets are identified.

    After ``init_app``: ``socketio`` (the SocketIO), ``settings`` (validated ``PRROOM_*``
    config), ``registry`` (room state) and ``events`` (the handlers) are set, and the
    extension is ``app.extensions["prroom"]``.
    """

    def __init__(self, app: Optional[Flask] = None, socketio: Optional[SocketIO] = None,
                 identity: Optional[IdentityPolicy] = None) -> None:
        self.socketio = socketio
        self.identity = identity or JoinNameIdentity()
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
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        settings = Settings.from_mapping(app.config)

        socketio = socketio or self.socketio or SocketIO()
        if socketio.server is None:
            options = self._socketio_options(settings)
            socketio.init_app(app, **{key: value for key, value in options.items()
                                      if key not in socketio.server_options})
        self.registry = RoomRegistry(typing_timeout=settings.typing_timeout)
        self.events = RoomEvents(socketio.server, self.registry, self.identity,
                                 Limits(settings.max_username_length,
                                        settings.max_message_length))
        self.events.register()
        app.register_blueprint(blueprint, url_prefix=settings.url_prefix or None)
        app.extensions["prroom"] = self
        self.app, self.socketio, self.settings = app, socketio, settings

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
            "client_manager": IndexedManager(),
            "max_http_buffer_size": settings.max_frame_bytes,
            "ping_interval": settings.ping_interval,
            "ping_timeout": settings.ping_timeout,
            "cors_allowed_origins": origins,
            "path": settings.socketio_path,
        }
