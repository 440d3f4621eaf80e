"""The cluster's publishing connection: what one event-loop turn queued, in one write.

:class:`Publisher` holds one long-lived connection.  Commands published while the event
loop runs its ready greenlets are queued and written together, pipelined, when the loop
comes round (a flusher greenlet; a thread outside gevent); the replies come back in order,
so each caller can learn whether *its* command reached Redis (:meth:`Ticket.wait`).  A
batch that fails is not sent again (a message is never delivered twice); its callers are
told (:class:`~prroom.cluster.channels.QueueUnavailable`).  Lua scripts and any other
command go through the same batches, in order with the publishes.
"""
from __future__ import annotations

import hashlib
import logging
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from prroom.cluster.channels import TIMED_OUT, ModeProbe, QueueUnavailable, read_replies
from prroom.cluster.resp import PUBLISH_HEAD, SPUBLISH_HEAD, frame

logger = logging.getLogger("prroom")


#: Stands for the room publish command in :meth:`Publisher.run_script` arguments.
ROOM_PUBLISH = "\x00room-publish"


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

    __slots__ = ("commands", "results", "done", "callbacks", "lock")

    def __init__(self, lock: Any) -> None:
        # (kind, channel, payload); ("call", the whole command, "") for any other command,
        # ("script", sha1, (keys, args)) for a loaded script
        self.commands: List[Tuple[str, Any, Any]] = []
        self.results: List[object] = []
        self.done = threading.Event()
        self.callbacks: Optional[List[Tuple[Callable[[Any], None], Any]]] = None
        self.lock = lock  # a thread (no gevent) may add while another ends the batch

    def finish(self) -> None:
        """Every reply is in (or a failure for each): wake the waiters, run the callbacks."""
        with self.lock:
            self.done.set()
            callbacks, self.callbacks = self.callbacks, None
        for callback, argument in callbacks or ():
            try:
                callback(argument)
            except Exception:  # one caller's bug must not keep the others' answers
                logger.exception("message queue: a publish callback failed")

    def fail(self, error: Exception) -> None:
        self.results.extend([error] * (len(self.commands) - len(self.results)))
        self.finish()


class Ticket(Tuple["_Batch", int]):
    """One published command's place in its batch, ``(batch, index)``; :meth:`wait` for the
    outcome.

    A tuple, made as ``Ticket((batch, index))``: one is made per message published, and a
    tuple is built without a Python ``__init__`` call."""

    __slots__ = ()

    @classmethod
    def answered(cls, reply: object) -> "Ticket":
        """A ticket whose command was answered ``reply`` already (a stand-in publisher's)."""
        batch = _Batch(_lock_factory()())
        batch.commands.append(("call", (), ""))
        batch.results.append(reply)
        batch.finish()
        return cls((batch, 0))

    def wait(self) -> object:
        """Block until Redis answered the command; return the reply, or raise
        :class:`QueueUnavailable` if the command did not reach Redis.

        No timeout of its own (a timer per waiter was measurable): every batch ends, in a
        reply or, within :attr:`Publisher.reply_timeout`, in a failure.
        """
        self[0].done.wait()
        return self.result()

    def result(self) -> object:
        """The reply of an ended batch's command (raising as :meth:`wait` does)."""
        batch, index = self
        result = batch.results[index]
        if isinstance(result, Exception):
            raise QueueUnavailable(f"message queue unreachable: {result}")
        return result

    def then(self, callback: Callable[["Ticket"], None]) -> None:
        """Call ``callback(ticket)`` once the command's batch ended, instead of waiting.

        It runs on the task that read the reply (or now, if it came already), so it must
        not block: sending a packet is fine, waiting for another ticket is not.
        """
        # The batch's part, here rather than in a method of the batch: one call fewer per
        # message.  The pair is kept as it is, no closure made: one per in-flight message
        # adds up to work for the garbage collector.
        batch = self[0]
        with batch.lock:
            if not batch.done.is_set():
                if batch.callbacks is None:
                    batch.callbacks = []
                batch.callbacks.append((callback, self))
                return
        callback(self)


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

    def __init__(self, connect: Callable[[], Any], start: Callable[[Callable[[], None]], object],
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

    def load_script(self, source: str) -> str:
        """Have every connection of this publisher know the Lua ``source``; its SHA1."""
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source
        return sha

    def run_script(self, sha: str, keys: List[str], args: List[Any]) -> Ticket:
        """Queue ``EVALSHA`` of a script loaded with :meth:`load_script`.  An argument that
        is :data:`ROOM_PUBLISH` is sent as the command room messages are published with
        (``SPUBLISH`` or ``PUBLISH``, known once connected)."""
        return self.publish("script", sha, (keys, args))

    def call(self, *command: object) -> Ticket:
        """Queue any other command (``"EVAL", script, ...``) in the same order and batches
        as the publishes; the ticket's ``wait()`` returns its reply."""
        return self.publish("call", command, "")

    def publish(self, kind: str, channel: Any, payload: Any) -> Ticket:
        """Queue ``payload`` (text or UTF-8) for ``channel`` (kind ``"room"``/``"deployment"``).

        Every command is queued here (:meth:`run_script` and :meth:`call` too, with their
        own kinds): one call per message published, not two."""
        with self._lock:
            batch = self._batch
            commands = batch.commands
            commands.append((kind, channel, payload))
            index = len(commands) - 1
            if self._closed:
                self._batch = _Batch(self._new_lock())
                batch.fail(ConnectionError("the publisher is closed"))
                return Ticket((batch, index))
            if not self._started:
                self._started = True
                self._start(self._write_forever)
        if index == 0:
            # Wakes the writer once the event loop has run every greenlet that is ready
            # now: what they publish meanwhile joins this batch.
            self._wake.set()
        return Ticket((batch, index))

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
            # this per publish (it was a tenth of the publisher's time in a profile).  A
            # publish is framed here, inline: one call fewer per message.
            parts = []
            for kind, channel, payload in batch.commands:
                if kind == "room" or kind == "deployment":
                    channel_bytes = channel.encode()
                    if isinstance(payload, str):
                        payload = payload.encode()
                    parts.append(b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
                        room if kind == "room" else PUBLISH_HEAD, len(channel_bytes),
                        channel_bytes, len(payload), payload))
                elif kind == "call":
                    parts.append(frame(channel))
                else:
                    parts.append(frame(self._script_command(channel, payload, name)))
            packed = b"".join(parts)
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
    def _script_command(sha: str, keys_args: Tuple[List[str], List[Any]],
                        name: str) -> Tuple[object, ...]:
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
            for replies in read_replies(connection, self.reply_timeout):
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
