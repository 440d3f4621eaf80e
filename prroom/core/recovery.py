"""Connection state recovery: the recent room packets and the sessions that may come back.

Pure logic with an injectable clock, like :mod:`rooms`; in memory, one process.  The wire
format is socket.io-client's (4.6+): the CONNECT reply carries a private session id ``pid``,
every recoverable room broadcast an opaque offset as its last argument, and a returning
client presents ``{pid, offset}`` in its CONNECT auth.

* Offsets are ``<process epoch>-<sequence>``: one sequence for the whole process, so they
  are ordered across rooms, and an offset from another process (or before a restart) is
  simply unknown.
* :class:`RoomBuffers` keeps, per room, the packets of the last ``window`` seconds, at most
  ``cap`` of them.  A room remembers the newest sequence it ever dropped: a session that
  missed a dropped packet is not restored at all (:meth:`RoomBuffers.missed` says None).
* :class:`SessionStore` keeps what a recoverable disconnect left behind.  A pid is taken out
  at its first use, successful or not (one-shot); a restored connection gets a fresh
  *marker* offset, and a session only accepts offsets at or after its connection's marker,
  so an old ``{pid, offset}`` seen by someone else cannot restore it a second time.
"""
from __future__ import annotations

import collections
import secrets
import time
from typing import (
    Any,
    Callable,
    Collection,
    Deque,
    Dict,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Set,
    Tuple,
)

#: Longest pid or offset prroom reads from a CONNECT auth payload.
MAX_TOKEN_LENGTH = 64


def new_pid() -> str:
    """A private session id: 144 random bits, URL-safe."""
    return secrets.token_urlsafe(18)


class BufferedPacket(NamedTuple):
    """One room broadcast kept for sessions that may come back."""

    seq: int
    offset: str
    event: str
    data: Any
    skip_sid: Optional[str]
    at: float


class _Room:
    __slots__ = ("packets", "dropped_through")

    def __init__(self) -> None:
        self.packets: Deque[BufferedPacket] = collections.deque()
        self.dropped_through = 0


class RoomBuffers:
    """The last ``window`` seconds of each room's recoverable broadcasts, ``cap`` at most."""

    def __init__(self, window: float, cap: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.cap = cap
        self._clock = clock
        self._epoch = secrets.token_hex(4)
        self._seq = 0
        self._rooms: Dict[int, _Room] = {}

    def _next(self) -> Tuple[int, str]:
        self._seq += 1
        return self._seq, f"{self._epoch}-{self._seq:x}"

    def record(self, room: int, event: str, data: Any, skip_sid: Optional[str] = None) -> str:
        """Keep one broadcast to ``room``; return the offset it is sent with."""
        seq, offset = self._next()
        buffer = self._rooms.get(room)
        if buffer is None:
            buffer = self._rooms[room] = _Room()
        buffer.packets.append(BufferedPacket(seq, offset, event, data, skip_sid, self._clock()))
        if len(buffer.packets) > self.cap:
            buffer.dropped_through = buffer.packets.popleft().seq
        return offset

    def marker(self) -> Tuple[int, str]:
        """A fresh offset that belongs to no packet: everything before it was delivered."""
        return self._next()

    def parse(self, offset: Any) -> Optional[int]:
        """The sequence of an offset this process issued, else None (never raises)."""
        if not isinstance(offset, str) or len(offset) > MAX_TOKEN_LENGTH:
            return None
        epoch, _, seq = offset.partition("-")
        if epoch != self._epoch or not seq or len(seq) > 16:
            return None
        try:
            value = int(seq, 16)
        except ValueError:
            return None
        return value if 0 < value <= self._seq and seq == f"{value:x}" else None

    def current(self) -> int:
        """The newest sequence issued: a member joining now has seen everything up to it."""
        return self._seq

    def missed(self, rooms: Collection[int], after: int, old_sid: Optional[str],
               joined: Optional[Mapping[int, int]] = None) -> Optional[List[BufferedPacket]]:
        """Packets of ``rooms`` after sequence ``after``, in order; None if some were dropped.

        ``joined`` gives, per room, the sequence current when the session joined it: what
        came before was never the session's to see (a connection that joins a room long
        after connecting must not get the room's earlier packets).  Packets that skipped
        ``old_sid`` (the session's own announcements) are left out.
        """
        found: List[BufferedPacket] = []
        for room in rooms:
            buffer = self._rooms.get(room)
            if buffer is None:
                continue
            since = max(after, (joined or {}).get(room, 0))
            self._drop_old(buffer)
            if buffer.dropped_through > since:
                return None
            found.extend(p for p in buffer.packets if p.seq > since and p.skip_sid != old_sid)
        found.sort(key=lambda packet: packet.seq)
        return found

    def expire(self, keep: Callable[[int], bool] = lambda room: False) -> None:
        """Drop packets older than the window; forget rooms with nothing left to remember.

        An emptied room is remembered (its newest dropped sequence) while ``keep(room)``:
        a member or a stored session may still need to know that something was dropped.
        """
        for room in list(self._rooms):
            buffer = self._rooms[room]
            self._drop_old(buffer)
            if not buffer.packets and not keep(room):
                del self._rooms[room]

    def _drop_old(self, buffer: _Room) -> None:
        oldest = self._clock() - self.window
        while buffer.packets and buffer.packets[0].at < oldest:
            buffer.dropped_through = buffer.packets.popleft().seq

    def packet_count(self) -> int:
        """Packets held, all rooms together."""
        return sum(len(buffer.packets) for buffer in self._rooms.values())

    def room_count(self) -> int:
        """Rooms with something remembered."""
        return len(self._rooms)


class Session:
    """What a recoverable disconnect leaves behind, for ``window`` seconds."""

    __slots__ = ("pid", "identity", "rooms", "limiter_state", "old_sid", "min_seq",
                 "expires_at", "joined", "left_announced")

    def __init__(self, pid: str, identity: Optional[str], rooms: Dict[int, str],
                 limiter_state: Any, old_sid: str, min_seq: int, expires_at: float,
                 joined: Optional[Dict[int, int]] = None, left_announced: bool = True) -> None:
        self.pid = pid
        self.identity = identity
        self.rooms = rooms
        self.limiter_state = limiter_state
        self.old_sid = old_sid
        self.min_seq = min_seq
        self.expires_at = expires_at
        #: per room, the sequence current when the session joined it
        self.joined: Dict[int, int] = joined or {}
        #: whether the others were told the user left (False while a presence grace hides
        #: the disconnect): a restore announces the user joined again only if they were
        self.left_announced = left_announced


class SessionStore:
    """Sessions by pid, oldest first; at most ``cap`` (the oldest goes first)."""

    def __init__(self, window: float, cap: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.cap = cap
        self._clock = clock
        self._sessions: "collections.OrderedDict[str, Session]" = collections.OrderedDict()

    def persist(self, pid: str, identity: Optional[str], rooms: Dict[int, str],
                limiter_state: Any, old_sid: str, min_seq: int,
                joined: Optional[Dict[int, int]] = None, left_announced: bool = True
                ) -> Session:
        """Keep a disconnected session until the window passes."""
        session = Session(pid, identity, dict(rooms), limiter_state, old_sid, min_seq,
                          self._clock() + self.window, dict(joined or {}), left_announced)
        self._sessions.pop(pid, None)
        self._sessions[pid] = session
        while len(self._sessions) > self.cap:
            self._sessions.popitem(last=False)
        return session

    def take(self, pid: Any) -> Optional[Session]:
        """Remove and return the live session ``pid`` (once), or None."""
        if not isinstance(pid, str) or len(pid) > MAX_TOKEN_LENGTH:
            return None
        session = self._sessions.pop(pid, None)
        if session is None or session.expires_at < self._clock():
            return None
        return session

    def expire(self) -> List[Session]:
        """Remove and return the sessions whose window has passed."""
        now = self._clock()
        gone: List[Session] = []
        while self._sessions:
            session = next(iter(self._sessions.values()))
            if session.expires_at >= now:
                break
            gone.append(self._sessions.popitem(last=False)[1])
        return gone

    def mark_left_announced(self, pid: str) -> bool:
        """Record that the session's departure was announced; False if it is gone."""
        session = self._sessions.get(pid)
        if session is None:
            return False
        session.left_announced = True
        return True

    def rooms(self) -> Set[Any]:
        """Every room some stored session was in."""
        return {room for session in self._sessions.values() for room in session.rooms}

    def __len__(self) -> int:
        return len(self._sessions)


#: When an ack expires, and its body.
_Ack = Tuple[float, Dict[str, Any]]


class SentMessages:
    """Acks of recent sends by ``(sender, room, clientMessageId)``, for ``window`` seconds."""

    def __init__(self, window: float, cap: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.cap = cap
        self._clock = clock
        self._acks: "collections.OrderedDict[Tuple[str, int, str], _Ack]" = \
            collections.OrderedDict()

    def _expire(self) -> None:
        now = self._clock()
        while self._acks:
            key, (expires_at, _) = next(iter(self._acks.items()))
            if expires_at >= now and len(self._acks) <= self.cap:
                break
            del self._acks[key]

    def get(self, sender: str, room: int, client_id: str) -> Optional[Dict[str, Any]]:
        """The ack the first send with this id got, if within the window."""
        self._expire()
        entry = self._acks.get((sender, room, client_id))
        return dict(entry[1]) if entry is not None else None

    def put(self, sender: str, room: int, client_id: str, ack: Dict[str, Any]) -> None:
        """Remember the ack of a send."""
        self._acks[(sender, room, client_id)] = (self._clock() + self.window, dict(ack))
        self._expire()

    def __len__(self) -> int:
        return len(self._acks)
