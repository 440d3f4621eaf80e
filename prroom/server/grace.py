"""The presence grace of connection state recovery, and its sweep.

A recoverable disconnect does not tell the room its user left at once: for
``PRROOM_PRESENCE_GRACE`` seconds the departure is held, and a session restored meanwhile
is never heard to have left.  :class:`PresenceGrace` is that part of
:class:`~prroom.server.recovery.SessionRecovery`: holding departures, announcing them when
the grace passes (or, clustered, handing them to the rest of the cluster at shutdown), and
the sweep that also drops what the recovery window no longer covers.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Set, Tuple

from prroom.cluster.recovery_store import RedisRecoveryStore
from prroom.core import protocol
from prroom.core.recovery import RoomBuffers, SessionStore
from prroom.core.rooms import Departure, RoomRegistry
from prroom.server.broadcaster import Broadcaster

logger = logging.getLogger("prroom")


class PresenceGrace:
    """Held departures and the sweep, on the state :class:`SessionRecovery` keeps."""

    grace: float
    window: float
    buffers: RoomBuffers
    sessions: SessionStore
    shared: Optional[RedisRecoveryStore]
    broadcaster: Broadcaster
    registry: RoomRegistry
    _clock: Callable[[], float]
    _wall: Callable[[], float]
    _replacing: Set[str]
    # pid -> (when to announce, [(pull_request_id, username)]) during the presence grace
    _pending_left: Dict[str, Tuple[float, List[Tuple[int, str]]]]
    _handed_off: bool

    def hold_departures(self, pid: str, departures: List[Departure]) -> bool:
        """Hold a kept session's departures for the presence grace.

        False when there is no grace (the departures are announced at once, as without
        recovery), unless the session is being taken over by a new connection.
        """
        replaced = pid in self._replacing
        if not ((self.grace or replaced) and departures):
            return False
        # a replaced session is restored right after this; if that fails, its users are
        # announced as left at once (or, with the store away, when the window passes)
        hold = self.window if replaced and not self.grace else self.grace
        self._pending_left[pid] = (self._clock() + hold,
                                   [(d.pull_request_id, d.username) for d in departures])
        if self._handed_off:  # a disconnect that was under way when shutdown began
            self.hand_off()
        return True

    def hand_off(self) -> None:
        """This server is stopping: the graces it holds end elsewhere.

        Clustered, each held user is counted out of the room now, without a word, and the
        session is handed to the rest of the cluster: the first process to sweep after the
        grace announces the user as left, unless the session was restored meanwhile (then
        nobody hears anything).  One process alone takes its graces with it.
        """
        self._handed_off = True
        pending, self._pending_left = self._pending_left, {}
        if self.shared is None or not pending:
            return
        logger.info("recovery: handing %d presence grace(s) over to the cluster", len(pending))
        wall = self._wall() - self._clock()
        for _, users in pending.values():
            for pull_request_id, username in users:
                self.broadcaster.presence_left(pull_request_id, username, quietly=True)
        try:
            self.shared.hand_off({pid: due + wall for pid, (due, _) in pending.items()})
        except Exception as exc:
            logger.error("recovery: could not hand %d graces over to the cluster: %s",
                         len(pending), exc)

    def _flush_left(self, pid: str, announce: Optional[bool] = None) -> None:
        """The grace hiding a session's users passed: they left.  The others are told,
        unless (clustered) the session was restored on another process meanwhile."""
        pending = self._pending_left.pop(pid, None)
        if pending is None:
            return
        if announce is None:
            announce = self._mark_left_announced(pid)
        for pull_request_id, username in pending[1]:
            self.broadcaster.presence_left(pull_request_id, username, quietly=not announce)

    def _mark_left_announced(self, pid: str) -> bool:
        if self.shared is None:
            self.sessions.mark_left_announced(pid)
            return True  # only this process could have restored it
        try:
            return self.shared.mark_left_announced(pid)
        except Exception as exc:
            logger.error("recovery: could not reach Redis about pid's grace: %s", exc)
            return True

    # -- sweeping -------------------------------------------------------------------------

    def sweep(self) -> None:
        """Announce the users whose grace passed; drop what the window no longer covers."""
        now = self._clock()
        for pid in [pid for pid, (due, _) in self._pending_left.items() if due <= now]:
            self._flush_left(pid)
        for session in self.sessions.expire():
            self._flush_left(session.pid, announce=True)
        if self.shared is not None:
            self._announce_handed_off()
        stored = self.sessions.rooms()
        registry = self.registry
        self.buffers.expire(lambda room: room in stored or bool(registry.members(room)))

    def _announce_handed_off(self) -> None:
        assert self.shared is not None
        gone = self.shared.claim_due()
        if gone:
            logger.info("recovery: %d user(s) of a stopped server did not come back within "
                        "the presence grace: announcing them as left", len(gone))
        for pull_request_id, username in gone:
            try:  # still there on some process (another tab): nobody left
                present = username in self.broadcaster.presence.members(pull_request_id)
            except Exception:
                present = False
            if not present:
                self.broadcaster.announce(protocol.USER_LEFT, pull_request_id, username)

    def sweep_interval(self) -> float:
        """How often :meth:`sweep` should run: a few times per grace (or window)."""
        return max(0.05, min(0.5, (self.grace or self.window) / 4))
