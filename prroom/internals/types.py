"""The library objects prroom touches, described by what prroom uses of them.

python-socketio, python-engineio and gevent ship no type information: to mypy their
objects are ``Any``, and a typo in a method name or a wrong argument would pass unseen.
These :class:`~typing.Protocol` classes name the public surface prroom relies on, so the
handlers, the broadcaster, recovery, the sweepers and the adapters are checked against it;
the test doubles in ``tests/`` implement the same protocols.  The private names the seams
reach are not here: each is declared, and checked at start, in :mod:`prroom.internals.seams`
(the functions that reach them take the library object untyped).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional, Protocol


class EngineIOSocket(Protocol):
    """python-engineio's ``Socket``: one Engine.IO session."""

    closed: bool

    def close(self, wait: bool = True, abort: bool = False,
              reason: Optional[str] = None) -> None:
        """Close the transport (``abort``: drop it, without an Engine.IO CLOSE)."""


class EngineIOServer(Protocol):
    """python-engineio's ``Server``: the Engine.IO sessions under a Socket.IO server."""

    @property
    def sockets(self) -> Mapping[str, Any]:
        """The open sessions by id (:class:`EngineIOSocket`; a socket's ``queue`` is
        python-engineio's, or prroom's direct writer)."""

    @property
    def handlers(self) -> Dict[str, Callable[..., Any]]:
        """Engine.IO event handlers (``connect``, ``message``, ``disconnect``)."""


class ClientManager(Protocol):
    """python-socketio's client manager: which connection is which session."""

    def eio_sid_from_sid(self, sid: str, namespace: str) -> Optional[str]:
        """The Engine.IO session of a Socket.IO connection (None if gone)."""

    def sid_from_eio_sid(self, eio_sid: str, namespace: str) -> Optional[str]:
        """The Socket.IO connection of an Engine.IO session on ``namespace``."""


class SocketIOServer(Protocol):
    """python-socketio's ``Server``: the calls prroom makes on it."""

    @property
    def eio(self) -> EngineIOServer:
        """The Engine.IO server under it."""

    @property
    def manager(self) -> ClientManager:
        """Its client manager (prroom's clustered one has more to it: read that through
        :mod:`prroom.server.recoverable` and :mod:`prroom.cluster.managers`)."""

    @property
    def handlers(self) -> Dict[str, Dict[str, Callable[..., Any]]]:
        """Decorator-registered handlers: namespace -> event -> handler."""

    @property
    def namespace_handlers(self) -> Dict[str, Any]:
        """Class-based namespaces (``socketio.Namespace``) by namespace."""

    def on(self, event: str, handler: Optional[Callable[..., Any]] = None,
           namespace: Optional[str] = None) -> Any:
        """Register ``handler`` for ``event`` on ``namespace``."""

    def emit(self, event: str, data: Any = None, to: Optional[str] = None,
             room: Optional[str] = None, skip_sid: Any = None,
             namespace: Optional[str] = None, callback: Optional[Callable[..., Any]] = None,
             ignore_queue: bool = False) -> None:
        """Send ``event`` to a room or one connection, on every process unless
        ``ignore_queue``."""

    def enter_room(self, sid: str, room: str, namespace: Optional[str] = None) -> None:
        """Put a connection in a room."""

    def leave_room(self, sid: str, room: str, namespace: Optional[str] = None) -> None:
        """Take a connection out of a room."""

    def disconnect(self, sid: str, namespace: Optional[str] = None,
                   ignore_queue: bool = False) -> None:
        """Send a Socket.IO DISCONNECT to a connection."""

    def start_background_task(self, target: Callable[..., Any], *args: Any,
                              **kwargs: Any) -> Any:
        """Run ``target`` in a greenlet (or thread)."""

    def sleep(self, seconds: float = 0) -> None:
        """Sleep cooperatively."""
