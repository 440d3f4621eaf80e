"""Redis replies parsed from the bytes of a connection (RESP2), as many as a read brought.

redis-py parses one reply per ``read_response`` call, through several layers (a socket
buffer, a parser, the connection's error handling) that together cost more than what the
cluster does with the reply.  Profiled in a clustered process, reading its own room
messages back and the publishes' replies that way was most of the cluster's CPU per
message.  :class:`RespReader` takes the bytes of one read (``feed``) and hands out each
reply it completes (``next``); no I/O here (the bytes come from
:mod:`prroom.internals.redis_sockets`).

Replies come as redis-py returns them with ``decode_responses`` off: simple strings and bulk
strings as ``bytes``, integers as ``int``, nulls as ``None``, arrays as ``list``, and an
error reply as an exception *value* of the class redis-py would give it.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple, Type

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


def error_reply(text: str) -> Exception:
    """The exception value of error reply ``text`` (without its ``-``)."""
    code, _, rest = text.partition(" ")
    kind = ERROR_CLASSES.get(code)
    if kind is None:
        return _RESPONSE_ERROR(text)
    return kind(rest if code in ("MOVED", "ASK") else text)


class RespReader:
    """The replies in a stream of RESP2 bytes, in order."""

    __slots__ = ("_data", "_pos")

    def __init__(self) -> None:
        self._data = b""
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Add the bytes of one read."""
        if self._pos < len(self._data):
            self._data = self._data[self._pos:] + data
        else:
            self._data = data
        self._pos = 0

    def next(self) -> Any:
        """The next complete reply, or :data:`INCOMPLETE` (feed more bytes)."""
        try:
            reply, self._pos = self._parse(self._pos)
        except _Incomplete:
            return INCOMPLETE
        return reply

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
                return error_reply(data[pos + 1:end].decode("utf-8", "replace")), end + 2
        except ValueError:  # a length or integer that is not one
            pass
        raise ProtocolError(f"not a Redis reply: {data[pos:pos + 40]!r}")
