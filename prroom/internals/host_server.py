"""Reading and changing a Socket.IO server the host app built before prroom was added.

A host that called ``socketio.init_app(app)`` itself hands prroom a finished
``socketio.Server``: its options were consumed by the constructors and none of them has a
public setter.  python-socketio (5.x) keeps the client manager in ``server.manager``, gives
it the server with ``manager.set_server(server)`` in its constructor and calls
``manager.initialize()`` once, on the first Engine.IO connect (``manager_initialized``);
``async_handlers`` is read at every event.  python-engineio (4.x) reads
``max_http_buffer_size``, ``ping_interval`` (with ``ping_interval_grace_period``),
``ping_timeout``, ``cors_allowed_origins`` and ``cors_credentials`` from its server's
attributes at each request or packet.  This module is the one place that reads and writes
them; ``tests/internals/test_host_server.py`` fails if a release moves them.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

import socketio

#: The Engine.IO options prroom reads and sets, as python-engineio names its attributes.
ENGINEIO_OPTIONS = ("max_http_buffer_size", "ping_interval", "ping_timeout",
                    "cors_allowed_origins", "cors_credentials")


def host_options(socketio_ext: Any) -> Mapping[str, Any]:
    """The options the host passed to its ``SocketIO(...)`` / ``init_app(...)`` itself.

    Flask-SocketIO keeps them in ``server_options`` (``message_queue`` turned into a
    ``client_manager`` there too); ``path``, ``channel`` and ``manage_session`` are removed.
    """
    return dict(getattr(socketio_ext, "server_options", None) or {})


def has_stock_manager(server: Any) -> bool:
    """Whether ``server`` runs python-socketio's default, in-process client manager."""
    return type(server.manager) is socketio.Manager


def replace_manager(server: Any, manager: Any) -> None:
    """Make ``manager`` the client manager of ``server``, as its constructor would have.

    Only before any client connected (the old manager's rooms are not carried over);
    if the server already initialised its manager, the new one is initialised now.
    """
    manager.set_server(server)
    server.manager = manager
    if getattr(server, "manager_initialized", False):
        manager.initialize()


def async_handlers(server: Any) -> bool:
    """Whether ``server`` runs each event's handler in a task of its own."""
    return bool(server.async_handlers)


def set_async_handlers(server: Any, value: bool) -> None:
    """Run event handlers inline on the connection's reader (False) or in tasks (True)."""
    server.async_handlers = value


def engineio_options(server: Any) -> Dict[str, Any]:
    """The current value of each of :data:`ENGINEIO_OPTIONS` on ``server``'s Engine.IO server."""
    eio = server.eio
    return {name: getattr(eio, name) for name in ENGINEIO_OPTIONS}


def set_engineio_option(server: Any, name: str, value: Any) -> None:
    """Set one of :data:`ENGINEIO_OPTIONS` on ``server``'s Engine.IO server."""
    if name not in ENGINEIO_OPTIONS:
        raise KeyError(name)
    eio = server.eio
    if name == "ping_interval":
        # the constructor splits an (interval, grace) tuple; prroom passes a plain number
        eio.ping_interval_grace_period = 0
    setattr(eio, name, value)
