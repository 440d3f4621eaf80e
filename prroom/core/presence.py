"""Who is in each room across the whole service: one member per user, however many tabs.

Two backends with one interface, :class:`Presence`:

- :class:`MemoryPresence` (here), for a single process (the default).
- :class:`prroom.cluster.presence.RedisPresence`, for a cluster sharing
  ``PRROOM_MESSAGE_QUEUE``.  Each process counts
  its own sockets per (room, user) in a hash of its own and adds them into a cluster-wide
  hash per room, atomically (Lua), so "joined" is announced on a user's first socket anywhere
  and "left" on their last.  Each process keeps a heartbeat key with a TTL; any survivor
  reaps a process whose heartbeat expired (SIGKILL, lost host): it subtracts that process's
  counts and announces who left, and notes them.  A process that was only stalled (GC pause,
  SIGSTOP, partition) finds that note at its next heartbeat, puts its counts back and
  announces those users as joined again.  No Socket.IO imports here: announcements go
  through the callbacks the event layer passes in.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

logger = logging.getLogger("prroom")

Left = Tuple[int, str]  # (pull_request_id, username) that nobody in the cluster has any more
Joined = Tuple[int, str]  # (pull_request_id, username) back in the room after a repair

#: The pseudo pull request (no real one has id 0) whose "members" are authenticated
#: identities, one count per open connection: the cluster-wide connection cap's counter.
CONNECTIONS = 0


class Presence(Protocol):
    """What the event layer needs of a presence backend (both classes below provide it)."""

    clustered: bool

    def add(self, pull_request_id: int, username: str) -> bool:
        """Count one more socket of the user; True if it is their first in the room."""

    def join(self, pull_request_id: int, username: str) -> Tuple[bool, List[str]]:
        """:meth:`add`, and the room's users sorted (the joiner included), at once."""

    def remove(self, pull_request_id: int, username: str) -> bool:
        """Count one socket fewer; True if it was the user's last in the room."""

    def members(self, pull_request_id: int) -> List[str]:
        """The room's users, sorted."""

    def start(self, spawn: Callable[..., Any], sleep: Callable[[float], None],
              announce_left: Callable[[List[Left]], None],
              announce_joined: Optional[Callable[[List[Joined]], None]] = None) -> None:
        """Start whatever the backend runs in the background; ``announce_joined`` hears of
        users put back after this process was reaped while they were still here."""

    def healthy(self) -> bool:
        """Whether the backend is reachable."""


class MemoryPresence:
    """Presence for one process: ``{pull_request_id: {username: sockets}}``."""

    clustered = False

    def __init__(self) -> None:
        self._counts: Dict[int, Dict[str, int]] = {}
        self._lock = threading.Lock()

    def add(self, pull_request_id: int, username: str) -> bool:
        """Count one more socket of ``username`` in the room; True if it is their first."""
        with self._lock:
            users = self._counts.setdefault(pull_request_id, {})
            users[username] = users.get(username, 0) + 1
            return users[username] == 1

    def join(self, pull_request_id: int, username: str) -> Tuple[bool, List[str]]:
        """:meth:`add`, and the room's users sorted."""
        return self.add(pull_request_id, username), self.members(pull_request_id)

    def remove(self, pull_request_id: int, username: str) -> bool:
        """Count one socket fewer; True if that was the user's last in the room."""
        with self._lock:
            users = self._counts.get(pull_request_id, {})
            remaining = users.get(username, 0) - 1
            if remaining > 0:
                users[username] = remaining
                return False
            users.pop(username, None)
            if not users:
                self._counts.pop(pull_request_id, None)
            return True

    def members(self, pull_request_id: int) -> List[str]:
        """The room's users, sorted."""
        return sorted(self._counts.get(pull_request_id, ()))

    def start(self, spawn: Callable[..., Any], sleep: Callable[..., Any],
              announce_left: Callable[[List[Left]], None],
              announce_joined: Optional[Callable[[List[Joined]], None]] = None) -> None:
        """Nothing runs in the background for one process."""

    def healthy(self) -> bool:
        """Always reachable."""
        return True
