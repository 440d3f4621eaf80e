"""Connection state recovery on the Socket.IO side: pids, restores, the presence grace.

:class:`SessionRecovery` is what :class:`~prroom.server.events.RoomEvents` asks when recovery
is on (``PRROOM_RECOVERY_WINDOW`` > 0): the offset a room broadcast carries, the ``pid`` of
a CONNECT reply, whether a CONNECT restores a session, what a recoverable disconnect leaves
behind, and when a user hidden by the presence grace is announced as left.  Where sessions
and recent packets are kept is the store's business (:mod:`prroom.core.recovery`: this
process's memory).
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Tuple

from prroom.core import protocol
from prroom.core.config import DEFAULTS
from prroom.core.identity import Identity
from prroom.core.protocol import ErrorCode, ProtocolError, room_name
from prroom.core.recovery import RoomBuffers, SentMessages, Session, SessionStore, new_pid
from prroom.core.rooms import Departure

if TYPE_CHECKING:  # pragma: no cover
    from prroom.server.events import RoomEvents

logger = logging.getLogger("prroom")

#: Room broadcasts a returning client must not miss: they carry an offset and are buffered.
#: Typing indicators are not: replayed seconds later they would be stale.
RECOVERABLE_EVENTS = frozenset({protocol.MESSAGE, protocol.USER_JOINED, protocol.USER_LEFT})

#: Disconnect reasons after which a client reconnects on its own (python-engineio's names);
#: a client that disconnected on purpose, or was disconnected by the server, does not.
RECOVERABLE_REASONS = frozenset({"transport close", "transport error", "ping timeout"})

#: Sent to a connection, with recovery on, right after its CONNECT (and any replay):
#: ``{recovered}`` and a fresh offset as last argument.  Only offsets at or after that one
#: restore the session later, so an older ``{pid, offset}`` someone saw is worthless.
SESSION_EVENT = "pr-room-session"

#: Stored sessions and remembered clientMessageIds at most (memory bound under a flood).
MAX_SESSIONS = 100_000
MAX_CLIENT_MESSAGE_IDS = 100_000
MAX_CLIENT_MESSAGE_ID_LENGTH = 64


class Recovery(NamedTuple):
    """Connection state recovery settings; ``window`` 0 is off."""

    window: float = 0.0
    buffer: int = DEFAULTS["PRROOM_RECOVERY_BUFFER"]
    presence_grace: float = DEFAULTS["PRROOM_PRESENCE_GRACE"]


class SessionRecovery:
    """One server's recovery state: the live connections' pids and the stored sessions."""

    def __init__(self, events: "RoomEvents", settings: Recovery) -> None:
        self.events = events
        self.settings = settings
        window = settings.window
        self.grace = min(settings.presence_grace, window)
        self.buffers = RoomBuffers(window, settings.buffer)
        self.sessions = SessionStore(window, MAX_SESSIONS)
        self.sent = SentMessages(window, MAX_CLIENT_MESSAGE_IDS)
        self._pids: Dict[str, Tuple[str, int]] = {}  # sid -> (pid, its marker's sequence)
        self._joined: Dict[str, Dict[int, int]] = {}  # sid -> {room: sequence at join}
        # pid -> (when to announce, [(pull_request_id, username)]) during the presence grace
        self._pending_left: Dict[str, Tuple[float, List[Tuple[int, str]]]] = {}

    # -- what the event handlers ask --------------------------------------------------

    def offset_for(self, event: str, pull_request_id: int, data: Any,
                   skip_sid: Optional[str]) -> Optional[str]:
        """The offset a room broadcast is sent with (kept for returning sessions), or None
        for an event that is not recoverable."""
        if event not in RECOVERABLE_EVENTS:
            return None
        return self.buffers.record(pull_request_id, event, data, skip_sid)

    def connect_reply(self, namespace: str, sid: str) -> Optional[dict]:
        """The ``pid`` next to ``sid`` in the CONNECT reply (socketio_hooks.fix_connects)."""
        if namespace != self.events.namespace or sid not in self._pids:
            return None
        return {"pid": self._pids[sid][0]}

    def joined(self, sid: str, pull_request_id: int) -> None:
        """``sid`` joined a room: what the room said before now is not its to recover."""
        self._joined.setdefault(sid, {})[pull_request_id] = self.buffers.current()

    def left(self, sid: str, pull_request_id: int) -> None:
        """``sid`` left a room on purpose."""
        rooms = self._joined.get(sid)
        if rooms is not None:
            rooms.pop(pull_request_id, None)

    def client_message_id(self, payload: dict) -> Optional[str]:
        """``clientMessageId`` of a send (validated), if it has one."""
        if "clientMessageId" not in payload:
            return None
        value = payload["clientMessageId"]
        if not isinstance(value, str) or not 0 < len(value) <= MAX_CLIENT_MESSAGE_ID_LENGTH:
            raise ProtocolError(ErrorCode.INVALID_FIELD,
                                "clientMessageId must be a string of 1 to "
                                f"{MAX_CLIENT_MESSAGE_ID_LENGTH} characters",
                                field="clientMessageId")
        return value

    # -- connect ------------------------------------------------------------------------

    def restore(self, sid: str, identity: Optional[Identity], auth: Any) -> bool:
        """Restore the session ``auth`` names if it may be; give ``sid`` its pid either way.

        Anything wrong (unknown, expired, used, malformed, another identity, missed packets
        dropped) is a fresh session, never an error.  The replay is sent to this socket while
        its CONNECT reply is held (fix_connects), so it follows the reply and precedes
        anything newer: nothing else runs on this process meanwhile.
        """
        events = self.events
        session = after = None
        if isinstance(auth, dict):
            session = self.sessions.take(auth.get("pid"))
            after = self.buffers.parse(auth.get("offset"))
        name = identity.name if identity else None
        missed = None
        rooms: Dict[int, str] = {}
        if session is not None and after is not None and after >= session.min_seq \
                and session.identity == name:
            rooms = {pr: username for pr, username in session.rooms.items()
                     if events.identity.can_join(identity, pr)}
            missed = self.buffers.missed(rooms, after, session.old_sid, session.joined)
        if session is None or missed is None:
            if session is not None:  # the session is gone for good: announce it now
                self._flush_left(session.pid)
            self._pids[sid] = (new_pid(), self._send_marker(sid, False))
            return False
        for pull_request_id, username in rooms.items():
            events.registry.join(sid, pull_request_id, username)
            events.server.enter_room(sid, room_name(pull_request_id), events.namespace)
        self._joined[sid] = {pr: session.joined.get(pr, 0) for pr in rooms}
        events.limiter.put_state(sid, session.limiter_state)
        for packet in missed:
            events.server.emit(packet.event, (packet.data, packet.offset), to=sid,
                               namespace=events.namespace, ignore_queue=True)
        self._restore_presence(sid, session, rooms)
        self._pids[sid] = (session.pid, self._send_marker(sid, True))
        events.metrics.record_connection("recovered")
        return True

    def _send_marker(self, sid: str, recovered: bool) -> int:
        seq, offset = self.buffers.marker()
        self.events.server.emit(SESSION_EVENT, ({"recovered": recovered}, offset), to=sid,
                                namespace=self.events.namespace, ignore_queue=True)
        return seq

    def _restore_presence(self, sid: str, session: Session, kept: Dict[int, str]) -> None:
        """Within the grace nobody heard the user leave: say nothing (or left, for lost rooms).

        After it, the user was announced as left: announce them joined again.
        """
        events = self.events
        pending = self._pending_left.pop(session.pid, None)
        if pending is not None:
            for pull_request_id, username in pending[1]:
                if pull_request_id not in kept:  # can_join now refuses: left after all
                    events.presence_left(pull_request_id, username)
            return
        for pull_request_id, username in kept.items():
            events.presence_joined(sid, pull_request_id, username)

    # -- disconnect ---------------------------------------------------------------------

    def keep(self, sid: str, identity: Optional[Identity], reason: Any,
             rooms: Dict[int, str]) -> Optional[str]:
        """Store what a recoverable disconnect leaves behind; its pid, or None if the
        session cannot come back (not recoverable, or recovery was not set up for it)."""
        pid = self._pids.pop(sid, None)
        joined = self._joined.pop(sid, {})
        if pid is None or str(reason) not in RECOVERABLE_REASONS:
            return None
        self.sessions.persist(pid[0], identity.name if identity else None, rooms,
                              self.events.limiter.take_state(sid), sid, pid[1], joined,
                              left_announced=not (self.grace and rooms))
        return pid[0]

    def hold_departures(self, pid: str, departures: List[Departure]) -> bool:
        """Hold a kept session's departures for the presence grace.

        False when there is no grace (the departures are announced at once, as without
        recovery).
        """
        if not (self.grace and departures):
            return False
        self._pending_left[pid] = (time.monotonic() + self.grace,
                                   [(d.pull_request_id, d.username) for d in departures])
        return True

    def flush_all_left(self) -> None:
        """Announce every user the grace is hiding as left, now (this server is stopping)."""
        for pid in list(self._pending_left):
            self._flush_left(pid)

    def _flush_left(self, pid: str) -> None:
        """Announce the users a session's grace was hiding as left, now."""
        pending = self._pending_left.pop(pid, None)
        if pending is not None:
            self.sessions.mark_left_announced(pid)
            for pull_request_id, username in pending[1]:
                self.events.presence_left(pull_request_id, username)

    # -- sweeping -------------------------------------------------------------------------

    def sweep(self) -> None:
        """Announce the users whose grace passed; drop what the window no longer covers."""
        now = time.monotonic()
        for pid in [pid for pid, (due, _) in self._pending_left.items() if due <= now]:
            self._flush_left(pid)
        for session in self.sessions.expire():
            self._flush_left(session.pid)
        stored = self.sessions.rooms()
        registry = self.events.registry
        self.buffers.expire(lambda room: room in stored or bool(registry.members(room)))

    def sweep_forever(self) -> None:
        """:meth:`sweep`, a few times per grace (or window), forever."""
        interval = max(0.05, min(0.5, (self.grace or self.settings.window) / 4))
        while True:
            self.events.server.sleep(interval)
            try:
                self.sweep()
            except Exception:
                logger.exception("recovery sweeper failed; retrying")
