"""Connection state recovery on the Socket.IO side: pids, restores, the presence grace.

:class:`SessionRecovery` is what :class:`~prroom.server.events.RoomEvents` asks when recovery
is on (``PRROOM_RECOVERY_WINDOW`` > 0): the ``pid`` of a CONNECT reply, whether a CONNECT
restores a session, what a recoverable disconnect leaves behind, and when a user hidden by
the presence grace is announced as left.  It is heard through the
:class:`~prroom.server.broadcaster.Broadcaster` and reads the recoverable broadcasts'
buffers (:mod:`prroom.server.recoverable`); it knows nothing of the handlers, and its
sweep is run by :mod:`prroom.server.sweepers`.

Sessions and recent packets live in this process's memory (:mod:`prroom.core.recovery`),
or, in clustered mode, in Redis (:mod:`prroom.cluster.recovery_store`), where every process
of the deployment can restore them; recoverable broadcasts are then numbered and kept by
the clustered manager's publish script.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

from prroom.cluster.recovery_store import FirstSend, packet_of, split_offset
from prroom.core import protocol
from prroom.core.config import DEFAULTS
from prroom.core.identity import Identity, IdentityPolicy
from prroom.core.limits import SocketLimiter, export_state, import_state
from prroom.core.protocol import ErrorCode, ProtocolError, room_name
from prroom.core.recovery import BufferedPacket, SentMessages, Session, SessionStore, new_pid
from prroom.core.rooms import RoomRegistry
from prroom.internals import socketio_hooks
from prroom.server.broadcaster import Broadcaster
from prroom.server.grace import PresenceGrace
from prroom.server.metrics import Metrics
from prroom.server.recoverable import RECOVERABLE_EVENTS, RecoverableBroadcasts

logger = logging.getLogger("prroom")

__all__ = ["RECOVERABLE_EVENTS", "RECOVERABLE_REASONS", "SHUTDOWN_REASON", "REPLACED_REASON",
           "SESSION_EVENT", "Recovery", "SessionRecovery"]

#: Disconnect reasons after which a client reconnects on its own (python-engineio's names);
#: a client that disconnected on purpose, or was disconnected by the server, does not.
RECOVERABLE_REASONS = frozenset({"transport close", "transport error", "ping timeout"})

#: The disconnect reason prroom gives the connections its shutdown closes: recoverable too.
SHUTDOWN_REASON = "server shutdown"

#: The disconnect reason of a connection whose session a new connection took over (its
#: client noticed a silent loss first and came back): recoverable too.
REPLACED_REASON = "replaced"

#: Sent to a connection, with recovery on, right after its CONNECT (and any replay):
#: ``{recovered}`` and a fresh offset as last argument.  Only offsets at or after that one
#: restore the session later, so an older ``{pid, offset}`` someone saw is worthless.
SESSION_EVENT = "pr-room-session"

#: Remembered clientMessageIds at most (memory bound under a flood).
MAX_CLIENT_MESSAGE_IDS = 100_000
MAX_CLIENT_MESSAGE_ID_LENGTH = 64


class Recovery(NamedTuple):
    """Connection state recovery settings; ``window`` 0 is off."""

    window: float = 0.0
    buffer: int = DEFAULTS["PRROOM_RECOVERY_BUFFER"]
    sessions: int = DEFAULTS["PRROOM_RECOVERY_SESSIONS"]
    presence_grace: float = DEFAULTS["PRROOM_PRESENCE_GRACE"]


class SessionRecovery(PresenceGrace):
    """One server's recovery state: the live connections' pids and the stored sessions."""

    def __init__(self, settings: Recovery, recoverable: RecoverableBroadcasts,
                 broadcaster: Broadcaster, *, registry: RoomRegistry,
                 identity: IdentityPolicy, limiter: SocketLimiter, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.window = window = settings.window
        self.grace = min(settings.presence_grace, window)
        self.recoverable = recoverable
        self.buffers = recoverable.buffers
        self.sessions = SessionStore(window, settings.sessions, clock=clock)
        #: clustered: the deployment's store; the clustered manager publishes through it
        self.shared = recoverable.shared
        self._manager: Any = recoverable.manager
        self.broadcaster = broadcaster
        self.server = broadcaster.server
        self.namespace = broadcaster.namespace
        self.registry = registry
        self.identity = identity
        self.limiter = limiter
        self.metrics = metrics
        self._clock, self._wall = clock, wall
        self.sent = SentMessages(window, MAX_CLIENT_MESSAGE_IDS, clock=clock)
        # sid -> (pid, its marker's sequence, identity name); pid -> its open connection's sid
        self._pids: Dict[str, Tuple[str, int, Optional[str]]] = {}
        self._live: Dict[str, str] = {}
        # pids whose old connection take_over() is closing (clustered, closes may overlap)
        self._replacing: Set[str] = set()
        self._joined: Dict[str, Dict[int, int]] = {}  # sid -> {room: sequence at join}
        # pid -> (when to announce, [(pull_request_id, username)]) during the presence grace
        self._pending_left: Dict[str, Tuple[float, List[Tuple[int, str]]]] = {}
        self._handed_off = False  # shutdown began: graces go to the cluster as they start

    def stored_sessions(self) -> int:
        """Lost sessions kept by this process (clustered: its live keys in Redis, at most)."""
        if self.shared is None:
            return len(self.sessions)
        return self.shared.stored_here()

    def buffered_packets(self) -> int:
        """Room packets in this process's memory."""
        return self.buffers.packet_count()

    # -- what the event handlers ask --------------------------------------------------

    def connect_reply(self, namespace: str, sid: str) -> Optional[Dict[str, Any]]:
        """The ``pid`` next to ``sid`` in the CONNECT reply (connects.fix_connects)."""
        if namespace != self.namespace or sid not in self._pids:
            return None
        return {"pid": self._pids[sid][0]}

    def before_join(self, pull_request_id: int) -> int:
        """Before a socket enters a room: the sequence up to which the room's packets are
        not its to recover.  Clustered, a process that hosts the room knows what it has
        delivered there; a first local member asks Redis before subscribing, so a packet
        published meanwhile may be replayed to it but never lost."""
        if self.shared is None:
            return self.buffers.current()
        delivered = self._manager.delivered_seq(room_name(pull_request_id))
        return delivered if delivered is not None else self.shared.current()

    def joined(self, sid: str, pull_request_id: int, since: int) -> None:
        """``sid`` joined a room; ``since`` is what :meth:`before_join` said."""
        self._joined.setdefault(sid, {})[pull_request_id] = since
        if self.shared is not None:
            self._manager.note_seq(room_name(pull_request_id), since)

    def left(self, sid: str, pull_request_id: int) -> None:
        """``sid`` left a room on purpose."""
        rooms = self._joined.get(sid)
        if rooms is not None:
            rooms.pop(pull_request_id, None)

    def client_message_id(self, payload: Dict[str, Any]) -> Optional[str]:
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

    def sent_before(self, sender: str, pull_request_id: int, client_id: str
                    ) -> Optional[Dict[str, Any]]:
        """The ack of an earlier send with this ``clientMessageId`` this process answered
        within the window, or None.  Clustered, a send on another process is found by the
        publish itself (:meth:`first_send`), in the same atomic step."""
        return self.sent.get(sender, pull_request_id, client_id)

    def first_send(self, sender: str, pull_request_id: int, client_id: str,
                   ack: Dict[str, Any]) -> Optional[FirstSend]:
        """Clustered: what makes this send's publish check for an earlier send with its
        ``clientMessageId`` on any process and keep ``ack`` for a retry, atomically
        (:meth:`Broadcaster.broadcast_once`); None with one process."""
        if self.shared is None:
            return None
        return self.shared.first_send(sender, pull_request_id, client_id, ack)

    def remember_sent(self, sender: str, pull_request_id: int, client_id: str,
                      ack: Dict[str, Any], kept: bool = False) -> None:
        """Remember a send's ack under its ``clientMessageId`` for the window; clustered,
        also in Redis unless its publish ``kept`` it there already."""
        self.sent.put(sender, pull_request_id, client_id, ack)
        if self.shared is not None and not kept:
            try:
                self.shared.remember_sent(sender, pull_request_id, client_id, ack)
            except Exception as exc:
                logger.error("recovery: could not store a clientMessageId: %s", exc)

    # -- connect ------------------------------------------------------------------------

    def restore(self, sid: str, identity: Optional[Identity], auth: Any) -> bool:
        """Restore the session ``auth`` names if it may be; give ``sid`` its pid either way.

        Anything wrong (unknown, expired, used, malformed, another identity, missed packets
        dropped) is a fresh session, never an error.  The replay is sent to this socket while
        its CONNECT reply is held (fix_connects), so it follows the reply and precedes
        anything newer: nothing else runs on this process meanwhile.
        """
        session = after = None
        if isinstance(auth, dict):
            session = self._take(auth.get("pid"))
            after = self._parse(auth.get("offset"))
        name = identity.name if identity else None
        missed = None
        rooms: Dict[int, str] = {}
        taps: Any = None
        newest: Dict[int, int] = {}
        if session is not None and after is not None and after >= session.min_seq \
                and session.identity == name:
            rooms = {pr: username for pr, username in session.rooms.items()
                     if self.identity.can_join(identity, pr)}
            if self.shared is None:
                missed = self.buffers.missed(rooms, after, session.old_sid, session.joined)
            else:
                taps = self._manager.prepare_rooms([room_name(pr) for pr in rooms])
                missed = self._missed_in_cluster(session, rooms, after, taps, newest)
        try:
            if session is None or missed is None:
                if session is not None:  # the session is gone for good: announce it now
                    self._gone_for_good(session)
                self._open(sid, new_pid(), self._send_marker(sid, False), name)
                return False
            # no yield from here to the entered rooms: what the taps caught is all there is
            for pull_request_id, username in rooms.items():
                self.registry.join(sid, pull_request_id, username)
                self.server.enter_room(sid, room_name(pull_request_id), self.namespace)
            # what Redis answered may be ahead of what this process's listener has read:
            # those packets' live copies, still on their way here, must not reach sid again
            for pull_request_id, seq in newest.items():
                self._manager.replayed(room_name(pull_request_id), sid, seq)
        finally:
            if taps is not None:
                self._manager.release_rooms([room_name(pr) for pr in rooms], taps,
                                            self.namespace)
        self._joined[sid] = {pr: session.joined.get(pr, 0) for pr in rooms}
        self.limiter.put_state(sid, session.limiter_state)
        for packet in missed:
            self.broadcaster.to_socket(sid, packet.event, (packet.data, packet.offset))
        self._restore_presence(sid, session, rooms)
        self._open(sid, session.pid, self._send_marker(sid, True), name)
        self.metrics.record_connection("recovered")
        return True

    def _open(self, sid: str, pid: str, marker: int, name: Optional[str]) -> None:
        self._pids[sid] = (pid, marker, name)
        self._live[pid] = sid

    def take_over(self, identity: Optional[Identity], auth: Any) -> bool:
        """Before a CONNECT is restored: if it presents the pid of a connection still open
        here, close that one as replaced; True if it did.

        After a silent loss the client usually notices first (each side waits for its own
        ping timeout) and comes back while the old connection is still open here, with no
        session stored yet.  Closed as replaced, the old connection stores its session as
        any recoverable loss does (its departures held, whatever the grace) and
        :meth:`restore` takes it as usual: one path for both stores, the same rules.  Only
        the session's identity with an offset it still accepts replaces anything: a stale
        or stolen pid leaves the live owner connected.
        """
        pid = auth.get("pid") if isinstance(auth, dict) else None
        old_sid = self._live.get(pid) if isinstance(pid, str) else None
        held = self._pids.get(old_sid) if old_sid is not None else None
        if not isinstance(pid, str) or old_sid is None or held is None:
            return False
        after = self._parse(auth.get("offset"))
        if after is None or after < held[1] or held[2] != (identity.name if identity else None):
            return False
        eio_sid = self.server.manager.eio_sid_from_sid(old_sid, self.namespace)
        if eio_sid is None:
            return False
        logger.info("recovery: sid=%s is replaced by a connection presenting its session",
                    old_sid)
        self._replacing.add(pid)
        try:  # the old connection's disconnect handlers run before this returns
            socketio_hooks.close_replaced(self.server, eio_sid, self.namespace,
                                          REPLACED_REASON)
        finally:
            self._replacing.discard(pid)
        return True

    def _take(self, pid: Any) -> Optional[Session]:
        if self.shared is None:
            return self.sessions.take(pid)
        try:
            taken = self.shared.take(pid)
        except Exception as exc:  # Redis away: a fresh session, as for an unknown pid
            logger.error("recovery: could not read the session from Redis: %s", exc)
            return None
        if taken is None:
            return None
        session, limits, age = taken
        session.limiter_state = import_state(limits, self._clock() - age)
        return session

    def _parse(self, offset: Any) -> Optional[int]:
        if self.shared is None:
            return self.buffers.parse(offset)
        try:
            return self.shared.parse(offset)
        except Exception:
            return None

    def _missed_in_cluster(self, session: Session, rooms: Dict[int, str], after: int,
                           taps: List[List[Dict[str, Any]]], newest: Dict[int, int]
                           ) -> Optional[List[BufferedPacket]]:
        """What Redis kept for the session, plus what arrived while it was read; ``newest``
        gets each room's newest sequence that the read saw."""
        assert self.shared is not None
        try:
            stored = self.shared.missed_by_room(rooms, after, session.joined)
        except Exception as exc:
            logger.error("recovery: could not read the rooms' packets from Redis: %s", exc)
            return None
        if stored is None:
            return None
        by_seq: Dict[int, BufferedPacket] = {}
        for pull_request_id, packets in stored.items():
            if packets:
                newest[pull_request_id] = packets[-1].seq
            for kept in packets:
                if kept.skip_sid is None or kept.skip_sid != session.old_sid:
                    by_seq[kept.seq] = kept
        for pull_request_id, tap in zip(rooms, taps):
            since = max(after, session.joined.get(pull_request_id, 0))
            for message in tap:
                data = message.get("data") or []
                seq = split_offset(data[-1])[1] if len(data) == 2 else None
                packet = packet_of(seq, message) if seq is not None else None
                if packet is not None and packet.seq > since and \
                        packet.skip_sid != session.old_sid:
                    by_seq.setdefault(packet.seq, packet)
        return [by_seq[seq] for seq in sorted(by_seq)]

    def _gone_for_good(self, session: Session) -> None:
        """A stored session that will not be restored: its users left, if nobody said so."""
        if session.pid in self._pending_left:
            self._flush_left(session.pid, announce=True)
        elif not session.left_announced:  # its grace was running on another process
            for pull_request_id, username in session.rooms.items():
                self.broadcaster.announce(protocol.USER_LEFT, pull_request_id, username)

    def _send_marker(self, sid: str, recovered: bool) -> int:
        if self.shared is not None:
            try:
                # only a restored session needs the current position: offsets it gave out
                # before must not restore it again
                seq, offset = self.shared.marker() if recovered else self.shared.fresh_marker()
            except Exception as exc:  # Redis away: no offset that could restore anything
                logger.error("recovery: no offset from Redis for sid=%s: %s", sid, exc)
                seq, offset = 2 ** 62, "-"
        else:
            seq, offset = self.buffers.marker()
        self.broadcaster.to_socket(sid, SESSION_EVENT, ({"recovered": recovered}, offset))
        return seq

    def _restore_presence(self, sid: str, session: Session, kept: Dict[int, str]) -> None:
        """Within the grace nobody heard the user leave: say nothing (or left, for lost rooms).

        After it, the user was announced as left: announce them joined again.
        """
        pending = self._pending_left.pop(session.pid, None)
        if pending is not None:
            for pull_request_id, username in pending[1]:
                if pull_request_id not in kept:  # can_join now refuses: left after all
                    self.broadcaster.presence_left(pull_request_id, username)
            return
        for pull_request_id, username in kept.items():
            if session.left_announced:
                self.broadcaster.presence_joined(sid, pull_request_id, username)
            else:  # another process holds the grace: the others never heard a leave
                self.broadcaster.presence_joined(sid, pull_request_id, username, quietly=True)
        if not session.left_announced:
            for pull_request_id, username in session.rooms.items():
                if pull_request_id not in kept:
                    self.broadcaster.announce(protocol.USER_LEFT, pull_request_id, username)

    # -- disconnect ---------------------------------------------------------------------

    def keep(self, sid: str, identity: Optional[Identity], reason: Any,
             rooms: Dict[int, str]) -> Optional[str]:
        """Store what a recoverable disconnect leaves behind; its pid, or None if the
        session cannot come back (not recoverable, or recovery was not set up for it)."""
        pid = self._pids.pop(sid, None)
        joined = self._joined.pop(sid, {})
        if pid is not None and self._live.get(pid[0]) == sid:
            del self._live[pid[0]]
        if pid is None or str(reason) not in RECOVERABLE_REASONS | {SHUTDOWN_REASON,
                                                                    REPLACED_REASON}:
            return None
        state = self.limiter.take_state(sid)
        name = identity.name if identity else None
        announced = not ((self.grace or pid[0] in self._replacing) and rooms)
        if self.shared is None:
            self.sessions.persist(pid[0], name, rooms, state, sid, pid[1], joined,
                                  left_announced=announced)
            return pid[0]
        session = Session(pid[0], name, dict(rooms), None, sid, pid[1], 0.0, joined,
                          announced)
        try:
            self.shared.persist(session, export_state(state, self._clock()))
        except Exception as exc:  # Redis away: this session cannot come back
            logger.error("recovery: could not store the session in Redis: %s", exc)
            return None
        return pid[0]
