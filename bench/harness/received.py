"""Room messages as another process of the cluster published them, read by this process.

The receiving side of a room that spans processes, for ``bench/handler_cost.py --variant
received``: the messages' bytes, as Redis sends them to a subscriber (RESP2 ``smessage``
frames), come from a stand-in socket into the manager's own subscriber, parser and listener
loop, and are delivered to the room's members here.  Only the socket is a stand-in; every
other step is the one a served process takes for each message another process publishes.

prroom and gevent are imported inside the functions: the measured process patches the
standard library before prroom is first imported.
"""
from __future__ import annotations

from typing import Any, Callable, List, Sequence, Tuple

#: Messages one read brings: as many as the sending side's dispatch handles between two
#: yields to the event loop, so that both sides end a loop turn (and write) as often.
MESSAGES_PER_READ = 16


def other_prefix(own: str) -> str:
    """A publishing process's prefix (``<host id>:``) of the same length as ``own``, not
    ``own``: the listener passes over its own process's messages, and reads the header
    where another's prefix of that length ends."""
    other = "0" * (len(own) - 1) + ":"
    return other if other != own else "1" * (len(own) - 1) + ":"


def smessage(channel: str, payload: bytes) -> bytes:
    """One sharded pub/sub message as Redis writes it to a subscriber (RESP2)."""
    name = channel.encode()
    return b"*3\r\n$8\r\nsmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(name), name,
                                                                    len(payload), payload)


class _Reads:
    """A connected socket whose reads return the given chunks, one loop turn apart (a real
    read would have waited for them); then the end of the stream."""

    def __init__(self, chunks: List[bytes], at_end: Callable[[], None],
                 sleep: Callable[[float], None]) -> None:
        self._chunks = chunks[::-1]
        self._at_end = at_end
        self._sleep = sleep

    def settimeout(self, timeout: float) -> None:
        """What the reader sets; nothing here ever waits."""

    def recv(self, size: int) -> bytes:
        """The next chunk, after a turn of the event loop (its end-of-turn writes run)."""
        self._sleep(0)
        if self._chunks:
            return self._chunks.pop()
        self._at_end()
        return b""


class _Connection:
    """What the subscriber asks of a redis-py connection: its socket, and sends that go
    nowhere (subscriptions are not confirmed, and need not be: nothing waits for them)."""

    protocol = 2

    def __init__(self, sock: _Reads) -> None:
        self._sock = sock

    def connect(self) -> None:
        """Connected already."""

    def disconnect(self) -> None:
        """Nothing to close."""

    @staticmethod
    def pack_commands(commands: Sequence[Tuple[str, ...]]) -> List[bytes]:
        """Nothing to send."""
        return []

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Sent nowhere."""


def published_frames(manager: Any, messages: Sequence[Tuple[str, str]]) -> List[bytes]:
    """``messages`` (``(room, packet text)``) as Redis sends them to ``manager``'s subscriber
    when another process published them: made once, before anything is measured."""
    from prroom.cluster.headers import published_head

    prefix = other_prefix(manager._own_prefix)
    return [smessage(f"{manager.channel}:{room}",
                     published_head(prefix, room, None, "/", "pr-room-message") + text.encode())
            for room, text in messages]


def deliver_received(manager: Any, frames: Sequence[bytes], count: int) -> None:
    """Have the clustered ``manager`` receive ``count`` of ``frames`` (cycled, from
    :func:`published_frames`), :data:`MESSAGES_PER_READ` a read, and deliver them to their
    rooms' members here; returns once all are delivered and written."""
    import gevent

    from prroom.cluster.subscriber import Subscriber

    chunks = []
    for start in range(0, count, MESSAGES_PER_READ):
        taken = [frames[n % len(frames)] for n in range(start, min(start + MESSAGES_PER_READ,
                                                                   count))]
        chunks.append(b"".join(taken))
    subscriber: Any = None
    sock = _Reads(chunks, lambda: subscriber.close(), gevent.sleep)
    subscriber = Subscriber(lambda: _Connection(sock), manager.channel, gevent.sleep,
                            lambda connection: True, skip=manager._own_prefix_bytes)
    kept, manager.subscriber = manager.subscriber, subscriber
    try:
        for message in manager._listen():  # only room broadcasts come: nothing is yielded
            raise RuntimeError(f"the listener yielded a message it should deliver: {message}")
    finally:
        manager.subscriber = kept
    gevent.sleep(0)  # the last read's writes
