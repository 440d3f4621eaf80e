"""Server WebSocket frames (RFC 6455) for what prroom writes: built once per packet."""
from __future__ import annotations

import struct
from typing import Any, List, Optional, Union

from engineio import packet as eio_packet

from prroom.internals.packet_codec import engineio_text

_FRAME_ATTRIBUTE = "_prroom_ws_frame"


def _frame_header(opcode: int, length: int) -> bytes:
    if length < 126:
        return struct.pack("!BB", opcode, length)
    if length < 65536:
        return _MEDIUM_HEAD(opcode, 126, length)
    return struct.pack("!BBQ", opcode, 127, length)


#: A frame header with a 16-bit length (what a chat message gets).
_MEDIUM_HEAD = struct.Struct("!BBH").pack


def websocket_frame(data: Union[str, bytes]) -> bytes:
    """One unmasked, final WebSocket frame: text for ``str``, binary for bytes (RFC 6455)."""
    if isinstance(data, str):
        data, opcode = data.encode("utf-8"), 0x81
    else:
        data, opcode = bytes(data), 0x82
    return _frame_header(opcode, len(data)) + data


def message_packet(text: str, utf8: bytes) -> Any:
    """An Engine.IO MESSAGE packet of the Socket.IO packet ``text``, its frame (what
    :func:`frame_of` gives) built from ``utf8``, the same text already encoded.

    A clustered room broadcast has its packet's bytes anyway (it publishes them, or read
    them from Redis): framing from them skips encoding the text again.  One is made per
    message sent and per message another process sent, so a chat message's frame header
    is packed here rather than in a call of its own.  (Making the packet without its
    ``__init__``, from a copy of another's attributes, was timed slower: a dict copied
    and assigned costs more than the call.)"""
    size = len(utf8) + 1
    head = _MEDIUM_HEAD(0x81, 126, size) if 126 <= size < 65536 else _frame_header(0x81, size)
    pkt = eio_packet.Packet(eio_packet.MESSAGE, text)
    pkt.__dict__[_FRAME_ATTRIBUTE] = b"".join((head, b"4", utf8))
    return pkt


def frame_of(pkt: Any) -> bytes:
    """``pkt``'s WebSocket frame, built on first use and kept on the packet.

    python-socketio sends the very same Engine.IO packet object to every member of a room,
    so a broadcast encodes and frames its message once.
    """
    frame: Optional[bytes] = pkt.__dict__.get(_FRAME_ATTRIBUTE)
    if frame is None:
        frame = websocket_frame(engineio_text(pkt))
        setattr(pkt, _FRAME_ATTRIBUTE, frame)
    return frame


def message_packets(parts: List[Any]) -> List[Any]:
    """Engine.IO MESSAGE packets of an encoded Socket.IO packet's ``parts`` (its text, or
    text and attachments); a part that is such a packet already is kept as it is."""
    return [part if isinstance(part, eio_packet.Packet) else
            eio_packet.Packet(eio_packet.MESSAGE, part) for part in parts]
