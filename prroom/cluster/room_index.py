"""python-socketio's manager with a per-socket room index: one process's, and the cluster's base.

The stock manager finds a socket's rooms (``rooms(sid)``, and every disconnect) by scanning
every room of the namespace, including one private room per connected socket, so each
disconnect costs O(sockets on the server).  :class:`IndexedRoomsMixin` keeps the reverse
index ``(namespace, sid) -> rooms`` so both cost O(rooms of that socket), and hands a
broadcast's encoded packet to the transport's fan-out (:func:`member_writer`).  It is a
mixin so the same index serves the in-memory manager (:class:`IndexedManager`) and the
clustered one (:class:`~prroom.cluster.managers.ClusterManager`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set, Tuple

import socketio
from socketio import packet as sio_packet

from prroom.cluster.publisher import Ticket
from prroom.internals import packet_codec
from prroom.transport.framing import message_packet, message_packets

if TYPE_CHECKING:  # pragma: no cover - what the mixin is mixed into
    from socketio import Manager as _ManagerBase

    from prroom.transport.writes import Deliver
else:
    _ManagerBase = object


def emit_arguments(data: Any) -> List[Any]:
    """An emit's ``data`` as the packet's arguments, as python-socketio reads it: a tuple is
    several arguments, None is none, anything else is one."""
    return list(data) if isinstance(data, tuple) else [] if data is None else [data]


def member_writer(server: Any) -> "Deliver":
    """``deliver(members, skip, packets, size)`` for a broadcast: :func:`websocket_writes.fan_out`
    over ``server``'s connections, python-socketio's own send for those it cannot write."""
    # imported here: posting from a sync (non-gevent) process imports this module, and
    # the hooks bring the gevent transport with them
    from prroom.internals import socketio_hooks
    from prroom.transport import writes as websocket_writes

    return websocket_writes.fan_out(server.eio.sockets, socketio_hooks.eio_packet_sender(server))


def _skipped(members: Any, skip_sid: Any) -> int:
    """How many of ``members`` (sid -> eio_sid) an emit's ``skip_sid`` (a sid, a list of
    them, or None) leaves out."""
    if isinstance(skip_sid, list):
        return sum(1 for sid in set(skip_sid) if sid in members)
    return 1 if skip_sid in members else 0


Command = Callable[[Dict[str, Any]], Any]


class IndexedRoomsMixin(_ManagerBase):
    """Keeps ``self._rooms_by_sid[(namespace, sid)] = {room, ...}`` beside ``self.rooms``."""

    #: Event whose deliveries are counted, and the callable told how many (metrics).
    counted_event = "pr-room-message"
    on_delivered: Optional[Callable[[int], None]] = None
    #: name -> handler of the commands :meth:`broadcast_command` may run on every process
    commands: Dict[str, Command]

    def run_command(self, name: str, args: Dict[str, Any]) -> Any:
        """Run command ``name`` here; None if this process has no handler for it."""
        handler = self.commands.get(name)
        return handler(args) if handler is not None else None

    def broadcast_command(self, name: str, args: Dict[str, Any]) -> Tuple[Any, Optional[Ticket]]:
        """Run command ``name`` on this process (its result) and, clustered, publish it to
        every other process (the publish's ticket; None with one process)."""
        return self.run_command(name, args), None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Built here, not in initialize(): Flask-SocketIO's test client calls initialize()
        # again for every client it creates, which must not forget connected sockets.
        self._rooms_by_sid: Dict[Tuple[str, str], Set[Optional[str]]] = {}
        self.commands = {}
        self._member_send: Optional[Deliver] = None
        super().__init__(*args, **kwargs)

    def _deliver(self, namespace: str, room: Any, skip_sid: Any, packets: List[Any],
                 event: Any = None) -> None:
        """python-socketio's ``Manager.emit`` without a callback: the Engine.IO ``packets``
        of an encoded Socket.IO packet (:func:`message_packets`) through
        :func:`member_writer`; the deliveries counted for the metrics if ``event`` is the
        counted one (from the room's members here, not in a call of their own: this runs
        for every message, and a second time for every message another process sent)."""
        rooms = self.rooms.get(namespace)
        if rooms is None:
            return
        deliver = self._member_send
        if deliver is None:
            deliver = self._member_send = member_writer(self.server)
        if isinstance(room, str):
            # one room: its members as get_participants would give them (a copy, taken
            # before anything is sent), without a generator step per member
            members = rooms.get(room)
            if members is None:
                return
            participants: Any = list(members.items())
            size = len(participants)  # a big room is written as it goes
            if not size:  # (asked of the list: a room's truth value is a Python call)
                return
            if event is not None and self.on_delivered is not None and \
                    event == self.counted_event:
                self.on_delivered(size if skip_sid is None else
                                  size - _skipped(members, skip_sid))
        else:
            if event is not None:
                self._count_deliveries(event, namespace, room, skip_sid)
            participants, size = self.get_participants(namespace, room), 0
        deliver(participants, skip_sid if isinstance(skip_sid, list) else (skip_sid,),
                packets, size)

    def _count_deliveries(self, event: Any, namespace: Optional[str], room: Any,
                          skip_sid: Any) -> None:
        if self.on_delivered is None or event != self.counted_event:
            return
        members = self.rooms.get(namespace or "/", {}).get(room, ())
        self.on_delivered(len(members) - _skipped(members, skip_sid))

    def basic_enter_room(self, sid: str, namespace: str, room: Optional[str],
                         eio_sid: Optional[str] = None) -> None:
        """python-socketio's, plus the index."""
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_by_sid.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: Optional[str]) -> None:
        """python-socketio's, plus the index."""
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_by_sid.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_by_sid[(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        """Leave the socket's rooms from the index: no scan of every room."""
        rooms = self._rooms_by_sid.pop((namespace, sid), ())
        for room in list(rooms):
            # skip our own override: the index entry is already gone
            super(IndexedRoomsMixin, self).basic_leave_room(sid, namespace, room)
        # The rest of the parent's bookkeeping, without its scan of every room.
        if sid in self.callbacks:
            del self.callbacks[sid]
        for name in ("pending_connect", "pending_disconnect"):
            pending = getattr(self, name, {})
            if namespace in pending and sid in pending[namespace]:
                pending[namespace].remove(sid)
                if not pending[namespace]:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> List[str]:
        """The socket's rooms, from the index."""
        return [room for room in self._rooms_by_sid.get((namespace, sid), ()) if room is not None]


class IndexedManager(IndexedRoomsMixin, socketio.Manager):
    """In-memory manager (single process) with O(rooms of the socket) lookups."""

    def emit(self, event: str, data: Any, namespace: str, room: Any = None,
             skip_sid: Any = None, callback: Any = None, to: Any = None,
             **kwargs: Any) -> Any:
        """python-socketio's, counting deliveries for the metrics; without a callback, each
        member's packet goes through :func:`member_writer`."""
        room = to or room
        if callback is not None:
            self._count_deliveries(event, namespace, room, skip_sid)
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid,
                                callback=callback, **kwargs)
        if namespace not in self.rooms:
            return None
        args = [event, *emit_arguments(data)]
        # the text alone where it is plain JSON on "/": the packet object, built for each
        # broadcast only to be encoded, is left out (a binary one is built as before)
        encoded = packet_codec.event_text(self.server.packet_class, namespace, args)
        if encoded is None:
            encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace,
                                               data=args).encode()
        self._deliver(namespace, room, skip_sid,
                      [message_packet(encoded, encoded.encode())]
                      if isinstance(encoded, str) else
                      message_packets(encoded if isinstance(encoded, list) else [encoded]),
                      event)
        return None
