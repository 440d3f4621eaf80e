"""The cluster's subscribing connection: the deployment channel and the rooms wanted here.

:class:`Subscriber` holds one long-lived connection subscribed to the deployment channel
and to each room channel this process wants.  ``want(channel)`` subscribes and returns an
event set once Redis confirmed the subscription (so a join can be acked only when no later
message can miss it); ``drop(channel)`` unsubscribes.  After the connection is lost it
reconnects with a capped backoff and subscribes again to every channel still wanted, and
:attr:`Subscriber.healthy` stays False until Redis confirmed all of them.
"""
from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from prroom.cluster.channels import TIMED_OUT, ModeProbe, read_replies

logger = logging.getLogger("prroom")
Command = Tuple[str, ...]  # ("SUBSCRIBE", channel), as redis-py packs it


class Subscriber:
    """The process's one subscription connection, and the channels it should be on.

    Channels are ``str``; ``deployment`` is subscribed to always, room channels while
    wanted.  :meth:`messages` is the listener's loop: it yields the payload (bytes) of
    every message published on a subscribed channel, forever, reconnecting as needed.
    """

    #: With no traffic for this long the listener sends PING; no answer to it by the next
    #: period means the connection is dead (a vanished host never closes it).
    ping_interval = 5.0

    def __init__(self, connect: Callable[[], Any], deployment: str,
                 sleep: Callable[[float], None], sharded: ModeProbe, retry_max: float = 2.0,
                 on_reconnect: Optional[Callable[[], None]] = None,
                 on_resubscribed: Optional[Callable[[], None]] = None,
                 skip: Optional[bytes] = None) -> None:
        self._connect = connect
        #: messages whose payload starts with these bytes are not yielded (own publishes)
        self.skip = skip
        self._deployment = deployment
        self._on_resubscribed = on_resubscribed
        self._sleep = sleep
        self._probe = sharded
        self.retry_max = retry_max
        self._on_reconnect = on_reconnect
        # a redis-py Connection (untyped: its parser and socket calls are what is used)
        self._connection: Any = None
        self._sharded = False
        self._send_lock = threading.Lock()
        # wanted room channel -> the event its joiners wait on (set once confirmed)
        self._wanted: Dict[str, threading.Event] = {}
        # SUBSCRIBE/SSUBSCRIBE commands sent on this connection and not yet confirmed.  Kept
        # apart from _wanted: a subscribe, unsubscribe, subscribe sequence gets two
        # confirmations, and only the second may release the new joiner.
        self._outstanding: Counter[str] = Counter()
        # UNSUBSCRIBE/SUNSUBSCRIBE sent and not yet confirmed: any other (s)unsubscribe is
        # Redis Cluster dropping a channel whose slot moved, and calls for a reconnect
        self._unsubscribing: Counter[str] = Counter()
        self._resubscribing: Set[str] = set()
        self._started = False
        self._lost = False
        self._closed = False
        self.connected = False

    @property
    def healthy(self) -> bool:
        """Subscribed to the deployment channel and every wanted room (or not started)."""
        return not self._started or (self.connected and not self._resubscribing)

    @property
    def rooms(self) -> int:
        """How many room channels this process is subscribed to (or wants to be)."""
        return len(self._wanted)

    def want(self, channel: str) -> Optional[threading.Event]:
        """Subscribe to ``channel`` if not yet; the event to wait on, or None if no wait
        would help (already confirmed, or Redis is away: it is subscribed on reconnect)."""
        with self._send_lock:
            event = self._wanted.get(channel)
            if event is None:
                event = self._wanted[channel] = threading.Event()
                if self.connected:
                    self._send(("SSUBSCRIBE" if self._sharded else "SUBSCRIBE", channel))
            return None if event.is_set() or not self.connected else event

    def drop(self, channel: str) -> None:
        """Unsubscribe from ``channel`` (its last local member left)."""
        with self._send_lock:
            event = self._wanted.pop(channel, None)
            if event is None:
                return
            event.set()  # nobody may wait for a subscription that is going away
            if self.connected:
                self._send(("SUNSUBSCRIBE" if self._sharded else "UNSUBSCRIBE", channel))

    def _send(self, *commands: Command) -> None:
        # under _send_lock; a failure shows up in the listener's next read
        connection = self._connection
        try:
            connection.send_packed_command(connection.pack_commands(commands),
                                           check_health=False)
        except Exception as exc:
            logger.debug("subscription command not sent: %s", exc)
        for command in commands:
            if command[0] in ("SUBSCRIBE", "SSUBSCRIBE"):
                self._outstanding[command[1]] += 1
            elif command[0] in ("UNSUBSCRIBE", "SUNSUBSCRIBE"):
                self._unsubscribing[command[1]] += 1

    def close(self) -> None:
        """End :meth:`messages` (its loop returns) and drop the connection."""
        self._closed = True
        self._close()

    def messages(self) -> Iterator[bytes]:
        """Yield every message's payload; reconnect and resubscribe until :meth:`close`."""
        for payloads in self.batches():
            yield from payloads

    def batches(self) -> Iterator[List[bytes]]:
        """:meth:`messages` as lists: the payloads of what one read brought, in order.

        The listener's loop takes these: one generator step per read instead of two per
        message."""
        self._started = True
        delay = 0.1
        while not self._closed:
            try:
                self._open()
                delay = 0.1
                yield from self._read()
            except Exception as exc:  # any failure: start over
                if self._is_closed():
                    return
                if not self._lost:  # once per outage
                    self._lost = True
                    logger.error("message queue unreachable (%s); retrying", exc)
            self._close()
            if self._is_closed():
                return
            self._sleep(delay)
            delay = min(delay * 2, self.retry_max)

    def _is_closed(self) -> bool:
        # A call, not the attribute: close() runs on another task while messages() waits
        # in a read or a connect, and a type checker would take the attribute as still
        # False there (the loop's condition said so).  Once per reconnect, not per message.
        return self._closed

    def _open(self) -> None:
        connection = self._connect()
        connection.connect()
        sharded = self._probe(connection)
        with self._send_lock:
            if self._closed:  # closed while connecting
                connection.disconnect()
                raise ConnectionError("the subscriber is closed")
            self._connection, self._sharded = connection, sharded
            self._outstanding.clear()
            self._unsubscribing.clear()
            rooms = list(self._wanted)
            self._resubscribing = {self._deployment, *rooms}
            kind = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
            self._send(("SUBSCRIBE", self._deployment), *((kind, room) for room in rooms))
            self.connected = True
        if self._on_reconnect is not None:
            self._on_reconnect()

    def _close(self) -> None:
        with self._send_lock:
            self.connected = False
            if self._connection is not None:
                self._connection.disconnect()
            self._connection = None
            self._resubscribing = {self._deployment}
            for event in self._wanted.values():
                # joiners stop waiting: the room is resubscribed when Redis is back
                event.set()
            self._wanted = {channel: threading.Event() for channel in self._wanted}

    def _read(self) -> Iterator[List[bytes]]:
        connection = self._connection
        pinged = False
        for replies in read_replies(connection, self.ping_interval, self.skip):
            if replies is TIMED_OUT:
                if pinged:
                    raise ConnectionError(f"no answer to PING in {self.ping_interval} s")
                with self._send_lock:
                    connection.send_command("PING", check_health=False)
                pinged = True
                continue
            pinged = False
            payloads: List[bytes] = []
            for reply in replies:
                if isinstance(reply, list) and (reply[0] == b"smessage" or
                                                reply[0] == b"message"):
                    payloads.append(reply[2])
                else:
                    if payloads:  # the messages before it go first (a resubscription's
                        yield payloads  # catch-up must come after them)
                        payloads = []
                    self._other(reply)
            if payloads:
                yield payloads

    def _other(self, reply: Any) -> None:
        """A reply that is not a message: a (un)subscription's confirmation, a PONG, an
        error."""
        if not isinstance(reply, list):
            if isinstance(reply, Exception):  # a refused (un)subscribe: start over
                raise reply
            return  # PONG
        kind = reply[0]
        if kind == b"sunsubscribe" or kind == b"unsubscribe":
            self._unsubscribed(reply[1].decode())
        elif kind == b"subscribe" or kind == b"ssubscribe":
            self._confirmed(reply[1].decode())
            if self._lost and not self._resubscribing:
                self._lost = False
                logger.warning("message queue reachable again: subscribed to %d rooms",
                               len(self._wanted))
                if self._on_resubscribed is not None:
                    # before any later message is yielded: what it delivers comes first
                    self._on_resubscribed()

    def _unsubscribed(self, channel: str) -> None:
        with self._send_lock:
            sent = self._unsubscribing.pop(channel, 0)
            if sent > 1:
                self._unsubscribing[channel] = sent - 1
            if sent or channel not in self._wanted:
                return
        raise ConnectionError(f"Redis unsubscribed {channel} (its slot moved)")

    def _confirmed(self, channel: str) -> None:
        self._resubscribing.discard(channel)
        left = self._outstanding[channel] - 1
        if left > 0:
            self._outstanding[channel] = left
            return
        del self._outstanding[channel]
        event = self._wanted.get(channel)
        if event is not None:
            event.set()
