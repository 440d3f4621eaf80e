"""Posting to a room from outside a socket: CI bots, webhooks, cron jobs, the host app.

:func:`post_message` works inside a prroom server process (through its Socket.IO server,
so every process of a cluster gets it) and from any other process (a Celery task, a script)
through the message queue alone.  Members receive a ``pr-room-message`` marked
``via: "api"``, whatever the path (HTTP, this function, ``prroom post``).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from flask import Flask, current_app, has_app_context

from prroom.cluster.managers import ClusterManager
from prroom.core import protocol
from prroom.core.config import settings_from_environ
from prroom.core.messages import MessageIds, PostedMessage, posted_message

_publishers: Dict[Tuple[str, str], ClusterManager] = {}
_message_ids = MessageIds()  # posts from a process that is not a server


class PostingUnavailable(RuntimeError):
    """Neither a prroom server in this process nor a message queue to reach one."""


def post_message(pull_request_id: int, username: str, message: str, *,
                 app: Optional[Flask] = None, message_queue: Optional[str] = None,
                 channel: Optional[str] = None) -> PostedMessage:
    """Send ``message`` to everyone in pull request ``pull_request_id``'s room as ``username``.

    Uses ``app``'s prroom (or the current app's, inside a Flask app context) when there is
    one; otherwise publishes to ``message_queue`` / ``PRROOM_MESSAGE_QUEUE`` on ``channel`` /
    ``PRROOM_CHANNEL``, validated with the ``PRROOM_*`` limits of this process's environment
    (the server's own, when it shares that environment).  Returns the delivered payload (with
    its ``id``, ``sentAt`` and ``via: "api"``: pages show it as a bot's).  Raises
    ProtocolError for invalid input,
    :class:`PostingUnavailable` when there is no way to reach the rooms, and
    :class:`~prroom.cluster.managers.QueueUnavailable` if the queue is down.
    """
    request = {"pullRequestId": pull_request_id, "username": username, "message": message}
    state = _state_of(app)
    if state is not None:
        posted: PostedMessage = state.events.post(request)
        return posted
    settings = settings_from_environ()
    url = message_queue or settings.message_queue
    if not url:
        raise PostingUnavailable("no prroom server in this process and no message queue: "
                                 "pass message_queue= or set PRROOM_MESSAGE_QUEUE")
    name = channel or settings.channel
    payload = posted_message(_message_ids, request, protocol.Limits.of(settings))
    publisher = _publishers.get((url, name))
    if publisher is None:
        publisher = _publishers[(url, name)] = ClusterManager.of_deployment(
            url, name, pubsub=settings.queue_pubsub, write_only=True)
    ticket = publisher.emit(protocol.MESSAGE, dict(payload), namespace="/",
                            room=protocol.room_name(payload["pullRequestId"]))
    if ticket is not None:
        ticket.wait()  # raises QueueUnavailable if the publish did not reach Redis
    return payload


def _state_of(app: Optional[Flask]) -> Any:
    if app is not None:
        return app.extensions.get("prroom")
    if has_app_context():
        return current_app.extensions.get("prroom")
    return None
