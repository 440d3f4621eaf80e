"""Posting to a room from outside a socket: CI bots, webhooks, cron jobs, the host app.

:func:`post_message` works inside a prroom server process (through its Socket.IO server,
so every process of a cluster gets it) and from any other process (a Celery task, a script)
through the message queue alone.  Members receive an ordinary ``pr-room-message``.
"""
from __future__ import annotations

import os
import secrets
import time
from typing import Dict, Optional, Tuple

from prroom.core import protocol
from prroom.core.config import SETTINGS_BY_KEY
from prroom.internals.managers import ClusterManager

_publishers: Dict[Tuple[str, str], ClusterManager] = {}


class PostingUnavailable(RuntimeError):
    """Neither a prroom server in this process nor a message queue to reach one."""


def build_message(payload: dict, limits: protocol.Limits = protocol.Limits()) -> dict:
    """Validate ``{pullRequestId, username, message}`` like the socket event does, and build
    the ``pr-room-message`` payload.

    Raises :class:`~prroom.core.protocol.ProtocolError` with the socket event's error codes.
    """
    request = protocol.parse_message_request(payload, limits)
    return {"pullRequestId": request.pull_request_id, "username": request.username,
            "message": request.message, "id": f"post-{secrets.token_hex(8)}",
            "sentAt": int(time.time() * 1000)}


def post_message(pull_request_id: int, username: str, message: str, *, app=None,
                 message_queue: Optional[str] = None,
                 channel: Optional[str] = None) -> dict:
    """Send ``message`` to everyone in pull request ``pull_request_id``'s room as ``username``.

    Uses ``app``'s prroom (or the current app's, inside a Flask app context) when there is
    one; otherwise publishes to ``message_queue`` / ``PRROOM_MESSAGE_QUEUE`` on ``channel`` /
    ``PRROOM_CHANNEL``.  Returns the delivered payload (with its ``id`` and ``sentAt``).
    Raises ProtocolError for invalid input, :class:`PostingUnavailable` when there is no way
    to reach the rooms, and :class:`~prroom.internals.managers.QueueUnavailable` if the queue is down.
    """
    request = {"pullRequestId": pull_request_id, "username": username, "message": message}
    extension = _extension(app)
    if extension is not None:
        return extension.events.post(request)
    url = message_queue or os.environ.get("PRROOM_MESSAGE_QUEUE", "")
    if not url:
        raise PostingUnavailable("no prroom server in this process and no message queue: "
                                 "pass message_queue= or set PRROOM_MESSAGE_QUEUE")
    name = channel or os.environ.get("PRROOM_CHANNEL", "prroom")
    payload = build_message(request)
    publisher = _publishers.get((url, name))
    if publisher is None:
        pubsub = SETTINGS_BY_KEY["PRROOM_QUEUE_PUBSUB"].coerce(
            os.environ.get("PRROOM_QUEUE_PUBSUB", "auto"))
        publisher = _publishers[(url, name)] = ClusterManager(
            url, channel=f"prroom:{name}", room_prefix=protocol.room_name(""), pubsub=pubsub,
            write_only=True)
    publisher.emit(protocol.MESSAGE, payload, namespace="/",
                   room=protocol.room_name(payload["pullRequestId"])).wait()
    return payload


def _extension(app):
    if app is not None:
        return app.extensions.get("prroom")
    from flask import current_app, has_app_context

    if has_app_context():
        return current_app.extensions.get("prroom")
    return None
