"""Redis replies parsed from the bytes of a connection (RESP2), as many as a read brought;
and commands framed for one.

redis-py parses one reply per ``read_response`` call, through several layers (a socket
buffer, a parser, the connection's error handling) that together cost more than what the
cluster does with the reply.  Profiled in a clustered process, reading its own room
messages back and the publishes' replies that way was most of the cluster's CPU per
message.  :class:`RespReader` takes the bytes of one read (``feed``) and hands out the
replies it completes (``drain``, or one by one with ``next``); no I/O here (the bytes come
from :mod:`prroom.internals.redis_sockets`).

Replies come as redis-py returns them with ``decode_responses`` off: simple strings and bulk
strings as ``bytes``, integers as ``int``, nulls as ``None``, arrays as ``list``, and an
error reply as an exception *value* of the class redis-py would give it.
"""
from __future__ import annotations

import re
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Type

try:
    from redis import exceptions as _errors

    #: error prefix -> the exception class redis-py gives that reply (the ones prroom acts on:
    #: a slot that moved, a server not ready; anything else is a ResponseError)
    #: (a class an older redis-py lacks, such as OutOfMemoryError before 5.0, is left out:
    #: that release gives those replies as a ResponseError too)
    ERROR_CLASSES: Dict[str, Type[Exception]] = {
        prefix: getattr(_errors, name) for prefix, name in (
            ("MOVED", "MovedError"), ("ASK", "AskError"), ("TRYAGAIN", "TryAgainError"),
            ("CLUSTERDOWN", "ClusterDownError"), ("LOADING", "BusyLoadingError"),
            ("NOSCRIPT", "NoScriptError"), ("READONLY", "ReadOnlyError"),
            ("OOM", "OutOfMemoryError"))
        if hasattr(_errors, name)}
    _RESPONSE_ERROR: Type[Exception] = _errors.ResponseError
except ImportError:  # the redis extra is not installed: nothing here will be used
    ERROR_CLASSES = {}
    _RESPONSE_ERROR = Exception


class ProtocolError(ConnectionError):
    """The bytes are not RESP2: the connection cannot be trusted any more."""


class _Incomplete(Exception):
    """The buffered bytes end before the reply does."""


#: What :meth:`RespReader.next` returns until more bytes complete a reply.
INCOMPLETE = object()

_CRLF = b"\r\n"
_BULK, _ARRAY, _INTEGER, _SIMPLE, _ERROR = b"$"[0], b"*"[0], b":"[0], b"+"[0], b"-"[0]
#: How a pub/sub message (``smessage`` or ``message``) starts, up to its channel's length.
_MESSAGE_START = rb"\*3\r\n\$(?:8\r\ns|7\r\n)message\r\n\$"
#: The same up to its channel (RESP2): group 1 is the channel's length.
_MESSAGE_HEAD = re.compile(_MESSAGE_START + rb"(\d+)\r\n")
#: A bulk string's head: group 1 is its length.
_BULK_HEAD = re.compile(rb"\$(\d+)\r\n")


#: A compiled pattern's ``match``: (bytes, position) -> the match there, or None.
Matcher = Callable[[bytes, int], Optional["re.Match[bytes]"]]


def _own_run(skip: bytes) -> Matcher:
    """The ``match`` of a pattern for consecutive pub/sub messages whose payloads start with
    ``skip``, each followed by the next one's ``*``.

    What a clustered process mostly reads back is its own publishes, one after another;
    one call passes over all of them, without reading their lengths.  Their channels and
    payloads hold no CR: the channels are prroom's names, and the payloads are prroom's
    JSON, where a CR is always escaped.  Even where a payload held one (a host's JSON
    module writing CRLF between tokens), no message is misread: a CR ends the match unless
    it comes as CRLF followed by ``*``, which JSON never writes there, so that message is
    left to the exact parse.  The last message of a read is always left to it too (nothing
    follows it yet)."""
    return re.compile(rb"(?:" + _MESSAGE_START + rb"\d+\r\n[^\r]*\r\n\$\d+\r\n"
                      + re.escape(skip) + rb"[^\r]*\r\n(?=\*))+").match


def error_reply(text: str) -> Exception:
    """The exception value of error reply ``text`` (without its ``-``)."""
    code, _, rest = text.partition(" ")
    kind = ERROR_CLASSES.get(code)
    if kind is None:
        return _RESPONSE_ERROR(text)
    return kind(rest if code in ("MOVED", "ASK") else text)


class RespReader:
    """The replies in a stream of RESP2 bytes, in order.

    With ``skip``, a pub/sub message whose payload starts with those bytes is passed over
    unparsed (a process's own publishes coming back to its subscriber: most of what it
    reads, and nothing to do with them)."""

    __slots__ = ("_data", "_pos", "_skip", "_own_run", "_pending", "errors")

    def __init__(self, skip: Optional[bytes] = None) -> None:
        self._data = b""
        self._pos = 0
        self._skip = skip or None
        self._own_run: Optional[Matcher] = None if self._skip is None else _own_run(self._skip)
        self._pending: Deque[Any] = deque()  # drained, not yet taken by next()
        #: Set once an error reply was parsed (the caller resets it): the replies of a
        #: :meth:`drain` hold no exception while this is False.
        self.errors = False

    def feed(self, data: bytes) -> None:
        """Add the bytes of one read."""
        if self._pos < len(self._data):
            self._data = self._data[self._pos:] + data
        else:
            self._data = data
        self._pos = 0

    def next(self) -> Any:
        """The next complete reply, or :data:`INCOMPLETE` (feed more bytes)."""
        pending = self._pending
        if not pending:
            pending.extend(self.drain())
        return pending.popleft() if pending else INCOMPLETE

    def drain(self) -> List[Any]:
        """Every complete reply in the bytes fed so far, in order (maybe none).

        One call per read rather than one per reply; an integer reply (what a publish gets)
        and a pub/sub message (what a subscriber gets, its own publishes among them) are
        parsed here, inline and by two compiled patterns, without the general parser's
        calls: this loop runs for every message a clustered process publishes or hears."""
        data, pos, size, skip = self._data, self._pos, len(self._data), self._skip
        message_head, bulk_head, own_run = _MESSAGE_HEAD.match, _BULK_HEAD.match, self._own_run
        replies: List[Any] = []
        try:
            while pos < size:
                kind = data[pos]
                if kind == _INTEGER:
                    end = data.find(_CRLF, pos)
                    if end < 0:
                        break
                    replies.append(int(data[pos + 1:end]))
                    pos = end + 2
                    continue
                if kind == _ARRAY:
                    if own_run is not None:
                        run = own_run(data, pos)
                        if run is not None:  # this process's own messages: passed over
                            pos = run.end()
                            continue
                    head = message_head(data, pos)
                    if head is not None:
                        channel = head.end()
                        channel_end = channel + int(head[1])
                        payload = bulk_head(data, channel_end + 2)
                        if payload is not None:
                            start = payload.end()
                            stop = start + int(payload[1]) + 2
                            if stop > size:
                                break
                            if skip is None or not data.startswith(skip, start):
                                replies.append([data[pos + 8:head.start(1) - 3],
                                                data[channel:channel_end],
                                                data[start:stop - 2]])
                            pos = stop
                            continue
                        if channel_end + 2 < size and data[channel_end + 2] != _BULK:
                            raise ValueError("a message's payload is not a bulk string")
                reply, pos = self._parse(pos)  # anything else, or not all in yet
                replies.append(reply)
        except _Incomplete:
            pass
        except ValueError:
            raise ProtocolError(f"not a Redis reply: {data[pos:pos + 40]!r}") from None
        self._pos = pos
        return replies

    def _parse(self, pos: int) -> Tuple[Any, int]:
        data = self._data
        end = data.find(_CRLF, pos)
        if end < 0:
            raise _Incomplete
        kind = data[pos]
        try:
            if kind == _BULK:
                length = int(data[pos + 1:end])
                if length < 0:
                    return None, end + 2
                start = end + 2
                stop = start + length
                if stop + 2 > len(data):
                    raise _Incomplete
                return data[start:stop], stop + 2
            if kind == _ARRAY:
                count = int(data[pos + 1:end])
                if count < 0:
                    return None, end + 2
                items = []
                pos = end + 2
                for _ in range(count):
                    item, pos = self._parse(pos)
                    items.append(item)
                return items, pos
            if kind == _INTEGER:
                return int(data[pos + 1:end]), end + 2
            if kind == _SIMPLE:
                return data[pos + 1:end], end + 2
            if kind == _ERROR:
                self.errors = True
                return error_reply(data[pos + 1:end].decode("utf-8", "replace")), end + 2
        except ValueError:  # a length or integer that is not one
            pass
        raise ProtocolError(f"not a Redis reply: {data[pos:pos + 40]!r}")


#: The start of a publish command in RESP: its length and its name.
PUBLISH_HEAD, SPUBLISH_HEAD = b"*3\r\n$7\r\nPUBLISH\r\n", b"*3\r\n$8\r\nSPUBLISH\r\n"


def _bulk(value: object) -> bytes:
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        data = repr(value).encode()
    else:  # what redis-py refuses too (it sends no bools, None or containers)
        raise TypeError(f"a Redis command argument must be str, bytes or a number, not "
                        f"{type(value).__name__}")
    return b"$%d\r\n%s\r\n" % (len(data), data)


def frame(command: Tuple[Any, ...]) -> bytes:
    """``command`` in the Redis protocol (RESP), its arguments encoded as redis-py does."""
    return b"*%d\r\n%s" % (len(command), b"".join([_bulk(arg) for arg in command]))
