"""Redis pub/sub for a prroom cluster: one publisher connection, one subscriber connection.

python-socketio's Redis manager publishes each message with a blocking ``PUBLISH`` from the
emitting greenlet, through a connection pool that grows to one connection per concurrent
publisher (redis-py 8 reads package metadata from disk for every new connection), and has
every process subscribe to one channel for the whole deployment.  Profiled under load, the
pool and connection set-up were two thirds of a clustered process's CPU.  This module holds
the two connections that replace that, with no Socket.IO knowledge:

* :class:`Publisher` - one long-lived connection.  Commands published while the event loop
  runs its ready greenlets are queued and written together, pipelined, when the loop comes
  round (a flusher greenlet; a thread outside gevent); the replies come back in order, so
  each caller can learn whether *its* command reached Redis (:meth:`Ticket.wait`).  A batch
  that fails is not sent again (a message is never delivered twice); its callers are told.
* :class:`Subscriber` - one long-lived connection subscribed to the deployment channel and
  to each room channel this process wants.  ``want(channel)`` subscribes and returns an
  event set once Redis confirmed the subscription (so a join can be acked only when no later
  message can miss it); ``drop(channel)`` unsubscribes.  After the connection is lost it
  reconnects with a capped backoff and subscribes again to every channel still wanted, and
  :attr:`Subscriber.healthy` stays False until Redis confirmed all of them.

Room channels use Redis 7's sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``: a channel lives
on the shard owning its hash slot, as Redis Cluster requires) when the server has it, and
plain ``SUBSCRIBE``/``PUBLISH`` otherwise; the deployment channel is always plain (it
carries little, and stock python-socketio emitters publish there).  Both connections come
from a caller-supplied factory, so standalone Redis and Sentinel (``redis+sentinel://``,
which resolves the current master on every connect) work alike.
"""
from __future__ import annotations

import hashlib
import logging
import socket
import sys
import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Set, Tuple, Union

from prroom.cluster.resp import PUBLISH_HEAD, SPUBLISH_HEAD, RespReader, frame, publish_frame
from prroom.internals import redis_sockets

try:
    from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError
except ImportError:  # the redis extra is not installed: nothing here will be used
    class ResponseError(Exception):  # type: ignore[no-redef]
        """Stand-in so the module imports without redis-py."""

    class AskError(ResponseError):  # type: ignore[no-redef]
        """Stand-in."""

    class ClusterDownError(ResponseError):  # type: ignore[no-redef]
        """Stand-in."""

    class TryAgainError(ResponseError):  # type: ignore[no-redef]
        """Stand-in."""

#: Replies of a Redis Cluster node that no longer serves the deployment's slot (``MOVED``
#: is an ``AskError``): the connection is given up, and the next one asks the cluster.
TOPOLOGY_CHANGED = (AskError, ClusterDownError, TryAgainError)

logger = logging.getLogger("prroom")
Command = Tuple  # ("PUBLISH", channel, payload), as redis-py packs it
ModeProbe = Callable[[object], bool]


#: Stands for the room publish command in :meth:`Publisher.run_script` arguments.
ROOM_PUBLISH = "\x00room-publish"


class QueueUnavailable(ConnectionError):
    """A broadcast reached this process's members but not the message queue."""


def redis_has_sharded_pubsub(connection: Any) -> bool:
    """Ask the server (once per connection) whether it knows ``SPUBLISH`` (Redis 7+)."""
    try:
        connection.send_command("COMMAND", "INFO", "SPUBLISH")
        reply = connection.read_response()
    except ResponseError:  # COMMAND renamed or refused: use what every Redis has
        return False
    return bool(reply) and reply[0] is not None


def pubsub_mode(setting: str) -> ModeProbe:
    """``sharded``/``plain`` forced, or ``auto``: whatever the connected server supports."""
    if setting == "sharded":
        return lambda connection: True
    if setting == "plain":
        return lambda connection: False
    return redis_has_sharded_pubsub


def _reader_of(connection: Any) -> Callable[[], object]:
    """``read_response`` that also returns RESP3 push frames (redis-py 5+ speaks RESP3 when
    asked to, and redis-py 8 by default), where subscribed connections get their messages."""
    if str(getattr(connection, "protocol", 2)) == "3":
        return lambda: connection.read_response(push_request=True)
    return connection.read_response


#: What :func:`_replies` yields when nothing came for its timeout.
TIMED_OUT = object()


def _replies(connection: Any, timeout: float,
             skip: Optional[bytes] = None) -> Iterator[Any]:
    """The replies on ``connection``, in order, forever, as lists (what one read brought);
    :data:`TIMED_OUT` after ``timeout`` seconds without any.  An error reply comes as its
    exception; one saying the cluster moved the slot, and a lost connection, raise
    ``ConnectionError``.  Pub/sub messages whose payload starts with ``skip`` are left out.

    Read in bulk from the socket (parsed by :class:`RespReader`) where
    :mod:`redis_sockets` has it, else one ``read_response`` per reply."""
    sock = redis_sockets.socket_of(connection)
    if sock is None:
        read = _reader_of(connection)
        while True:
            if not connection.can_read(timeout):
                yield TIMED_OUT
                continue
            try:
                reply = read()
            except TOPOLOGY_CHANGED as err:
                raise ConnectionError(f"the cluster moved this slot: {err}") from err
            except ResponseError as err:  # that command's answer; the others follow
                reply = err
            if not (skip and isinstance(reply, list) and len(reply) == 3 and
                    reply[0] in (b"smessage", b"message") and reply[2].startswith(skip)):
                yield [reply]
    # The connection is this task's alone from here: nothing else reads it, and a send that
    # stalls this long fails too (Redis stopped reading).
    sock.settimeout(timeout)
    recv = sock.recv
    reader = RespReader(skip)
    while True:
        try:
            data = recv(_READ_SIZE)
        except socket.timeout:
            yield TIMED_OUT
            continue
        if not data:
            raise ConnectionError("Connection closed by server.")
        reader.feed(data)
        replies = reader.drain()
        if reader.errors:
            reader.errors = False
            for reply in replies:
                if isinstance(reply, TOPOLOGY_CHANGED):
                    raise ConnectionError(f"the cluster moved this slot: {reply}")
                if isinstance(reply, ConnectionError):  # redis-py raises these (LOADING)
                    raise reply
        if replies:
            yield replies


_READ_SIZE = 65536


def _lock_factory() -> Callable[[], Any]:
    """The OS's own lock where gevent patched ``threading``, else ``threading.Lock``.

    The publisher takes a lock per publish and per batch: gevent's lock is Python calls,
    the OS's is taken in C.  Nothing under these locks waits for I/O or switches greenlets,
    so the OS's lock is safe under gevent and still guards against real threads.
    """
    # Looked up, not imported: a sync host app posting through the queue stays gevent-free.
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        native: Callable[[], Any] = monkey.get_original("threading", "Lock")
        return native
    return threading.Lock


class _Batch:
    """Commands written together, and their replies (an exception where one failed)."""

    __slots__ = ("commands", "results", "done", "_callbacks", "_lock")

    def __init__(self, lock: Any) -> None:
        # (kind, channel, payload); ("call", the whole command, "") for any other command,
        # ("script", sha1, (keys, args)) for a loaded script
        self.commands: List[Tuple[str, Any, Any]] = []
        self.results: list = []
        self.done = threading.Event()
        self._callbacks: Optional[List[Tuple[Callable[[Any], None], Any]]] = None
        self._lock = lock  # a thread (no gevent) may add while another ends the batch

    def then(self, callback: Callable[[Any], None], argument: Any) -> None:
        """Call ``callback(argument)`` once the batch ended (now, if it has).

        The pair is kept as it is, no closure made: one per in-flight message adds up to
        work for the garbage collector."""
        with self._lock:
            if not self.done.is_set():
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append((callback, argument))
                return
        callback(argument)

    def finish(self) -> None:
        """Every reply is in (or a failure for each): wake the waiters, run the callbacks."""
        with self._lock:
            self.done.set()
            callbacks, self._callbacks = self._callbacks, None
        for callback, argument in callbacks or ():
            try:
                callback(argument)
            except Exception:  # one caller's bug must not keep the others' answers
                logger.exception("message queue: a publish callback failed")

    def fail(self, error: Exception) -> None:
        self.results.extend([error] * (len(self.commands) - len(self.results)))
        self.finish()


class Ticket:
    """One published command's place in its batch; :meth:`wait` for the outcome."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self._batch, self._index = batch, index

    def wait(self) -> object:
        """Block until Redis answered the command; return the reply, or raise
        :class:`QueueUnavailable` if the command did not reach Redis.

        No timeout of its own (a timer per waiter was measurable): every batch ends, in a
        reply or, within :attr:`Publisher.reply_timeout`, in a failure.
        """
        self._batch.done.wait()
        return self.result()

    def result(self) -> object:
        """The reply of an ended batch's command (raising as :meth:`wait` does)."""
        result = self._batch.results[self._index]
        if isinstance(result, Exception):
            raise QueueUnavailable(f"message queue unreachable: {result}")
        return result

    def then(self, callback: Callable[["Ticket"], None]) -> None:
        """Call ``callback(ticket)`` once the command's batch ended, instead of waiting.

        It runs on the task that read the reply (or now, if it came already), so it must
        not block: sending a packet is fine, waiting for another ticket is not.
        """
        self._batch.then(callback, self)


class Publisher:
    """Publishes through one connection: a writer task sends what one event-loop turn
    queued as one pipelined write, and a reader task matches the replies to their batches,
    so several batches can be on the wire at once and no caller waits for another's reply.

    ``connect()`` returns a new, unconnected redis-py ``Connection``; ``start(target)`` runs
    ``target`` as a background task (a greenlet under gevent, else a thread).  Room messages
    are published as ``kind="room"``, with ``SPUBLISH`` or ``PUBLISH`` as
    ``sharded(connection)`` says for the server connected to.
    """

    #: After a failed connect, batches fail at once for this long instead of each waiting
    #: for a connect timeout of its own while Redis is away.
    retry_after = 0.5
    #: Written commands that got no reply for this long fail, and the connection is dropped.
    reply_timeout = 5.0

    def __init__(self, connect: Callable[[], Any], start: Callable[[Callable], object],
                 sharded: ModeProbe) -> None:
        self._connect = connect
        self._start = start
        self._probe = sharded
        # a redis-py Connection (untyped: its parser and socket calls are what is used)
        self._connection: Any = None
        self._sharded = False
        self._new_lock = _lock_factory()
        self._batch = _Batch(self._new_lock())
        self._inflight: Deque[_Batch] = deque()
        self._wake = threading.Event()
        self._lock = self._new_lock()
        self._started = False
        self._closed = False
        self._failed_at: Optional[float] = None
        self._scripts: Dict[str, str] = {}  # sha1 -> source, loaded on every connect
        #: False from a failed batch until one gets through.
        self.healthy = True
        self.batches = 0
        self.published = 0

    def publish(self, kind: str, channel: str, payload: Union[str, bytes]) -> Ticket:
        """Queue ``payload`` (text or UTF-8) for ``channel`` (kind ``"room"``/``"deployment"``)."""
        return self._queue((kind, channel, payload))

    def load_script(self, source: str) -> str:
        """Have every connection of this publisher know the Lua ``source``; its SHA1."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source
        return sha

    def run_script(self, sha: str, keys: List[str], args: List[Any]) -> Ticket:
        """Queue ``EVALSHA`` of a script loaded with :meth:`load_script`.  An argument that
        is :data:`ROOM_PUBLISH` is sent as the command room messages are published with
        (``SPUBLISH`` or ``PUBLISH``, known once connected)."""
        return self._queue(("script", sha, (keys, args)))

    def call(self, *command: object) -> Ticket:
        """Queue any other command (``"EVAL", script, ...``) in the same order and batches
        as the publishes; the ticket's ``wait()`` returns its reply."""
        return self._queue(("call", command, ""))

    def _queue(self, entry: Tuple[str, Any, Any]) -> Ticket:
        with self._lock:
            batch = self._batch
            commands = batch.commands
            commands.append(entry)
            index = len(commands) - 1
            if self._closed:
                self._batch = _Batch(self._new_lock())
                batch.fail(ConnectionError("the publisher is closed"))
                return Ticket(batch, index)
            if not self._started:
                self._started = True
                self._start(self._write_forever)
        if index == 0:
            # Wakes the writer once the event loop has run every greenlet that is ready
            # now: what they publish meanwhile joins this batch.
            self._wake.set()
        return Ticket(batch, index)

    def reset(self) -> None:
        """Redis is back (the subscriber reconnected): try the next batch at once, and
        count as healthy until one fails (readiness must not wait for someone to talk)."""
        self._failed_at = None
        self.healthy = True

    def close(self) -> None:
        """Stop the writer and reader tasks and drop the connection; whatever was queued
        and not answered fails, as do later publishes (the server is going away)."""
        with self._lock:
            self._closed = True
            batch, self._batch = self._batch, _Batch(self._new_lock())
        self._wake.set()
        connection = self._connection
        error = ConnectionError("the publisher is closed")
        if connection is not None:
            self._lost(connection, error)
        batch.fail(error)

    def _write_forever(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                batch, self._batch = self._batch, _Batch(self._new_lock())
            if batch.commands:
                self._write(batch)

    def _write(self, batch: _Batch) -> None:
        connection: Any = None
        try:
            if self._failed_at is not None and \
                    time.monotonic() - self._failed_at < self.retry_after:
                raise ConnectionError("unreachable a moment ago")
            connection = self._connected()
            room = SPUBLISH_HEAD if self._sharded else PUBLISH_HEAD
            name = "SPUBLISH" if self._sharded else "PUBLISH"
            # One bytes object, one write: redis-py's pack_commands costs several times
            # this per publish (it was a tenth of the publisher's time in a profile).
            packed = b"".join([
                frame(channel) if kind == "call" else
                frame(self._script_command(channel, payload, name)) if kind == "script" else
                publish_frame(room if kind == "room" else PUBLISH_HEAD, channel, payload)
                for kind, channel, payload in batch.commands])
            self._inflight.append(batch)  # before writing: the reader may answer at once
            connection.send_packed_command([packed], check_health=False)
            self.batches += 1
            self.published += len(batch.commands)
        except Exception as exc:  # whatever broke, the callers are told
            if connection is not None:
                self._lost(connection, exc)
            else:
                self._unreachable(exc)
            batch.fail(exc)  # no-op if _lost failed it already

    @staticmethod
    def _script_command(sha: str, keys_args: Tuple[List[str], List[Any]], name: str) -> tuple:
        keys, args = keys_args
        return ("EVALSHA", sha, len(keys), *keys,
                *(name if arg is ROOM_PUBLISH else arg for arg in args))

    def _connected(self) -> object:
        connection = self._connection
        if connection is None:
            connection = self._connect()
            connection.connect()
            self._sharded = self._probe(connection)
            for source in self._scripts.values():  # a restarted Redis forgot them
                connection.send_command("SCRIPT", "LOAD", source)
                connection.read_response()
            self._connection = connection
            self._start(lambda: self._read_forever(connection))
        return connection

    def _read_forever(self, connection: Any) -> None:
        inflight = self._inflight
        try:
            for replies in _replies(connection, self.reply_timeout):
                if self._connection is not connection:
                    break
                if replies is TIMED_OUT:
                    if inflight:
                        raise TimeoutError(f"no reply in {self.reply_timeout} s")
                    continue
                taken, count = 0, len(replies)
                while taken < count:  # the replies in order, to the batches in order
                    if not inflight:
                        raise ConnectionError(f"unexpected data from Redis: "
                                              f"{replies[taken]!r:.80}")
                    batch = inflight[0]
                    results = batch.results
                    wanted = len(batch.commands) - len(results)
                    results.extend(replies[taken:taken + wanted])
                    taken += wanted
                    if len(results) == len(batch.commands):
                        inflight.popleft()
                        batch.finish()
                        if not self.healthy:
                            logger.warning("message queue reachable again for publishing")
                        self.healthy = True
                        self._failed_at = None
        except Exception as exc:  # EOF (a restart), reset, timeout
            self._lost(connection, exc)

    def _lost(self, connection: Any, error: Exception) -> None:
        if self._connection is not connection:
            return  # that connection was given up already
        self._connection = None
        connection.disconnect()
        # unhealthy before the waiters wake: one told of a failure must see it in readiness
        self._unreachable(error)
        while self._inflight:
            self._inflight.popleft().fail(error)

    def _unreachable(self, error: Exception) -> None:
        if self.healthy:
            logger.error("message queue unreachable for publishing (%s)", error)
        self.healthy = False
        self._failed_at = time.monotonic()


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
        self._outstanding: Counter = Counter()
        # UNSUBSCRIBE/SUNSUBSCRIBE sent and not yet confirmed: any other (s)unsubscribe is
        # Redis Cluster dropping a channel whose slot moved, and calls for a reconnect
        self._unsubscribing: Counter = Counter()
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
        self._started = True
        delay = 0.1
        while not self._closed:
            try:
                self._open()
                delay = 0.1
                yield from self._read()
            except Exception as exc:  # any failure: start over
                if self._closed:
                    return
                if not self._lost:  # once per outage
                    self._lost = True
                    logger.error("message queue unreachable (%s); retrying", exc)
            self._close()
            if self._closed:
                return
            self._sleep(delay)
            delay = min(delay * 2, self.retry_max)

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

    def _read(self) -> Iterator[bytes]:
        connection = self._connection
        pinged = False
        for replies in _replies(connection, self.ping_interval, self.skip):
            if replies is TIMED_OUT:
                if pinged:
                    raise ConnectionError(f"no answer to PING in {self.ping_interval} s")
                with self._send_lock:
                    connection.send_command("PING", check_health=False)
                pinged = True
                continue
            pinged = False
            for reply in replies:
                if isinstance(reply, list) and (reply[0] == b"smessage" or
                                                reply[0] == b"message"):
                    yield reply[2]
                else:
                    self._other(reply)

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
