"""What the cluster's two Redis connections share: their replies read, and the pub/sub mode.

python-socketio's Redis manager publishes each message with a blocking ``PUBLISH`` from the
emitting greenlet, through a connection pool that grows to one connection per concurrent
publisher (redis-py 8 reads package metadata from disk for every new connection), and has
every process subscribe to one channel for the whole deployment.  Profiled under load, the
pool and connection set-up were two thirds of a clustered process's CPU.  Two long-lived
connections replace that, with no Socket.IO knowledge: :mod:`prroom.cluster.publisher`
and :mod:`prroom.cluster.subscriber`.  This module is what both use: a connection's
replies read in order (:func:`read_replies`), the Redis Cluster errors that mean the
connection must be given up, and the error a publisher's caller is told when its command
did not reach Redis (:class:`QueueUnavailable`).

Room channels use Redis 7's sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``: a channel lives
on the shard owning its hash slot, as Redis Cluster requires) when the server has it, and
plain ``SUBSCRIBE``/``PUBLISH`` otherwise (:func:`pubsub_mode`); the deployment channel is
always plain (it carries little, and stock python-socketio emitters publish there).  Both
connections come from a caller-supplied factory, so standalone Redis and Sentinel
(``redis+sentinel://``, which resolves the current master on every connect) work alike.
"""
from __future__ import annotations

import socket
from typing import Any, Callable, Iterator, Optional

from prroom.cluster.resp import RespReader
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

ModeProbe = Callable[[object], bool]


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
    read: Callable[[], object] = connection.read_response
    return read


#: What :func:`read_replies` yields when nothing came for its timeout.
TIMED_OUT = object()


def read_replies(connection: Any, timeout: float,
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
