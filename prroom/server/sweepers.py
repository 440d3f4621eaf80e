"""A server's background loops: typing expiry, slow consumers, identity expiry, presence,
recovery.

One loop per concern for all sockets, not a timer per socket or per event: the cost of an
event stays O(1), and what a loop finds is late by at most one of its intervals.  Each loop
survives its own failures (logged, retried next interval).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prroom.core import protocol
from prroom.internals import socketio_hooks

if TYPE_CHECKING:  # pragma: no cover
    from prroom.server.events import RoomEvents

logger = logging.getLogger("prroom")


def start(events: "RoomEvents") -> None:
    """Start every loop ``events``' server needs (once, in the serving process)."""
    server = events.server
    server.start_background_task(expire_typing_forever, events)
    server.start_background_task(drop_slow_consumers_forever, events)
    if events.identity.authenticates:  # anonymous connections never expire
        server.start_background_task(events.identities.sweep_forever)
    events.presence.start(server.start_background_task, server.sleep, events.announce_left,
                          events.announce_joined)
    if events.resume:
        server.start_background_task(events.resume.sweep_forever)


def drop_slow_consumers_forever(events: "RoomEvents") -> None:
    """Close, once a second, the connections of clients that stopped reading.

    Engine.IO queues outgoing packets without bound; a client that stops reading would make
    the server hold every message for it.  Checked for all sockets at once, not per
    delivery, so a broadcast's cost stays per recipient.
    """
    server, limit = events.server, events.caps.max_queued_packets
    max_bytes = events.caps.max_queued_bytes
    while True:
        server.sleep(1.0)
        try:
            for eio_sid in socketio_hooks.overfull_sockets(server, limit, max_bytes):
                logger.warning("dropping a client too slow to read: eio_sid=%s has more "
                               "than %d packets or %d bytes queued", eio_sid, limit, max_bytes)
                socketio_hooks.close_transport(server, eio_sid)
        except Exception:
            logger.exception("slow-consumer check failed; retrying")


def expire_typing_forever(events: "RoomEvents") -> None:
    """Tell the rooms ``stop-typing`` for typists whose indicator timed out."""
    registry = events.registry
    interval = max(0.02, min(1.0, registry.typing_timeout / 5))
    while True:
        events.server.sleep(interval)
        try:
            for sid, pull_request_id, username in registry.expire_typing():
                events.announce(protocol.STOP_TYPING, pull_request_id, username,
                                skip_sid=sid)
        except Exception:
            logger.exception("typing sweeper failed; retrying")
