"""A thin wrapper over python-socketio's SimpleClient for asserting what a user sees."""
from __future__ import annotations

from typing import Any, List, Optional

import socketio

TIMEOUT = 5.0

PRESENCE_EVENTS = ("pr-room-members", "pr-room-user-joined", "pr-room-user-left")


class RoomClient:
    """One real Socket.IO connection; events are read in the order the server sent them."""

    def __init__(self, url: str, transports: Optional[List[str]] = None,
                 auth: Any = None, presence: bool = False) -> None:
        # Presence events are set aside (in presence_log) unless the test is about them,
        # so tests of other behaviour can assert on the exact sequence of what remains.
        self.presence = presence
        self.presence_log: List[list] = []
        self.sio = socketio.SimpleClient()
        self.sio.connect(url, transports=transports or ["websocket"], auth=auth,
                         wait_timeout=TIMEOUT)

    @property
    def sid(self) -> str:
        return self.sio.sid

    @property
    def transport(self) -> str:
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
        return self.sio.connected

    def close(self) -> None:
        if self.sio.connected:
            self.sio.disconnect()
