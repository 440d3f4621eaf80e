"""Server WebSocket frames (RFC 6455) for what prroom writes: built once per packet."""
from __future__ import annotations

import struct
from typing import Any, Union

from prroom.internals.packet_codec import engineio_text

_FRAME_ATTRIBUTE = "_prroom_ws_frame"


def websocket_frame(data: Union[str, bytes]) -> bytes:
    """One unmasked, final WebSocket frame: text for ``str``, binary for bytes (RFC 6455)."""
    if isinstance(data, str):
        data, opcode = data.encode("utf-8"), 0x81
    else:
        data, opcode = bytes(data), 0x82
    length = len(data)
    if length < 126:
        header = struct.pack("!BB", opcode, length)
    elif length < 65536:
        header = struct.pack("!BBH", opcode, 126, length)
    else:
        header = struct.pack("!BBQ", opcode, 127, length)
    return header + data


def frame_of(pkt: Any) -> bytes:
    """``pkt``'s WebSocket frame, built on first use and kept on the packet.

    python-socketio sends the very same Engine.IO packet object to every member of a room,
    so a broadcast encodes and frames its message once.
    """
    frame = pkt.__dict__.get(_FRAME_ATTRIBUTE)
    if frame is None:
        frame = websocket_frame(engineio_text(pkt))
        setattr(pkt, _FRAME_ATTRIBUTE, frame)
    return frame
