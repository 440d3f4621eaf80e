"""What prroom.transport.idle relies on in gevent's hub when a detached connection's socket
goes away: the wait on its read watcher is cancelled by throwing into the callback's owner.

An idle connection's socket watcher is armed with a method of the connection, not a
greenlet's ``switch``.  gevent's ``socket.shutdown`` (the cut after an unanswered close
frame) and ``close`` cancel the waits on the socket's watchers: the hub then calls
``callback.__self__.throw(error)``.  ``IdleConnection.throw`` takes that as input arriving;
without it the hub logged an ``AttributeError`` traceback for every such connection.  If
gevent stops throwing (or throws elsewhere), this test says so before the connections
stop ending.
"""
import socket

import gevent
import gevent.socket

from prroom.internals import gevent_io


class _Owner:
    """An armed watcher's callback owner, as IdleConnection is."""

    def __init__(self) -> None:
        self.thrown: list = []

    def readable(self) -> None:
        """Input: nothing to do here."""

    def throw(self, *error: object) -> None:
        """The hub cancelling the wait."""
        self.thrown.append(error)


def test_shutting_down_a_socket_throws_into_its_armed_watchers_owner() -> None:
    left, right = gevent.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    watcher = gevent_io.read_watcher(left)
    assert watcher is not None
    owner = _Owner()
    watcher.start(owner.readable)
    try:
        left.shutdown(socket.SHUT_RDWR)
        gevent.sleep(0)  # the hub runs the cancellation it scheduled
        gevent.sleep(0)
        assert owner.thrown, "gevent no longer throws into an armed read watcher's owner"
        [error] = owner.thrown[0]
        assert isinstance(error, BaseException) or issubclass(error, BaseException)
    finally:
        watcher.stop()
        left.close()
        right.close()
