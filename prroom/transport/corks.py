"""When corked WebSocket frames are written: at the end of an event-loop turn, or later.

A :class:`~prroom.transport.writes.DirectWriter` holds (corks) the frames sent to its
connection and joins its event loop's :class:`Corks`; at the end of the turn every writer
that joined writes what it holds in one ``send``.  Under load the system call per delivery
was the largest single cost left, so the fewer writes per connection the better.

Clustered, a sender's ack waits for its publish's reply from Redis, and its connection's
frames wait with it (``hold``).  Every other connection was written at the end of each turn,
and a clustered process, whose turns carry many rooms' messages, wrote nearly every
connection every turn and each sender again for its ack.  So while any connection is held
for its ack, the end of a turn writes nothing: the frames wait until an ack is released (a
reply came) and then leave together, each connection's in one write with its ack if it has
one; at most :data:`REPLY_WAIT_AT_MOST` if no reply comes.  Without holds (one process, or
no acks asked for) every turn ends in a write, as before.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Protocol

import gevent
from gevent.monkey import get_original

#: The OS thread's id, even where gevent made threads greenlets.
os_thread_id = get_original("_thread", "get_ident")

logger = logging.getLogger("prroom")

#: Seconds a turn's frames wait at most for a held connection's release (a reply).
REPLY_WAIT_AT_MOST = 0.005


class Corked(Protocol):
    """What the corks need of a writer."""

    def uncork(self) -> None:
        """Write what is corked (unless held)."""

    def end(self) -> None:
        """Stop writing: the connection failed."""


#: Each event loop's corks (one hub per thread; a hub lives as long as its thread).
_corks_of: Dict[Any, "Corks"] = {}


class Corks:
    """Writers with frames held until the end of this event-loop turn (or a reply), per hub.

    Frames sent to one connection while the loop runs its ready greenlets (a member's own
    message and its ack, messages of several members of a busy room) leave in one ``send``.
    """

    def __init__(self, hub: Any) -> None:
        self.thread = os_thread_id()
        self.loop = hub.loop
        #: connections held for their ack (see the module's text)
        self.holding = 0
        self._writers: List[Corked] = []
        self._scheduled = False
        self._waiting = False  # the end of a turn found connections held: wait for a reply
        self._answered = False  # a reply came: the end of this turn writes
        self._timer: Any = None  # made at the first wait

    def add(self, writer: Corked) -> None:
        """Have ``writer`` write what it holds at the end of this turn (or after a reply)."""
        self._writers.append(writer)
        if not self._scheduled:
            self._scheduled = True
            self.loop.run_callback(self._end_of_turn)

    def _end_of_turn(self) -> None:
        if not self.holding or self._answered:
            self._uncork_all()
        elif not self._waiting:
            # still scheduled meanwhile: what is corked in later turns waits as well
            self._waiting = True
            if self._timer is None:
                self._timer = self.loop.timer(REPLY_WAIT_AT_MOST, ref=False)
            self._timer.start(self._write_waiting)

    def replied(self) -> None:
        """A held connection was released (its publish's reply came): what waits leaves at
        the end of this turn, with the ack."""
        if self._waiting:
            self._write_waiting()
        else:
            self._answered = True

    def _write_waiting(self) -> None:
        if self._waiting:
            self._waiting = False
            self._timer.stop()
            self.loop.run_callback(self._uncork_all)

    def flush(self) -> None:
        """Write what is corked now, before the turn ends (a big room's first members).

        Only a broadcast asks (``fan_out``): a count of connections per turn would also
        split a busy turn of many small rooms' messages, and a connection written early then
        gets a second write in the same turn for the frames that come after."""
        if self._writers:
            self._uncork_all()

    def _uncork_all(self) -> None:
        # runs in the hub, before it next waits for I/O; every send here is non-blocking
        self._scheduled = self._answered = False
        writers, self._writers = self._writers, []
        for writer in writers:
            try:
                writer.uncork()
            except Exception:  # one connection must not stall the others
                logger.exception("writing to a WebSocket failed")
                writer.end()

    @staticmethod
    def of_current_hub() -> "Corks":
        """The corks of this thread's event loop."""
        hub = gevent.get_hub()
        corks = _corks_of.get(hub)
        if corks is None:
            corks = _corks_of[hub] = Corks(hub)
        return corks
