"""The header of a room broadcast on its channel, written and read.

A room broadcast travels as ``<host id>:["<room>",<skip sid>,"<namespace>","<event>"]``, a
newline, then the Socket.IO packet's text as members get it.  The header is JSON (it never
holds a raw newline), so the first newline ends it whatever the packet holds.  Written once
per clustered emit, read once per message another process published: both are per-message
costs, kept small here.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Tuple

_HEADER_ENCODER = json.JSONEncoder(separators=(",", ":"))
_HEADER_DECODER = json.JSONDecoder()
_quoted = json.encoder.encode_basestring_ascii  # what the encoder uses for a str (ensure_ascii)


def broadcast_header(room: Any, skip_sid: Any, namespace: Any, event: Any) -> str:
    """``[room, skip_sid, namespace, event]`` in JSON, as ``_HEADER_ENCODER`` writes it.

    Strings are quoted by json's own C function: the encoder's ``encode`` of a list builds
    a new C encoder per call, a measurable part of a clustered emit in a profile."""
    if type(room) is str and type(namespace) is str and type(event) is str and \
            (skip_sid is None or type(skip_sid) is str):
        return "[%s,%s,%s,%s]" % (_quoted(room), "null" if skip_sid is None else
                                  _quoted(skip_sid), _quoted(namespace), _quoted(event))
    return _HEADER_ENCODER.encode([room, skip_sid, namespace, event])


#: Bound of each remembered mapping below: a sender's sid makes some headers one-off, so
#: a mapping that reaches it is emptied and fills again with the rooms still talking.
REMEMBERED = 4096

#: (host, room, skip_sid, namespace, event) -> what :func:`published_head` made of it; read
#: straight by the publishing path (a call fewer per message), filled only here, and only
#: with keys of strings and None, so no key of other types can find another's entry.
HEADS: Dict[Tuple[str, Any, Any, Any, Any], bytes] = {}
#: A header's bytes -> what :func:`decoded_header` made of it; read straight by the
#: receiving path (a call fewer per message), filled only here.
HEADERS: Dict[bytes, Tuple[Any, Any, Any, Any]] = {}


def _remember(cache: Dict[Any, Any], key: Any, value: Any) -> Any:
    """``value``, kept in ``cache`` under ``key`` (emptied first when full)."""
    if len(cache) >= REMEMBERED:
        cache.clear()
    cache[key] = value
    return value


def published_head(host: str, room: Any, skip_sid: Any, namespace: Any, event: Any) -> bytes:
    """What a room broadcast's payload starts with, up to its packet: ``host`` (the
    publishing process's prefix), the header, a newline; as bytes, remembered, as a room's
    messages share one."""
    remembered = (type(room) is str and type(namespace) is str and type(event) is str and
                  (skip_sid is None or type(skip_sid) is str))  # 1 == True: keys must not mix
    key = (host, room, skip_sid, namespace, event)
    found = HEADS.get(key) if remembered else None
    if found is None:
        found = f"{host}{broadcast_header(room, skip_sid, namespace, event)}\n".encode()
        if remembered:
            _remember(HEADS, key, found)
    return found


def decoded_header(header: bytes) -> Tuple[Any, Any, Any, Any]:
    """``(room, skip_sid, namespace, event)`` of a room broadcast's header (ValueError if
    not JSON), remembered: a room's messages share one, and decoding it anew for each
    message from another process was a measurable part of delivering it."""
    found = HEADERS.get(header)
    if found is None:
        room, skip_sid, namespace, event = _HEADER_DECODER.decode(header.decode())
        found = _remember(HEADERS, header, (room, skip_sid, namespace, event))
    return found


def read_broadcast(payload: bytes, start: int = 0) -> Tuple[Any, Any, Any, Any, bytes]:
    """``(room, skip_sid, namespace, event, packet)`` of the room broadcast in ``payload``
    from ``start`` on (ValueError if it is not one), the packet's text as bytes."""
    newline = payload.find(b"\n", start)
    if newline < 0:
        raise ValueError("a room broadcast without its header")
    return (*decoded_header(payload[start:newline]), payload[newline + 1:])
