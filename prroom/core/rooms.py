"""Who is in which pull request room under which name, and who is typing there.

No Socket.IO imports: the registry answers questions and records facts; the event layer
turns its answers into emits.  Every operation costs O(1) or O(rooms of that socket), never
O(rooms or sockets on the server).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from prroom.core.protocol import ErrorCode, ProtocolError


class Departure(NamedTuple):
    """A socket leaving a room, and whether it was typing there at the time."""

    pull_request_id: int
    username: str
    was_typing: bool


class RoomRegistry:
    """Membership and typing state of every socket in this process.

    A lock guards compound updates because under ``flask run`` (threading mode) handlers of
    different sockets run on different threads; under gevent it is uncontended and cheap.
    """

    def __init__(self, typing_timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.typing_timeout = typing_timeout
        self._clock = clock
        self._lock = threading.Lock()
        # sid -> {pull_request_id: username the socket joined with}
        self._rooms_of: Dict[str, Dict[int, str]] = {}
        # pull_request_id -> {sid: username}
        self._members: Dict[int, Dict[str, str]] = {}
        # (sid, pull_request_id) -> monotonic deadline of the typing indicator
        self._typing: Dict[Tuple[str, int], float] = {}

    # -- membership -------------------------------------------------------------------

    def join(self, sid: str, pull_request_id: int, username: str) -> bool:
        """Record that ``sid`` is in the room as ``username``; False if it already was.

        Joining again under another name is refused: a socket has one name per room.
        """
        with self._lock:
            rooms = self._rooms_of.setdefault(sid, {})
            current = rooms.get(pull_request_id)
            if current is not None:
                if current != username:
                    raise ProtocolError(
                        ErrorCode.IDENTITY_MISMATCH,
                        f"this connection is in pull request {pull_request_id}'s room as "
                        f"{current!r}; leave it before joining under another name",
                        pullRequestId=pull_request_id)
                return False
            rooms[pull_request_id] = username
            self._members.setdefault(pull_request_id, {})[sid] = username
            return True

    def name_in(self, sid: str, pull_request_id: int, claimed: Optional[str] = None) -> str:
        """The name ``sid`` speaks with in the room, refusing non-members and other names."""
        name = self._rooms_of.get(sid, {}).get(pull_request_id)
        if name is None:
            raise ProtocolError(ErrorCode.NOT_A_MEMBER,
                                f"join pull request {pull_request_id}'s room first",
                                pullRequestId=pull_request_id)
        if claimed is not None and claimed != name:
            raise ProtocolError(ErrorCode.IDENTITY_MISMATCH,
                                f"this connection is in pull request {pull_request_id}'s room "
                                f"as {name!r}, not {claimed!r}", pullRequestId=pull_request_id)
        return name

    def leave(self, sid: str, pull_request_id: int) -> Departure:
        """Remove ``sid`` from one room (the caller has checked membership)."""
        with self._lock:
            return self._remove(sid, pull_request_id)

    def disconnect(self, sid: str) -> List[Departure]:
        """Remove ``sid`` from every room it is in."""
        with self._lock:
            return [self._remove(sid, pull_request_id)
                    for pull_request_id in list(self._rooms_of.get(sid, ()))]

    def _remove(self, sid: str, pull_request_id: int) -> Departure:
        rooms = self._rooms_of.get(sid, {})
        username = rooms.pop(pull_request_id)
        if not rooms:
            self._rooms_of.pop(sid, None)
        members = self._members[pull_request_id]
        del members[sid]
        if not members:
            del self._members[pull_request_id]
        was_typing = self._typing.pop((sid, pull_request_id), None) is not None
        return Departure(pull_request_id, username, was_typing)

    def name_of(self, sid: str, pull_request_id: int) -> Optional[str]:
        """The name ``sid`` has in the room, or None if it is not a member."""
        return self._rooms_of.get(sid, {}).get(pull_request_id)

    def room_count_of(self, sid: str) -> int:
        """How many rooms ``sid`` is in."""
        return len(self._rooms_of.get(sid, ()))

    def rooms_of(self, sid: str) -> Dict[int, str]:
        """``{pull_request_id: username}`` for every room ``sid`` is in (a copy)."""
        return dict(self._rooms_of.get(sid, {}))

    def members(self, pull_request_id: int) -> Dict[str, str]:
        """``{sid: username}`` of a room (a copy)."""
        return dict(self._members.get(pull_request_id, {}))

    def room_sizes(self) -> List[int]:
        """Members (sockets) of every room with members, for metrics."""
        return [len(members) for members in list(self._members.values())]

    def room_count(self) -> int:
        """Number of rooms with at least one member."""
        return len(self._members)

    # -- typing -----------------------------------------------------------------------

    def start_typing(self, sid: str, pull_request_id: int) -> None:
        """Mark ``sid`` as typing in the room until ``typing_timeout`` from now."""
        with self._lock:  # the sweeper may be iterating on another thread (flask run)
            self._typing[(sid, pull_request_id)] = self._clock() + self.typing_timeout

    def stop_typing(self, sid: str, pull_request_id: int) -> bool:
        """Clear the typing mark; True if there was one (so the others must be told)."""
        key = (sid, pull_request_id)
        if key not in self._typing:  # every message asks; few were typing (no lock to read)
            return False
        with self._lock:
            return self._typing.pop(key, None) is not None

    def is_typing(self, sid: str, pull_request_id: int) -> bool:
        """Whether ``sid`` currently shows as typing in the room."""
        return (sid, pull_request_id) in self._typing

    def expire_typing(self) -> List[Tuple[str, int, str]]:
        """Clear the typing marks whose time ran out; return ``(sid, id, username)`` each."""
        now = self._clock()
        with self._lock:
            expired = [key for key, deadline in self._typing.items() if deadline <= now]
            result = []
            for sid, pull_request_id in expired:
                del self._typing[(sid, pull_request_id)]
                username = self._rooms_of.get(sid, {}).get(pull_request_id)
                if username is not None:
                    result.append((sid, pull_request_id, username))
            return result
