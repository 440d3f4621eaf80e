"""What prroom holds for one Flask app (:class:`PRRoomState`), and how it is built from
the settings: the room registry, presence, metrics, limits, the handlers, and the sweepers
the state starts once it serves.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterable, List, NamedTuple, Optional

from flask import Flask
from flask_socketio import SocketIO

from prroom.cluster.presence import create_presence
from prroom.cluster.recovery_store import RedisRecoveryStore
from prroom.core.config import ConfigError, Settings
from prroom.core.identity import IdentityPolicy, issue_token
from prroom.core.limits import Rate, SocketLimiter
from prroom.core.presence import Presence
from prroom.core.protocol import Limits
from prroom.core.rooms import RoomRegistry
from prroom.diagnostics.loop_monitor import LoopMonitor
from prroom.internals import seams
from prroom.server import sweepers
from prroom.server.events import RoomEvents
from prroom.server.lifecycle import Caps
from prroom.server.metrics import Metrics
from prroom.server.recovery import Recovery

logger = logging.getLogger("prroom")


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

    def __init__(self, extension: object, app: Flask, settings: Settings,
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
            recovery=recovery_of(settings), recovery_store=recovery_store_of(settings),
            on_connected=self.start_background_tasks)
        self._sweepers_started = False

    def start_background_tasks(self) -> None:
        """Start the server's sweepers, once (:mod:`prroom.server.sweepers`).

        Called at each accepted connection, so only the first starts anything: on the first
        connection we are surely inside the serving process (gunicorn forks after loading the
        app when preload is on).
        """
        if self._sweepers_started:
            return
        self._sweepers_started = True
        events = self.events
        sweepers.start(self.socketio.server, events.broadcaster, self.registry, self.presence,
                       events.caps.max_queued_packets, events.caps.max_queued_bytes,
                       # anonymous connections never expire
                       identities=events.identities if self.identity.authenticates else None,
                       resume=events.resume)

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
        """Each library seam's status at start (the documentation's "Library internals")."""
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
