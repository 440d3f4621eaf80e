"""The ``pr-room-message`` payload: built here only, whoever sends it (a socket, a post).

Ids are ``{process}-{n}``: a random prefix per process and a counter, so they are unique
across a cluster without coordination and increase in the order one process accepted them.
"""
from __future__ import annotations

import itertools
import secrets
import time
from typing import Any, Iterator, TypedDict

from prroom.core.protocol import Limits, parse_message_request


class ChatMessage(TypedDict):
    """What every member receives as ``pr-room-message``."""

    pullRequestId: int
    username: str
    message: str
    id: str
    sentAt: int


class PostedMessage(ChatMessage):
    """A :class:`ChatMessage` posted from outside any socket: ``via`` says from where, so a
    page can show it as a bot's, never as a person's."""

    via: str


#: ``via`` of a message posted over HTTP or with :func:`prroom.post_message` / ``prroom post``.
VIA_API = "api"


class MessageIds:
    """A source of message ids unique to this process (``a1b2c3d4-1``, ``a1b2c3d4-2``...)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix or secrets.token_hex(4)
        self._counter: Iterator[int] = itertools.count(1)

    def next(self) -> str:
        """The next id."""
        return f"{self.prefix}-{next(self._counter)}"


def posted_message(ids: MessageIds, request: Any, limits: Limits) -> PostedMessage:
    """A message posted from outside any socket (a bot, the HTTP API, ``prroom post``),
    marked ``via: "api"``.

    ``request`` is ``{pullRequestId, username, message}``, validated as the
    ``send-message-to-pr-room`` event is (raises ProtocolError).
    """
    parsed = parse_message_request(request, limits)
    assert parsed.username is not None  # required: no identity to take it from
    message = chat_message(ids, parsed.pull_request_id, parsed.username, parsed.message)
    return {**message, "via": VIA_API}


def chat_message(ids: MessageIds, pull_request_id: int, username: str,
                 text: str) -> ChatMessage:
    """A new message from ``username`` in the room of ``pull_request_id``, stamped now."""
    return {"pullRequestId": pull_request_id, "username": username, "message": text,
            "id": ids.next(), "sentAt": int(time.time() * 1000)}
