"""python-socketio's client manager with a per-socket room index.

The stock manager finds a socket's rooms (``rooms(sid)``, and every disconnect) by scanning
every room of the namespace, including one private room per connected socket, so each
disconnect costs O(sockets on the server).  The mixin below keeps the reverse index
``(namespace, sid) -> rooms`` so both cost O(rooms of that socket).  It is a mixin so the same
index serves the in-memory manager and the message-queue managers of a clustered deployment.
"""
from __future__ import annotations

import socketio


class IndexedRoomsMixin:
    """Keeps ``self._rooms_by_sid[(namespace, sid)] = {room, ...}`` beside ``self.rooms``."""

    def __init__(self, *args, **kwargs):
        # Built here, not in initialize(): Flask-SocketIO's test client calls initialize()
        # again for every client it creates, which must not forget connected sockets.
        self._rooms_by_sid = {}
        super().__init__(*args, **kwargs)

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):  # noqa: D102
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_by_sid.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid, namespace, room):  # noqa: D102
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_by_sid.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_by_sid[(namespace, sid)]

    def basic_disconnect(self, sid, namespace, **kwargs):  # noqa: D102
        rooms = self._rooms_by_sid.pop((namespace, sid), ())
        for room in list(rooms):
            # skip our own override: the index entry is already gone
            super(IndexedRoomsMixin, self).basic_leave_room(sid, namespace, room)
        # The rest of the parent's bookkeeping, without its scan of every room.
        if sid in self.callbacks:
            del self.callbacks[sid]
        for name in ("pending_connect", "pending_disconnect"):
            pending = getattr(self, name, {})
            if namespace in pending and sid in pending[namespace]:
                pending[namespace].remove(sid)
                if not pending[namespace]:
                    del pending[namespace]

    def get_rooms(self, sid, namespace):  # noqa: D102
        return [room for room in self._rooms_by_sid.get((namespace, sid), ()) if room is not None]


class IndexedManager(IndexedRoomsMixin, socketio.Manager):
    """In-memory manager (single process) with O(rooms of the socket) lookups."""
