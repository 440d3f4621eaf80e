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

    #: Event whose deliveries are counted, and the callable told how many (metrics).
    counted_event = "pr-room-message"
    on_delivered = None

    def __init__(self, *args, **kwargs):
        # Built here, not in initialize(): Flask-SocketIO's test client calls initialize()
        # again for every client it creates, which must not forget connected sockets.
        self._rooms_by_sid = {}
        super().__init__(*args, **kwargs)

    def _count_deliveries(self, event, namespace, room, skip_sid):
        if self.on_delivered is None or event != self.counted_event:
            return
        members = self.rooms.get(namespace or "/", {}).get(room, ())
        self.on_delivered(len(members) - (1 if skip_sid in members else 0))

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

    def emit(self, event, data, namespace, room=None, skip_sid=None, callback=None,
             to=None, **kwargs):  # noqa: D102
        self._count_deliveries(event, namespace, to or room, skip_sid)
        return super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                            callback=callback, to=to, **kwargs)


class QueueUnavailable(ConnectionError):
    """A broadcast reached this process's members but not the message queue."""


class ClusterManager(IndexedRoomsMixin, socketio.RedisManager):
    """python-socketio's Redis manager, made to say when the queue is away.

    The stock manager delivers to local members, then publishes for the other processes;
    when the publish fails it logs and carries on, so the sender never learns that only part
    of the room got the message.  Here a failed publish raises :class:`QueueUnavailable`
    after local delivery, and the listener reconnects with a backoff capped at
    ``retry_max`` seconds (stock: 60) so cross-process delivery resumes soon after Redis does.
    """

    def __init__(self, url, channel="prroom", retry_max=2.0, **kwargs):
        kwargs.setdefault("redis_options", {"socket_connect_timeout": 2})
        super().__init__(url, channel=channel, **kwargs)
        self.retry_max = retry_max
        self.queue_healthy = True

    def _handle_emit(self, message):
        # every delivery in this process, of local and remote emits alike, passes here
        self._count_deliveries(message.get("event"), message.get("namespace"),
                               message.get("room"), message.get("skip_sid"))
        return super()._handle_emit(message)

    def _publish(self, data):
        for attempt in (1, 2):
            try:
                if not self.connected:
                    self._redis_connect()
                result = self.redis.publish(self.channel, self.json.dumps(data))
                self.queue_healthy = True
                return result
            except Exception as exc:
                self.connected = False
                if attempt == 2:
                    self.queue_healthy = False
                    raise QueueUnavailable(f"message queue unreachable: {exc}") from None

    def _redis_listen_with_retries(self):
        # The listener gets a client of its own.  The stock manager shares one with the
        # publisher and replaces it on every (re)connect, which closed the other side's
        # connection under it: measured, the listener then spun and clustered delivery fell
        # from ~18,000 to ~2,500 messages/s.
        delay = 0.1
        pubsub = None
        while True:
            try:
                if pubsub is None:
                    client = self._get_redis_module().Redis.from_url(self.redis_url,
                                                                     **self.redis_options)
                    pubsub = client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.channel)
                    delay = 0.1
                    if not self.queue_healthy:
                        self._get_logger().warning("message queue reachable again")
                    self.queue_healthy = True
                yield from pubsub.listen()
                pubsub = None  # listen() ended: the subscription is gone, make a new one
            except Exception as exc:
                if self.queue_healthy:
                    self._get_logger().error("message queue unreachable (%s); retrying", exc)
                self.queue_healthy = False
                pubsub = None
                self.server.sleep(delay)
                delay = min(delay * 2, self.retry_max)
