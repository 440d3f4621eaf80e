"""Recoverable room broadcasts: numbered, kept for the recovery window, sent with an offset.

What :class:`~prroom.server.broadcaster.Broadcaster` asks before a room broadcast when
connection state recovery is on: is this event one a returning client must not miss, and if
so, send it with its offset.  In one process the packets are kept in this process's memory
(:class:`~prroom.core.recovery.RoomBuffers`); clustered, the clustered manager's publish
script numbers and keeps them in Redis (:mod:`prroom.cluster.recovery_store`).
:class:`~prroom.server.recovery.SessionRecovery` reads the same buffers when it restores a
session: both hold this one object, neither holds the other.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from prroom.cluster.recovery_store import PUBLISH_SCRIPT, FirstSend, RedisRecoveryStore
from prroom.core import protocol
from prroom.core.protocol import ROOM_PREFIX, room_name
from prroom.core.recovery import RoomBuffers
from prroom.internals.types import SocketIOServer

#: Room broadcasts a returning client must not miss: they carry an offset and are buffered.
#: Typing indicators are not: replayed seconds later they would be stale.
RECOVERABLE_EVENTS = frozenset({protocol.MESSAGE, protocol.USER_JOINED, protocol.USER_LEFT})


class RecoverableBroadcasts:
    """One server's recoverable broadcasts: ``buffers`` in memory, or ``shared`` in Redis."""

    def __init__(self, server: SocketIOServer, namespace: str, buffers: RoomBuffers,
                 shared: Optional[RedisRecoveryStore] = None) -> None:
        self.server = server
        self.namespace = namespace
        self.buffers = buffers
        #: clustered: the deployment's store; the clustered manager publishes through it
        self.shared = shared
        #: clustered: the manager that numbers, keeps and delivers the broadcasts
        self.manager: Any = None
        if shared is not None:
            self.manager = server.manager
            self.manager.enable_recovery(PUBLISH_SCRIPT, self._publish_args, self._stream_of)

    def broadcast(self, event: str, data: Dict[str, Any], pull_request_id: int,
                  skip_sid: Optional[str], once: Optional[FirstSend] = None) -> bool:
        """Emit a room broadcast with its offset if ``event`` is recoverable; False if it
        is not (the caller emits it as usual).  Clustered, ``once`` makes the publish
        check for an earlier send with its key first (see :class:`FirstSend`)."""
        if event not in RECOVERABLE_EVENTS:
            return False
        if self.shared is not None:
            self.manager.emit_recoverable(event, data, self.namespace,
                                          room_name(pull_request_id), skip_sid, once)
            return True
        # the offset as last argument, as socket.io-client expects; one tuple for the
        # whole room, so the packet is still encoded and framed once per broadcast
        offset = self.buffers.record(pull_request_id, event, data, skip_sid)
        self.server.emit(event, (data, offset), to=room_name(pull_request_id),
                         skip_sid=skip_sid, namespace=self.namespace)
        return True

    def _stream_of(self, room: str) -> str:
        assert self.shared is not None
        return self.shared.room_key(int(room[len(ROOM_PREFIX):]))

    def _publish_args(self, room: str, head: str, tail: str, command: str,
                      channel: str, once: Optional[FirstSend]) -> Tuple[List[str], List[Any]]:
        assert self.shared is not None
        return self.shared.publish_args(int(room[len(ROOM_PREFIX):]), head, tail, command,
                                        channel, once)
