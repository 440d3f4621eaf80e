"""gevent's sockets and python-engineio's gevent driver, as prroom's frame reader uses them.

These functions read names the libraries keep private: gevent's socket ``_wait`` and
``_read_event`` (its read watcher), and the gevent-websocket socket that python-engineio's
``WebSocketWSGI`` keeps in ``_sock``.  They are part of the ``event-path`` and
``idle-watchers`` seams
(:mod:`prroom.internals.seams`).  A connection's read buffer is made over a raw reader that
counts what it read (:func:`counted_reader`), so that whether the buffer is empty is known
without a read.
"""
from __future__ import annotations

import io
import socket
from typing import Any, Optional


def websocket_of(ws: Any) -> Any:
    """The gevent-websocket socket of python-engineio's gevent ``WebSocketWSGI`` ``ws``."""
    return ws._sock


def wait_readable(sock: Any) -> None:
    """Wait until gevent's socket ``sock`` is readable, under its timeout.

    gevent's ``recv_into`` first tries the system call and waits only after ``EAGAIN``;
    a reader that knows its buffer is empty, and that the client has had no time to send,
    saves that failing call (and its exception) by waiting first, on the socket's own
    read watcher, as ``recv_into`` itself then does.  Does not wait if ``sock`` has no
    read watcher (closed: the read then fails at once, as it should).
    """
    event = getattr(sock, "_read_event", None)
    if event is not None:  # None once closed: the read then fails at once, as it should
        sock._wait(event)


def read_watcher(sock: Any) -> Any:
    """gevent's own read watcher of socket ``sock`` (its libev ``io``); None if it has none.

    An idle connection waits on it with a callback instead of a parked greenlet
    (:mod:`prroom.transport.idle`): the socket's own watcher, so nothing is added per
    connection, and gevent's reads keep waiting on the same one.
    """
    watcher = getattr(sock, "_read_event", None)
    if watcher is None or not callable(getattr(watcher, "start", None)):
        return None
    return watcher


def read_watchers_available() -> bool:
    """Whether gevent's sockets still carry the read watcher :func:`read_watcher` takes."""
    import socket

    from gevent import socket as gevent_socket

    try:
        left, right = gevent_socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    except Exception:  # gevent's socket itself changed: no watcher to take
        return False
    try:
        watcher = read_watcher(left)
        return watcher is not None and hasattr(watcher, "stop") and hasattr(watcher, "active")
    finally:
        left.close()
        right.close()


class CountedSocketIO(socket.SocketIO):
    """A socket's raw reader (what ``makefile`` wraps) that counts the bytes it has read.

    With that count as its ``tell()``, the buffered reader over it can say how many bytes
    its buffer holds (:func:`buffered_bytes`) without reading: the only other way to know
    is a read, which fails with ``EAGAIN`` when nothing is there.
    """

    bytes_read = 0

    def readinto(self, b: Any) -> Optional[int]:
        """``SocketIO.readinto``, counted."""
        count: Optional[int] = super().readinto(b)
        if count:
            self.bytes_read += count
        return count

    def tell(self) -> int:
        """The bytes read so far (the buffered reader's position is this less its buffer)."""
        return self.bytes_read


def counted_reader(sock: Any, buffer_size: int) -> Any:
    """``sock.makefile("rb", buffer_size)``, over a :class:`CountedSocketIO`."""
    raw = sock.makefile("rb", 0)  # the raw reader, counted among the socket's own files
    if type(raw) is socket.SocketIO:
        raw.__class__ = CountedSocketIO
    return io.BufferedReader(raw, buffer_size)


def buffered_bytes(rfile: Any) -> Optional[int]:
    """How many bytes ``rfile``'s buffer holds; None if it is not a :func:`counted_reader`."""
    raw = getattr(rfile, "raw", None)
    if type(raw) is not CountedSocketIO or rfile.closed:
        return None
    try:
        held: int = raw.bytes_read - rfile.tell()
    except (OSError, ValueError):  # closed: a read finds out
        return None
    return held
