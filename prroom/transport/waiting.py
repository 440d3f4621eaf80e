"""Whether any connection of this process may hold packets past the current loop turn.

The slow-consumer watchdog looks for connections whose outgoing packets pile up (a client
that stopped reading).  Visiting every connection each second to find none was a good part
of what an idle server spent.  :mod:`prroom.transport.writes` counts instead the only
connections that can pile anything up: queues no direct writer writes through yet
(long-polling, mid-upgrade), and direct writers with a flusher (a backlog the kernel did not
take, or an end being written).  While both counts are zero, the watchdog has nothing to find.
"""
from __future__ import annotations

from typing import Any


class Waiting:
    """This process's counts (one event loop writes them; other OS threads only hand their
    packets to it)."""

    #: queues that count themselves (``counts_waiting``) and have no direct writer yet
    queues = 0
    #: direct writers whose flusher runs
    flushing = 0


def nothing_waits(server: Any) -> bool:
    """True when no connection of ``server`` (a python-socketio server) can hold packets past
    this loop turn: its engine.io server makes queues that count themselves, and neither
    count is above zero.  Frames corked for the end of the turn, or held a moment for a
    clustered ack, are not counted: they leave within the turn, or within
    :data:`~prroom.transport.corks.REPLY_WAIT_AT_MOST`."""
    queue_class = getattr(getattr(server, "eio", None), "create_queue", None)
    return getattr(queue_class, "counts_waiting", False) is True and \
        not Waiting.queues and not Waiting.flushing
