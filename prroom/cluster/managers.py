"""The clustered manager: python-socketio's Redis manager with a channel per room.

:class:`ClusterManager` adds to python-socketio's Redis manager a channel per room, a
pipelined publisher and self-echo skipped undecoded, on the room index of
:mod:`prroom.cluster.room_index`; its Redis connections are :mod:`prroom.cluster.publisher`
and :mod:`prroom.cluster.subscriber`, connection state recovery's part is
:mod:`prroom.cluster.recovery`.
"""
from __future__ import annotations

import inspect
import threading
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import socketio
from socketio import packet as sio_packet

# QueueUnavailable stays importable from here: post_message's docstring named this path
from prroom.cluster.channels import QueueUnavailable as QueueUnavailable
from prroom.cluster.channels import pubsub_mode
from prroom.cluster.headers import HEADERS, HEADS, published_head, read_broadcast
from prroom.cluster.publisher import Publisher, Ticket
from prroom.cluster.recovery import RecoverableRoomsMixin
from prroom.cluster.room_index import IndexedRoomsMixin, emit_arguments
from prroom.cluster.subscriber import Subscriber
from prroom.cluster.urls import is_cluster_url, keyspace, redis_client
from prroom.core.protocol import ROOM_PREFIX
from prroom.internals import packet_codec
from prroom.internals.packet_codec import data_is_binary
from prroom.transport.framing import message_packet, message_packets

try:  # redis-py 5+ can speak RESP3, and 8 does by default
    import redis as _redis

    _SPEAKS_RESP3 = "protocol" in inspect.signature(_redis.connection.AbstractConnection).parameters
except (ImportError, AttributeError):  # the redis extra is not installed, or redis-py 4
    _SPEAKS_RESP3 = False


#: The event name a cluster-wide command travels under (:meth:`ClusterManager.broadcast_command`):
#: an ordinary python-socketio emit on the deployment channel, to a room nobody is ever in,
#: so a process that does not know it (or a stock manager) delivers it to nobody.
COMMAND_EVENT = "prroom:command"
COMMAND_ROOM = "prroom:command"


def published_ticket(server: Any) -> Optional[Ticket]:
    """The ticket of the last emit of this greenlet on ``server`` that was published to the
    message queue (wait on it, or ask it to call back), or None: one process, or an emit
    that stayed local."""
    take = getattr(getattr(server, "manager", None), "take_ticket", None)
    return take() if take is not None else None


class ClusterManager(RecoverableRoomsMixin, IndexedRoomsMixin, socketio.RedisManager):
    """python-socketio's Redis manager with a channel per room and a pipelined publisher.

    The stock manager publishes every emit synchronously on one deployment-wide channel,
    which every process receives and decodes.  Here (see :mod:`prroom.cluster.publisher`
    and :mod:`prroom.cluster.subscriber`):

    * an emit to a room named ``room_prefix...`` is published on that room's own channel
      (``{channel}:{room}``, sharded pub/sub where Redis has it), and a process is
      subscribed to a room's channel exactly while it has members there: subscribed on the
      first local :meth:`enter_room`, which returns only once Redis confirmed it, and
      unsubscribed when the last local member leaves.  Everything else (emits to everyone or
      to other rooms, remote disconnects, stock python-socketio emitters) stays on the
      deployment channel ``channel``;
    * local members get an emit at once; the publish is queued and pipelined with every
      other one of the same event-loop turn on one long-lived connection, and :meth:`emit`
      returns a :class:`~prroom.cluster.publisher.Ticket` whose ``wait()`` says
      whether it reached Redis (raising :class:`QueueUnavailable` if not);
    * a published message starts with the publishing process's id, so a process skips its
      own copies coming back without decoding them.

    :attr:`queue_healthy` is False while the publisher fails or the subscriber is not
    subscribed to every room it hosts (after a Redis restart, until it resubscribed).
    """

    @classmethod
    def of_deployment(cls, url: str, deployment: str, pubsub: str = "auto",
                      **kwargs: Any) -> "ClusterManager":
        """The manager of the deployment named ``deployment`` (``PRROOM_CHANNEL``) on
        ``url``: its channels start ``prroom:<deployment>``, its rooms are ``pr:<id>``."""
        return cls(url, channel=f"prroom:{keyspace(url, deployment)}", room_prefix=ROOM_PREFIX,
                   pubsub=pubsub, **kwargs)

    def __init__(self, url: str, channel: str = "prroom", retry_max: float = 2.0,
                 room_prefix: str = "pr:", pubsub: str = "auto", **kwargs: Any) -> None:
        kwargs.setdefault("redis_options", {"socket_connect_timeout": 2})
        if _SPEAKS_RESP3:
            # RESP2: pub/sub messages are plain replies; redis-py's RESP3 push handling
            # formats each one into a debug string (a URL's ?protocol=3 still wins)
            kwargs["redis_options"] = {"protocol": 2, **kwargs["redis_options"]}
        super().__init__(url, channel=channel, **kwargs)
        self.room_prefix = room_prefix
        self._own_prefix = f"{self.host_id}:"
        self._own_prefix_bytes = self._own_prefix.encode()
        self._client: Any = None  # a redis-py client, made on first connect
        self._on_cluster = is_cluster_url(url)
        self._listening = False
        self._tickets = threading.local()
        mode = pubsub_mode(pubsub)
        self.publisher = Publisher(self._new_connection, self._start_task, mode)
        self.subscriber = None if self.write_only else Subscriber(
            self._new_connection, channel, self._sleep, mode, retry_max=retry_max,
            on_reconnect=self.publisher.reset, on_resubscribed=self._backfill,
            skip=self._own_prefix_bytes)  # own publishes come back: delivered already
        self._init_recovery()

    # -- connections and tasks ------------------------------------------------------------

    def _new_connection(self) -> Any:
        # One client (and pool) per manager, only ever used to make connections, so that a
        # Sentinel URL resolves the current master whenever we (re)connect.
        if self._client is None:
            self._redis_connect()
            self._client = self.redis
        elif self._on_cluster:
            # a reconnect: the slot may have moved (failover, resharding); ask the cluster
            self._client.nodes_manager.initialize()
        if self._on_cluster:
            # every channel and key of the deployment is in one slot: its owner's
            node = self._client.get_node_from_key(self.channel)
            return self._client.get_redis_connection(node).connection_pool.make_connection()
        return self._client.connection_pool.make_connection()

    def _redis_connect(self) -> None:
        """python-socketio's, which knows no Redis Cluster: for ``redis+cluster://``, a
        redis-py ``RedisCluster`` (prroom's listener replaces the stock one's pubsub)."""
        if not self._on_cluster:
            super()._redis_connect()
            return
        self.redis = redis_client(self.redis_url, **self.redis_options)
        self.connected = True

    def _start_task(self, target: Callable[[], None]) -> Any:
        if self.server is not None:
            return self.server.start_background_task(target)
        thread = threading.Thread(target=target, name="prroom-publisher", daemon=True)
        thread.start()
        return thread

    def _sleep(self, seconds: float) -> None:
        if self.server is not None:
            self.server.sleep(seconds)
        else:
            time.sleep(seconds)

    @property
    def queue_healthy(self) -> bool:
        """Whether publishes reach Redis and every hosted room is subscribed."""
        return self.publisher.healthy and (self.subscriber is None or self.subscriber.healthy)

    def initialize(self) -> None:
        """python-socketio's, once per manager (see below)."""
        # Flask-SocketIO's test client calls this again per client: one listener only.
        if self._listening:
            return
        self._listening = True
        super().initialize()

    def start_listening(self) -> None:
        """Start the listener now instead of at the first connection (readiness asks)."""
        if self.server is not None and not self.write_only:
            self.initialize()

    # -- channels -------------------------------------------------------------------------

    def room_channel(self, room: Any) -> Optional[str]:
        """The pub/sub channel of ``room``, or None if it travels on the deployment one."""
        if isinstance(room, str) and room.startswith(self.room_prefix):
            return f"{self.channel}:{room}"
        return None

    def _subscribe_rooms(self, namespace: str, room: Any) -> Optional[threading.Event]:
        channel = self.room_channel(room)
        if channel is not None and self.subscriber is not None:
            return self.subscriber.want(channel)
        return None

    def _unsubscribe_if_empty(self, namespace: str, room: Any) -> None:
        channel = self.room_channel(room)
        if channel is None or self.subscriber is None:
            return
        if room not in self.rooms.get(namespace, {}) and not self.preparing(room):
            self.subscriber.drop(channel)
            self.forget_room(room)

    def basic_enter_room(self, sid: str, namespace: str, room: Any,
                         eio_sid: Optional[str] = None) -> None:
        """python-socketio's, with the room channel kept in step."""
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._subscribe_rooms(namespace, room)

    def enter_room(self, sid: str, namespace: str, room: Any,
                   eio_sid: Optional[str] = None) -> None:
        """Add a local socket to ``room``; return once its channel is subscribed."""
        super().enter_room(sid, namespace, room, eio_sid=eio_sid)
        pending = self._subscribe_rooms(namespace, room)
        if pending is not None and not pending.wait(self.subscribe_timeout):
            self._get_logger().error("message queue: no confirmation of the subscription to "
                                     "%s within %s s", room, self.subscribe_timeout)

    #: How long a first join waits for Redis to confirm the room's subscription.
    subscribe_timeout = 2.0

    def basic_leave_room(self, sid: str, namespace: str, room: Any) -> None:
        """python-socketio's, with the room channel kept in step."""
        super().basic_leave_room(sid, namespace, room)
        self._unsubscribe_if_empty(namespace, room)

    def basic_disconnect(self, sid: str, namespace: str,
                         **kwargs: Any) -> None:
        """python-socketio's, with the room channel kept in step."""
        rooms = list(self._rooms_by_sid.get((namespace, sid), ()))
        super().basic_disconnect(sid, namespace, **kwargs)
        for room in rooms:
            self._unsubscribe_if_empty(namespace, room)

    # -- publishing -----------------------------------------------------------------------

    def emit(self, event: str, data: Any, namespace: Optional[str] = None, room: Any = None,
             skip_sid: Any = None, callback: Optional[Callable[..., object]] = None, to: Any = None,
             **kwargs: Any) -> Optional[Ticket]:
        """Deliver to local members now and queue the publish for the other processes; the
        publish's :class:`~prroom.cluster.publisher.Ticket` (None: ``ignore_queue=True``)."""
        room = to or room
        if kwargs.get("ignore_queue") or callback is not None:  # callbacks stay local too
            return self._stock_emit(event, data, namespace, room, skip_sid, callback, kwargs)
        ticket = self._tickets.last = self.emit_published(event, data, namespace or "/", room,
                                                          skip_sid)
        return ticket  # kept for take_ticket() too

    def emit_published(self, event: str, data: Any, namespace: str, room: Any = None,
                       skip_sid: Any = None) -> Optional[Ticket]:
        """:meth:`emit` without a callback, its ticket returned only (not kept for
        :meth:`take_ticket`: a greenlet-local's attribute cost per message).

        A room broadcast is encoded once: the same text goes to local members and, after a
        small header, to the room's channel, where other processes pass it on as it is.
        That path runs for every chat message, so the room's channel, the packet class and
        the remembered header are looked up here rather than through their helpers (each
        Python call per message showed in the cost of a clustered one)."""
        args = emit_arguments(data)
        if isinstance(room, str) and room.startswith(self.room_prefix):
            server = self.server
            # a write-only manager (a posting app) has no server, and the stock codec
            packet_class = sio_packet.Packet if server is None else server.packet_class
            # plain JSON on "/": the text alone, without a packet object (room_index.emit)
            encoded: Any = packet_codec.event_text(packet_class, namespace, [event, *args])
            if encoded is None:
                packet = packet_class(sio_packet.EVENT, namespace=namespace,
                                      data=[event, *args])
                if packet.packet_type != sio_packet.EVENT:  # attachments: a BINARY_EVENT
                    return self._stock_emit(event, data, namespace, room, skip_sid, None, {})
                encoded = packet.encode()
            if isinstance(encoded, str):  # (another serializer may encode to bytes)
                utf8 = encoded.encode()  # once, for the members' frame and the publish alike
                self._deliver(namespace, room, skip_sid, [message_packet(encoded, utf8)], event)
                prefix = self._own_prefix
                # (a list of sids to skip cannot be a key: published_head builds that head)
                head = HEADS.get((prefix, room, skip_sid, namespace, event)) \
                    if skip_sid is None or type(skip_sid) is str else None
                if head is None:
                    head = published_head(prefix, room, skip_sid, namespace, event)
                return self.publisher.publish("room", f"{self.channel}:{room}", head + utf8)
        elif data_is_binary(args):
            return self._stock_emit(event, data, namespace, room, skip_sid, None, {})
        # The stock message, built without its binary scan (python-socketio walks the data
        # with a list per level: measured a tenth of a clustered emit).
        message = {"method": "emit", "event": event,
                   "data": list(data) if isinstance(data, tuple) else [data],
                   "binary": False, "namespace": namespace, "room": room,
                   "skip_sid": skip_sid, "callback": None, "host_id": self.host_id}
        self._handle_emit(message)
        return self._publish(message)

    def _stock_emit(self, event: str, data: Any, namespace: Optional[str], room: Any,
                    skip_sid: Any, callback: Optional[Callable[..., object]],
                    kwargs: Dict[str, Any]) -> Optional[Ticket]:
        # python-socketio's path: callbacks, binary attachments, local-only emits
        self._tickets.last = None
        super().emit(event, data, namespace=namespace, room=room, skip_sid=skip_sid,
                     callback=callback, **kwargs)
        return getattr(self._tickets, "last", None)

    def take_ticket(self) -> Optional[Ticket]:
        """The ticket of the last publish made on this greenlet (thread), once."""
        tickets = self._tickets
        ticket = getattr(tickets, "last", None)
        tickets.last = None
        return ticket

    def _publish(self, data: Dict[str, Any]) -> Ticket:
        encoded = self._own_prefix + self.json.dumps(data)
        channel = self.room_channel(data.get("room")) if data.get("method") == "emit" else None
        ticket = self.publisher.publish("room" if channel else "deployment",
                                        channel or self.channel, encoded)
        self._tickets.last = ticket
        return ticket

    def broadcast_command(self, name: str, args: Dict[str, Any]) -> Tuple[Any, Optional[Ticket]]:
        """Run command ``name`` here and publish it on the deployment channel: every other
        process of the deployment runs it too (a write-only manager only publishes)."""
        result = self.run_command(name, args) if self.server is not None else None
        ticket = self._publish({"method": "emit", "event": COMMAND_EVENT,
                                "data": [{"command": name, "args": args}], "binary": False,
                                "namespace": "/", "room": COMMAND_ROOM, "skip_sid": None,
                                "callback": None, "host_id": self.host_id})
        self._tickets.last = None  # not an emit's: take_ticket() must not hand it out
        return result, ticket

    def _handle_emit(self, message: Dict[str, Any]) -> None:
        # every delivery in this process, of local and remote emits alike, passes here
        room: Any = message.get("room")
        if message.get("event") == COMMAND_EVENT and room == COMMAND_ROOM:
            return self._handle_command(message)
        encoded = message.get("packet")
        if encoded is not None:  # another process's room broadcast (emit_published)
            return self._deliver(message["namespace"], room, message["skip_sid"],
                                 message_packets([encoded]), message["event"])
        if message.get("recoverable"):
            if not self._track_recoverable(room, message):
                return None  # delivered already (a catch-up after an outage had it)
            if self._replayed:
                message = self._skip_replayed(room, message)
        self._count_deliveries(message.get("event"), message.get("namespace"),
                               room, message.get("skip_sid"))
        super()._handle_emit(message)

    def _handle_command(self, message: Dict[str, Any]) -> None:
        data = message.get("data")
        body = data[0] if isinstance(data, list) and data else None
        if not isinstance(body, dict) or not isinstance(body.get("args"), dict) or \
                not isinstance(body.get("command"), str):
            self._get_logger().warning("message queue: ignored a malformed command")
            return
        try:
            self.run_command(body["command"], body["args"])
        except Exception:  # one bad command must not stop the listener
            self._get_logger().exception("message queue: command %r failed", body["command"])

    # -- listening ------------------------------------------------------------------------

    def _listen(self) -> Iterator[Dict[str, Any]]:
        """python-socketio's listener loop, fed by the subscriber: another process's room
        broadcast is delivered here (what most of the traffic is), anything else is yielded
        as a message dict to python-socketio's dispatch.

        A room broadcast skips the message dict, python-socketio's debug line and dispatch,
        and is framed from its bytes.  Its header, when seen before, is read straight from
        headers.HEADERS (read_broadcast's work without its two calls); this loop's body
        does it inline, with the subscriber's batches taken a read at a time: it runs for
        every message another process published."""
        skip = len(self._own_prefix_bytes)
        loads = self.json.loads
        assert self.subscriber is not None, "a write-only manager does not listen"
        for payloads in self.subscriber.batches():
            for payload in payloads:
                if payload[skip:skip + 1] != b"[" or payload[:1] == b"{":
                    try:  # a stock python-socketio emitter's bare JSON, or our own message
                        yield loads(payload if payload[:1] == b"{" else payload[skip:])
                    except ValueError:
                        self._get_logger().warning("message queue: ignored a message that "
                                                   "is not JSON")
                    continue
                newline = payload.find(b"\n", skip)
                header = HEADERS.get(payload[skip:newline]) if newline >= 0 else None
                try:
                    if header is None:
                        room, skip_sid, namespace, event, utf8 = read_broadcast(payload, skip)
                    else:
                        room, skip_sid, namespace, event = header
                        utf8 = payload[newline + 1:]
                except ValueError:
                    self._get_logger().warning("message queue: ignored a message that is not "
                                               "JSON")
                    continue
                try:
                    self._deliver(namespace, room, skip_sid,
                                  [message_packet(utf8.decode(), utf8)], event)
                except Exception:  # as python-socketio's listener: one bad message, one line
                    self._get_logger().exception("message queue: a room broadcast failed")
