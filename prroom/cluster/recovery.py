"""The clustered manager's part in connection state recovery (see prroom.server.recovery).

A recoverable room broadcast is published by a Lua script that numbers it, keeps it in the
room's Redis stream and publishes it with its offset filled in, atomically; every process,
the publishing one too, delivers it when it comes back from Redis, so the stream's order is
the order every member received the room's packets in.  This mixin tracks, per hosted room,
the newest sequence delivered (what a new member has "seen" when it joins, and where to
catch up from after an outage), lets a restore listen in on rooms it is about to enter, and
skips a packet delivered twice (a catch-up and the live copy).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from prroom.cluster.publisher import ROOM_PUBLISH, Publisher, Ticket
from prroom.cluster.recovery_store import split_offset
from prroom.cluster.subscriber import Subscriber

logger = logging.getLogger("prroom")

#: Where the offset goes in a recoverable message, until the publish script fills it in.
_OFFSET_SLOT = "\x00offset"
#: Builds the publish script's KEYS and ARGV: (room, message head, message tail, publish
#: command, channel, what ``emit_recoverable`` was given as ``once``) -> (keys, args).
RecoverableArgs = Callable[[str, str, str, str, str, Any], Tuple[List[str], List[Any]]]

if TYPE_CHECKING:  # pragma: no cover - what the mixin is mixed into
    from socketio import RedisManager as _Base
else:
    _Base = object


def offset_of(data: Any) -> Tuple[Optional[str], Optional[int]]:
    """The epoch and sequence in a recoverable message's offset (its last argument)."""
    if not isinstance(data, list) or not data:
        return None, None
    return split_offset(data[-1])


class RecoverableRoomsMixin(_Base):
    """Recoverable broadcasts for :class:`~prroom.cluster.managers.ClusterManager`."""

    # what ClusterManager provides
    publisher: Publisher
    subscriber: Optional[Subscriber]
    subscribe_timeout: float
    _tickets: threading.local
    _client: Any
    room_channel: Callable[[Any], Optional[str]]
    start_listening: Callable[[], None]
    _sleep: Callable[[float], None]
    _subscribe_rooms: Callable[[str, Any], Optional[threading.Event]]
    _unsubscribe_if_empty: Callable[[str, Any], None]

    def _init_recovery(self) -> None:
        # enable_recovery() sets the script; until then nothing here is used
        self._recovery: Optional[Tuple[str, RecoverableArgs]] = None
        self._stream_of: Optional[Callable[[str], str]] = None
        self._epoch: Optional[str] = None  # of the offsets delivered (a new Redis, a new one)
        self._delivered_seq: Dict[str, int] = {}
        self._taps: Dict[str, List[List[Dict[str, Any]]]] = {}
        self._preparing: Dict[str, int] = {}
        # room -> {sid: the newest sequence a restore replayed to it, not delivered here yet}
        self._replayed: Dict[str, Dict[str, int]] = {}

    def preparing(self, room: str) -> bool:
        """Whether a restore is about to enter ``room`` (keep its subscription)."""
        return room in self._preparing

    def forget_room(self, room: str) -> None:
        """This process no longer hosts ``room``."""
        self._delivered_seq.pop(room, None)
        self._replayed.pop(room, None)

    def replayed(self, room: str, sid: str, seq: int) -> None:
        """A restore just put ``sid`` in ``room`` and sends it the room's packets up to
        ``seq``, read from Redis.  The listener may not have read all of them yet (the
        read's reply and the subscription are two connections): their live copies, when
        they come, go to the room's other members but not to ``sid`` a second time."""
        if seq > self._delivered_seq.get(room, -1):
            self._replayed.setdefault(room, {})[sid] = seq

    def _skip_replayed(self, room: str, message: Dict[str, Any]) -> Dict[str, Any]:
        """``message`` (recoverable, about to be delivered), skipping the sockets that a
        restore sent it to already (:meth:`replayed`)."""
        marks = self._replayed.get(room)
        if not marks:
            return message
        seq = offset_of(message.get("data"))[1]
        if seq is None:
            return message
        skips = [sid for sid, upto in marks.items() if seq <= upto]
        for sid in [sid for sid, upto in marks.items() if upto <= seq]:
            del marks[sid]  # caught up: later packets reach it live only
        if not marks:
            del self._replayed[room]
        if not skips:
            return message
        skip_sid = message.get("skip_sid")
        if skip_sid is not None:
            skips += skip_sid if isinstance(skip_sid, list) else [skip_sid]
        return dict(message, skip_sid=skips)

    def _track_recoverable(self, room: str, message: Dict[str, Any]) -> bool:
        """Note a recoverable packet about to be delivered; False if it was already."""
        epoch, seq = offset_of(message.get("data"))
        if epoch != self._epoch:
            if self._epoch is not None:  # Redis restarted empty: numbers start again
                self._delivered_seq.clear()
                self._replayed.clear()
            self._epoch = epoch
        if seq is not None:
            if seq <= self._delivered_seq.get(room, -1):
                return False
            self._delivered_seq[room] = seq
        for tap in self._taps.get(room, ()):
            tap.append(message)
        return True

    def enable_recovery(self, script: str, arguments: RecoverableArgs,
                        stream_of: Callable[[str], str]) -> None:
        """Publish recoverable broadcasts (:meth:`emit_recoverable`) with the Lua ``script``,
        which numbers each, keeps it for returning sessions and publishes it with the
        offset filled in; ``arguments`` builds the script's KEYS and ARGV; ``stream_of``
        names the Redis stream where a room's recent packets are, to catch up from after
        an outage (:meth:`_backfill`)."""
        self._recovery = (self.publisher.load_script(script), arguments)
        self._stream_of = stream_of

    def emit_recoverable(self, event: str, data: Any, namespace: str, room: str,
                         skip_sid: Optional[str] = None, once: Any = None) -> Ticket:
        """Broadcast ``data`` to ``room`` with an offset as last argument, on every process.

        Local members get it when it comes back from Redis, like everyone else: the order
        in which Redis numbered the room's packets is then the order every member received
        them in, which is what makes an offset exact.  ``once`` goes to the script's
        arguments as it is (a send's duplicate check, which may then publish nothing).
        """
        assert self._recovery is not None, "enable_recovery() first"
        sha, arguments = self._recovery
        message = {"method": "emit", "event": event, "data": [data, _OFFSET_SLOT],
                   "binary": False, "namespace": namespace, "room": room,
                   # no host id: python-socketio's listener skips its own host's emits,
                   # and this one is delivered here only when it comes back
                   "skip_sid": skip_sid, "callback": None, "host_id": None,
                   "recoverable": True}
        # only the data can hold the slot's text before it; the keys after it are ours
        head, _, tail = self.json.dumps(message).rpartition(self.json.dumps(_OFFSET_SLOT))
        channel = self.room_channel(room)
        keys, args = arguments(room, head, tail, ROOM_PUBLISH, channel or self.channel, once)
        ticket = self.publisher.run_script(sha, keys, args)
        self._tickets.last = ticket
        return ticket

    def _backfill(self) -> None:
        """After an outage, deliver what each hosted room's stream got meanwhile, in order.

        Runs in the listener, once Redis confirmed every subscription again and before any
        later message is read: what it delivers comes first, and what arrives afterwards
        that it already delivered is skipped (:meth:`_handle_emit`).  Without recovery
        (no streams), or for a room with nothing delivered yet, there is nothing to do.
        """
        if self._stream_of is None or not self._delivered_seq:
            return
        backlog = 0
        try:
            client = self._client
            pipe = client.pipeline(transaction=False)
            rooms = list(self._delivered_seq.items())
            for room, seq in rooms:
                pipe.xrange(self._stream_of(room), f"0-{seq + 1}", "+")
            for (room, _), entries in zip(rooms, pipe.execute()):
                for _, fields in entries:
                    raw = fields.get(b"m") or fields.get("m")
                    try:
                        message = self.json.loads(raw)
                    except (TypeError, ValueError):
                        continue
                    if message.get("room") == room:
                        self._handle_emit(message)
                        backlog += 1
        except Exception as exc:  # Redis went away again: the next outage's catch-up
            logger.error("message queue: could not catch up after an outage: %s", exc)
            return
        if backlog:
            logger.warning("message queue: delivered %d room packet(s) published while this "
                           "process was not subscribed", backlog)

    def delivered_seq(self, room: str) -> Optional[int]:
        """The sequence of the newest recoverable packet delivered to ``room`` here (None
        if none since this process subscribed to it)."""
        return self._delivered_seq.get(room)

    def note_seq(self, room: str, seq: int) -> None:
        """Everything of ``room`` up to ``seq`` is delivered as far as new members go (a
        first local member read it before subscribing)."""
        if self._delivered_seq.get(room, -1) < seq:
            self._delivered_seq[room] = seq

    def prepare_rooms(self, rooms: List[str]) -> List[List[Dict[str, Any]]]:
        """Subscribe to ``rooms`` without a member yet and record what arrives for them:
        a restore reads what a session missed from Redis, and this catches what arrives
        while it reads.  Call :meth:`release_rooms` with the same rooms afterwards."""
        taps: List[List[Dict[str, Any]]] = []
        waits = []
        self.start_listening()
        deadline = time.monotonic() + self.subscribe_timeout
        while self.subscriber is not None and not self.subscriber.connected and \
                time.monotonic() < deadline:  # a fresh process: the listener is connecting
            self._sleep(0.01)
        for room in rooms:
            self._preparing[room] = self._preparing.get(room, 0) + 1
            tap: List[Dict[str, Any]] = []
            self._taps.setdefault(room, []).append(tap)
            taps.append(tap)
            pending = self._subscribe_rooms("/", room)
            if pending is not None:
                waits.append(pending)
        for pending in waits:
            pending.wait(self.subscribe_timeout)
        return taps

    def release_rooms(self, rooms: List[str], taps: List[List[Dict[str, Any]]],
                      namespace: str = "/") -> None:
        """Stop recording for a restore; unsubscribe from rooms nobody entered."""
        for room, tap in zip(rooms, taps):
            listening = self._taps.get(room, [])
            if tap in listening:
                listening.remove(tap)
            if not listening:
                self._taps.pop(room, None)
            left = self._preparing.get(room, 1) - 1
            if left:
                self._preparing[room] = left
            else:
                self._preparing.pop(room, None)
            self._unsubscribe_if_empty(namespace, room)
