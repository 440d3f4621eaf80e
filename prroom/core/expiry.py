"""When each connection's identity runs out: one heap for the whole process.

A timer per connection would be one more object and callback per socket for the event loop
to hold; here a connect costs one heap push, a sweep pops only what is due, and a connection
that closed first is forgotten lazily (its heap entry is skipped when it comes up).
"""
from __future__ import annotations

import heapq
from typing import Dict, List, Tuple


class ExpiryQueue:
    """Keys (socket ids) with a deadline; :meth:`due` hands out those whose time came."""

    def __init__(self) -> None:
        self._heap: List[Tuple[float, str]] = []
        self._deadline: Dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._deadline)

    def add(self, key: str, deadline: float) -> None:
        """Expire ``key`` at ``deadline`` (replacing any earlier deadline of it)."""
        self._deadline[key] = deadline
        heapq.heappush(self._heap, (deadline, key))
        # closed connections leave stale entries behind: rebuild before they dominate
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._deadline):
            self._heap = [(when, k) for k, when in self._deadline.items()]
            heapq.heapify(self._heap)

    def discard(self, key: str) -> None:
        """Forget ``key`` (its connection closed)."""
        self._deadline.pop(key, None)

    def due(self, now: float) -> List[str]:
        """The keys whose deadline is ``now`` or earlier, each once; they are forgotten."""
        heap, deadline = self._heap, self._deadline
        expired: List[str] = []
        while heap and heap[0][0] <= now:
            when, key = heapq.heappop(heap)
            if deadline.get(key) == when:
                del deadline[key]
                expired.append(key)
        return expired
