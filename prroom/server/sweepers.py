"""A server's background loops: typing expiry, slow consumers, identity expiry, presence,
recovery.

One loop per concern for all sockets, not a timer per socket or per event: the cost of an
event stays O(1), and what a loop finds is late by at most one of its intervals.  Each loop
survives its own failures (logged, retried next interval).
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

from prroom.core import protocol
from prroom.core.presence import Presence
from prroom.core.rooms import RoomRegistry
from prroom.internals import socketio_hooks
from prroom.internals.types import SocketIOServer
from prroom.server.broadcaster import Broadcaster
from prroom.server.identities import SWEEP_INTERVAL, IdentityControl
from prroom.server.recovery import SessionRecovery
from prroom.transport import waiting

logger = logging.getLogger("prroom")


def start(server: SocketIOServer, broadcaster: Broadcaster, registry: RoomRegistry,
          presence: Presence, max_queued_packets: int, max_queued_bytes: int,
          identities: Optional[IdentityControl] = None,
          resume: Optional[SessionRecovery] = None) -> None:
    """Start every loop a server needs (once, in the serving process): ``identities`` when
    connections may expire, ``resume`` when recovery is on."""
    server.start_background_task(expire_typing_forever, server, broadcaster, registry)
    server.start_background_task(drop_slow_consumers_forever, server, max_queued_packets,
                                 max_queued_bytes)
    if identities is not None:
        server.start_background_task(every, server, SWEEP_INTERVAL, identities.expire_due,
                                     "identity expiry sweep")
    presence.start(server.start_background_task, server.sleep, broadcaster.announce_left,
                   broadcaster.announce_joined)
    if resume is not None:
        server.start_background_task(every, server, resume.sweep_interval(), resume.sweep,
                                     "recovery sweeper")


def every(server: SocketIOServer, interval: float, sweep: Callable[[], object],
          what: str) -> None:
    """``sweep()`` once per ``interval``, forever; a failure is logged and retried."""
    while True:
        server.sleep(interval)
        try:
            sweep()
        except Exception:
            logger.exception("%s failed; retrying", what)


def drop_slow_consumers_forever(server: SocketIOServer, limit: int, max_bytes: int) -> None:
    """Close, once a second, the connections of clients that stopped reading.

    Engine.IO queues outgoing packets without bound; a client that stops reading would make
    the server hold every message for it.  Checked for all sockets at once, not per
    delivery, so a broadcast's cost stays per recipient; and not at all while no connection
    can hold anything past the current turn (the common case: every connection a WebSocket
    whose kernel buffer took all that was sent), so an idle server does not visit each of
    its connections every second.
    """
    while True:
        server.sleep(1.0)
        if waiting.nothing_waits(server):
            continue
        try:
            for eio_sid in socketio_hooks.overfull_sockets(server, limit, max_bytes):
                logger.warning("dropping a client too slow to read: eio_sid=%s has more "
                               "than %d packets or %d bytes queued", eio_sid, limit, max_bytes)
                socketio_hooks.close_transport(server, eio_sid)
        except Exception:
            logger.exception("slow-consumer check failed; retrying")


def expire_typing_forever(server: SocketIOServer, broadcaster: Broadcaster,
                          registry: RoomRegistry) -> None:
    """Tell the rooms ``stop-typing`` for typists whose indicator timed out."""
    interval = max(0.02, min(1.0, registry.typing_timeout / 5))
    while True:
        server.sleep(interval)
        try:
            for sid, pull_request_id, username in registry.expire_typing():
                broadcaster.announce(protocol.STOP_TYPING, pull_request_id, username,
                                skip_sid=sid)
        except Exception:
            logger.exception("typing sweeper failed; retrying")
