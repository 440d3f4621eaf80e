"""Real Socket.IO clients: a thin wrapper over python-socketio's SimpleClient for asserting
what a user sees, and the one factory that opens (and closes) them."""
from __future__ import annotations

import itertools
import os
from typing import Any, Callable, Dict, List, Optional, Union

import socketio

TIMEOUT = 5.0

PRESENCE_EVENTS = ("pr-room-members", "pr-room-user-joined", "pr-room-user-left")

# Each pytest process (and each of its tests) gets pull request ids nobody else uses, so that
# tests sharing a server never hear each other.
_pull_request_ids = itertools.count(1000 + (os.getpid() % 1000) * 1000)


def new_pull_request_id() -> int:
    """A pull request id no other test uses."""
    return next(_pull_request_ids)


class RoomClient:
    """One real Socket.IO connection; events are read in the order the server sent them."""

    def __init__(self, url: str, transports: Optional[List[str]] = None,
                 auth: Any = None, presence: bool = False,
                 headers: Optional[Dict[str, str]] = None) -> None:
        # Presence events are set aside (in presence_log) unless the test is about them,
        # so tests of other behaviour can assert on the exact sequence of what remains.
        self.presence = presence
        self.presence_log: List[list] = []
        # No reconnection: a connection the server dropped stays dropped (a test about
        # reconnecting uses a socketio.Client of its own), and closing a client whose server
        # is gone returns at once.
        self.sio = socketio.SimpleClient(reconnection=False)
        self.sio.connect(url, transports=transports or ["websocket"], auth=auth,
                         headers=headers or {}, wait_timeout=TIMEOUT)

    @property
    def sid(self) -> str:
        """The Socket.IO session id the server gave this connection."""
        return self.sio.sid

    @property
    def transport(self) -> str:
        """``websocket`` or ``polling``: what the connection ended up on."""
        return self.sio.transport

    def call(self, event: str, data: Any = None, timeout: float = TIMEOUT) -> Any:
        """Emit with an ack and return what the server acknowledged."""
        return self.sio.call(event, data, timeout=timeout)

    def emit(self, event: str, data: Any = None) -> None:
        """Fire and forget, as the product doc's clients do."""
        self.sio.emit(event, data)

    def next_event(self, timeout: float = TIMEOUT) -> list:
        """The next event the server sent: ``[name, payload]``."""
        while True:
            received = self.sio.receive(timeout=timeout)
            if self.presence or received[0] not in PRESENCE_EVENTS:
                return received
            self.presence_log.append(received)

    def expect(self, event: str, timeout: float = TIMEOUT) -> Any:
        """Assert the very next event is ``event`` and return its payload."""
        received = self.next_event(timeout)
        assert received[0] == event, f"expected {event!r}, got {received!r}"
        return received[1] if len(received) > 1 else None

    def join(self, pull_request_id: int, username: str) -> dict:
        """Join a room and assert the server accepted it."""
        ack = self.call("join-pr-room", {"pullRequestId": pull_request_id,
                                         "username": username})
        assert ack["ok"] is True, ack
        return ack

    def say(self, pull_request_id: int, username: str, message: str) -> dict:
        """Send a chat message with an ack and assert it was accepted."""
        ack = self.call("send-message-to-pr-room", {"pullRequestId": pull_request_id,
                                                    "username": username,
                                                    "message": message})
        assert ack["ok"] is True, ack
        return ack

    @property
    def connected(self) -> bool:
        """Whether the connection is still up, as far as this client knows."""
        return self.sio.connected

    def close(self) -> None:
        """Disconnect, if still connected."""
        if self.sio.connected:
            self.sio.disconnect()


Server = Any  # anything with a ``url`` (tests.support.servers.ServerProcess), or a URL


class Clients:
    """The client factory: ``connect(server=None, *, transports, auth, presence, headers)``.

    Opens a :class:`RoomClient` to ``server`` (a server process or a URL; by default the one
    this factory was made with) and closes every client it opened at the end of the ``with``
    (or of the test, for the ``connect`` fixture).  ``default`` may be a callable, so that a
    shared server is only started when a test actually connects to it.
    """

    def __init__(self, default: Union[Server, Callable[[], Server], None] = None) -> None:
        self._default = default
        self.opened: List[RoomClient] = []

    def __call__(self, server: Server = None, *, transports: Optional[List[str]] = None,
                 auth: Any = None, presence: bool = False,
                 headers: Optional[Dict[str, str]] = None) -> RoomClient:
        target = server if server is not None else self._default_server()
        url = target if isinstance(target, str) else target.url
        client = RoomClient(url, transports=transports, auth=auth, presence=presence,
                            headers=headers)
        self.opened.append(client)
        return client

    def many(self, count: int, server: Server = None, **options: Any) -> List[RoomClient]:
        """``count`` clients opened alike."""
        return [self(server, **options) for _ in range(count)]

    def _default_server(self) -> Server:
        if self._default is None:
            raise TypeError("no server given and this factory has no default")
        return self._default() if callable(self._default) else self._default

    def close(self) -> None:
        """Close every client opened so far."""
        while self.opened:
            self.opened.pop().close()

    def __enter__(self) -> "Clients":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
