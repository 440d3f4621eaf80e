"""gevent-websocket's frame reader, held to the frame limit before it reads a payload.

gevent-websocket 0.10 reads a frame's whole payload (``raw_read(header.length)``) as soon as
its header is decoded, whatever length the header claims, and appends fragments to one
message without a bound; python-engineio compares the message with
``max_http_buffer_size`` (PRROOM_MAX_FRAME_BYTES) only once it holds all of it.  One
unauthenticated client announcing a huge frame made the worker buffer everything it
streamed.  Here the header is checked as it is decoded (``Header.decode_header``, which
``WebSocket.read_frame`` calls before it reads the payload), and so is the running total
of a fragmented message; past the limit ``WebSocket.receive`` closes the WebSocket with
1009 (RFC 6455: message too big) and answers None, as it answers any other broken frame.

The limit is the largest ``max_http_buffer_size`` of the engine.io servers installed here
(one per process in practice), read at each frame, so a server configured later is honoured.
prroom's direct event path (:mod:`prroom.transport.event_path`) reads small frames itself
and applies the same limit before handing anything else to this reader.
``tests/internals/test_websocket_frames.py`` fails if any of these reaches changes.

Whatever the reason the server closes a WebSocket, its client gets :data:`LINGER_SECONDS`
to answer the close frame before the connection is cut (:func:`cut_after_linger`).
"""
from __future__ import annotations

import logging
import socket
import weakref
from typing import Any, Dict, Optional

logger = logging.getLogger("prroom")

#: RFC 6455's close code for a message too big to process.
CLOSE_TOO_BIG = 1009
#: After the close frame, at most this long and this much is read (and dropped) so that
#: the close frame reaches the client before the connection closes.
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20
#: Data-frame opcodes (RFC 6455): continuation, text, binary.  Control frames are >= 8 and
#: gevent-websocket already caps them at 125 bytes.
_CONTINUATION, _FIRST_CONTROL = 0x0, 0x8

#: The engine.io servers whose frame limit applies.
_servers: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: id(stream) -> bytes of the fragmented message being read on that stream (only while one is).
_message_bytes: Dict[int, int] = {}


class FrameTooBig(Exception):
    """A frame (or fragmented message) past the limit, seen in its header.

    Deliberately neither a socket error nor gevent-websocket's ``ProtocolError``: the
    library's ``receive`` would answer those with its own close code (1002), not 1009.
    """


def frame_limit() -> Optional[int]:
    """The largest frame accepted: the installed servers' ``max_http_buffer_size``."""
    limits = [eio.max_http_buffer_size for eio in _servers]
    return max(limits) if limits else None


def check_frame(key: int, opcode: int, fin: bool, length: int) -> None:
    """Raise :class:`FrameTooBig` when this data frame takes its message past the limit.

    ``key`` names the connection; the running total of a fragmented message is kept only
    until its final frame.
    """
    if opcode >= _FIRST_CONTROL:
        return
    limit = frame_limit()
    total = length + (_message_bytes.get(key, 0) if opcode == _CONTINUATION else 0)
    if limit is not None and total > limit:
        _message_bytes.pop(key, None)
        raise FrameTooBig(f"{'message' if total > length else 'frame'} of {total} bytes "
                          f"announced; the limit is {limit}")
    if fin:
        _message_bytes.pop(key, None)
    else:
        _message_bytes[key] = total


def close_with_code(websocket: Any, code: int) -> None:
    """Close gevent-websocket's ``websocket`` with a close frame that carries ``code``.

    The library's ``close(code)`` sends an empty close frame whatever the code; the frame is
    written here, and ``close`` then does the rest with its own write made a no-op.
    """
    # the socket its stream writes to (a detached connection's handler has none any more)
    sock = getattr(getattr(websocket.stream, "write", None), "__self__", None)
    try:
        websocket.send_frame(code.to_bytes(2, "big"), websocket.OPCODE_CLOSE)
    except OSError:  # gone already: closing is all that is left
        pass
    websocket.raw_write = lambda data: None
    websocket.close()
    _linger(sock)


def _linger(sock: Any) -> None:
    """Read and drop what the client still sends, for a moment, before the socket closes.

    Closing a socket with unread bytes makes the kernel send a reset, which can overtake the
    close frame: the client would never learn why.  A client that reads the close frame
    stops sending; one that does not is cut after :data:`LINGER_SECONDS` or
    :data:`LINGER_BYTES`, whichever comes first, holding one reused buffer meanwhile.
    """
    if sock is None:
        return
    import gevent  # only ever called under gevent, where this module's patches apply

    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    buffer = bytearray(16384)
    drained = 0
    with gevent.Timeout(LINGER_SECONDS, False):
        try:
            while drained < LINGER_BYTES:
                received = sock.recv_into(buffer)
                if not received:
                    break
                drained += received
        except OSError:
            pass


def cut_after_linger(sock: Any) -> None:
    """After the server's close frame, give the client a moment to close its side, then cut.

    Whatever reads the connection (its own greenlet, or the loop's watcher for an idle one)
    waits for the client's answer; a client that never answers must not keep the connection,
    its socket and its reader for ever.  The cut is a shutdown: the reader sees the end of
    the stream and the connection ends as if the client had closed it.
    """
    if sock is None:
        return
    import gevent  # only ever called under gevent, where this module's patches apply

    timer = gevent.get_hub().loop.timer(LINGER_SECONDS, ref=False)
    timer.start(_cut, sock, timer)


def _cut(sock: Any, timer: Any) -> None:
    timer.close()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already: the client answered in time
        pass


def install(eio: Any) -> bool:
    """Bound gevent-websocket's reads by ``eio``'s frame limit; False without the library.

    Patches ``Header.decode_header``, ``WebSocket.read_message`` and ``WebSocket.receive``
    once per process.
    """
    try:
        from geventwebsocket.websocket import Header, WebSocket
    except ImportError:
        return False
    _servers.add(eio)
    if getattr(WebSocket.receive, "_prroom_wrapped", False):
        return True
    decode_header = Header.decode_header  # bound to the class: a classmethod
    read_message = WebSocket.read_message
    receive = WebSocket.receive

    def bounded_decode_header(cls: Any, stream: Any) -> Any:
        header = decode_header(stream)
        check_frame(id(stream), header.opcode, header.fin, header.length)
        return header

    def bounded_read_message(self: Any) -> Any:
        stream = self.stream
        try:
            return read_message(self)
        finally:  # a broken message's running total must not outlive it
            if _message_bytes:
                _message_bytes.pop(id(stream), None)

    def bounded_receive(self: Any) -> Any:
        try:
            return receive(self)
        except FrameTooBig as exc:
            logger.info("WebSocket closed with %d: %s", CLOSE_TOO_BIG, exc)
            close_with_code(self, CLOSE_TOO_BIG)
            return None

    for function in (bounded_decode_header, bounded_read_message, bounded_receive):
        vars(function)["_prroom_wrapped"] = True
    Header.decode_header = classmethod(bounded_decode_header)
    WebSocket.read_message = bounded_read_message
    WebSocket.receive = bounded_receive
    return True
