"""What a server says, and to whom: room announcements, presence, one socket, acks.

The one place the handlers (:class:`~prroom.server.events.RoomEvents`), connection state
recovery (:class:`~prroom.server.recovery.SessionRecovery`), identity control and the
sweepers send through, so none of them reaches into another to be heard.

Two seams for clustered mode, where an ack must say whether the broadcast reached Redis
(``warning: cluster-unavailable``):

- python-socketio's ``emit`` returns nothing, so :meth:`Broadcaster.publish_to_room` emits
  a room broadcast through the clustered manager's ``emit_published``, which returns the
  publish's ticket; a recoverable one's ticket the manager keeps per greenlet, taken right
  after with ``managers.published_ticket(server)`` (None with one process).
- rather than hold the connection's reader until its batch's reply,
  :meth:`Broadcaster.broadcast_then` may answer the ack later, from the reply itself
  (``socketio_hooks.answer_later``).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from prroom.cluster.channels import QueueUnavailable
from prroom.cluster.managers import published_ticket
from prroom.cluster.publisher import Ticket
from prroom.cluster.recovery_store import FirstSend, earlier_ack
from prroom.core import protocol
from prroom.core.presence import CONNECTIONS, Joined, Left, Presence
from prroom.core.protocol import room_name
from prroom.internals import packet_writes, socketio_hooks
from prroom.internals.acks import ACK_REQUESTED
from prroom.internals.types import SocketIOServer
from prroom.server.recoverable import RecoverableBroadcasts

logger = logging.getLogger("prroom")


class Broadcaster:
    """Sends one server's events on one namespace; counts presence to announce it."""

    def __init__(self, server: SocketIOServer, namespace: str, presence: Presence,
                 recoverable: Optional[RecoverableBroadcasts] = None) -> None:
        self.server = server
        self.namespace = namespace
        self.presence = presence
        #: recovery on: recoverable broadcasts go out numbered (None: recovery off)
        self.recoverable = recoverable

    def announce(self, event: str, pull_request_id: int, username: str,
                 skip_sid: Optional[str] = None) -> bool:
        """Tell a room ``{pullRequestId, username}`` (typing, stop-typing, joined, left)."""
        return self.broadcast(event, {"pullRequestId": pull_request_id,
                                      "username": username},
                              pull_request_id, skip_sid=skip_sid)

    def broadcast(self, event: str, data: Dict[str, Any], pull_request_id: int,
                  skip_sid: Optional[str] = None) -> bool:
        """Emit to a room on every process; False if only this process's members got it."""
        reached: bool = self.broadcast_then(event, data, pull_request_id, bool,
                                            may_defer=False, skip_sid=skip_sid)
        return reached

    def broadcast_then(self, event: str, data: Dict[str, Any], pull_request_id: int,
                       answer: Callable[[bool], Any], may_defer: bool,
                       skip_sid: Optional[str] = None) -> Any:
        """Emit to a room on every process and return ``answer(reached)``.

        Clustered, the answer needs the publish's outcome: rather than hold this
        connection's handler until its batch's reply (a wait and a wake-up per message),
        the ack is sent from the reply itself when ``may_defer`` (``answer`` must then not
        block).
        """
        ticket, recoverable = self.publish_to_room(event, data, pull_request_id, skip_sid)
        if ticket is None or (not recoverable and ACK_REQUESTED.get() is False):
            # one process; or the client asked for no ack (False: None is "not known"), so
            # nobody would read the answer
            return answer(True)
        if may_defer:
            deferred = _AnswerOnReply(self, ticket, recoverable, answer,
                                      (event, data, pull_request_id, skip_sid))
            later = socketio_hooks.answer_later(self.server, deferred)
            if later is not None:
                return later
        return answer(self.reached(ticket, recoverable, event, data, pull_request_id,
                                   skip_sid))

    def broadcast_once(self, event: str, data: Dict[str, Any], pull_request_id: int,
                       once: FirstSend) -> Tuple[bool, Optional[Dict[str, Any]]]:
        """Clustered with recovery: emit a send to a room unless a send with the same
        clientMessageId was published first, on any process.  Returns whether Redis was
        reached, and the first send's ack if there was one (then nothing was emitted)."""
        ticket, recoverable = self.publish_to_room(event, data, pull_request_id, None, once)
        if ticket is None:
            return True, None
        try:
            return True, earlier_ack(ticket.wait())
        except QueueUnavailable:
            self._unpublished(recoverable, event, data, pull_request_id, None)
            return False, None

    def publish_to_room(self, event: str, data: Dict[str, Any], pull_request_id: int,
                        skip_sid: Optional[str], once: Optional[FirstSend] = None
                        ) -> Tuple[Optional[Ticket], bool]:
        """Emit; the publish's ticket (None if nothing was published), and whether local
        members get the broadcast only back from Redis (a recoverable one, clustered)."""
        numbered = self.recoverable
        recoverable = numbered is not None and numbered.broadcast(event, data, pull_request_id,
                                                                  skip_sid, once)
        if not recoverable:
            publish = getattr(getattr(self.server, "manager", None), "emit_published", None)
            if publish is not None:  # clustered: the ticket comes back from the emit itself
                return publish(event, data, self.namespace, room_name(pull_request_id),
                               skip_sid), False
            self.server.emit(event, data, to=room_name(pull_request_id), skip_sid=skip_sid,
                             namespace=self.namespace)
        ticket = published_ticket(self.server)
        return ticket, recoverable and numbered is not None and numbered.shared is not None

    def reached(self, ticket: Ticket, recoverable: bool, event: str, data: Dict[str, Any],
                pull_request_id: int, skip_sid: Optional[str]) -> bool:
        """Wait for the publish; if it did not reach Redis, a broadcast that local members
        would have got back from Redis goes to them directly."""
        try:
            ticket.wait()
            return True
        except QueueUnavailable:
            self._unpublished(recoverable, event, data, pull_request_id, skip_sid)
            return False

    def _unpublished(self, recoverable: bool, event: str, data: Dict[str, Any],
                     pull_request_id: int, skip_sid: Optional[str]) -> None:
        """A publish did not reach Redis: local members who would have got the broadcast
        back from Redis get it directly."""
        if recoverable:
            self.server.emit(event, data, to=room_name(pull_request_id), skip_sid=skip_sid,
                             namespace=self.namespace, ignore_queue=True)

    def to_socket(self, sid: str, event: str, data: Any) -> None:
        """Send one event to one connection of this process (no trip through the queue)."""
        # a chat message (a recovery replay) goes through the manager, which counts deliveries
        if event == protocol.MESSAGE or not packet_writes.send_event(
                self.server, sid, self.namespace, event, data):
            self.server.emit(event, data, to=sid, namespace=self.namespace, ignore_queue=True)

    def presence_left(self, pull_request_id: int, username: str,
                      skip_sid: Optional[str] = None, quietly: bool = False) -> None:
        """Count one socket of the user fewer in the room; tell the others if it was the
        user's last (unless ``quietly``: the session came back on another process)."""
        self._presence_changed(self.presence.remove, protocol.USER_LEFT, pull_request_id,
                               username, skip_sid, quietly)

    def presence_joined(self, sid: str, pull_request_id: int, username: str,
                        quietly: bool = False) -> None:
        """Count ``sid``'s user in the room; tell the others if it is the user's first
        (unless ``quietly``: a restored session the others never heard leave)."""
        self._presence_changed(self.presence.add, protocol.USER_JOINED, pull_request_id,
                               username, sid, quietly)

    def _presence_changed(self, change: Callable[[int, str], bool], event: str,
                          pull_request_id: int, username: str, skip_sid: Optional[str],
                          quietly: bool) -> None:
        # ``change`` says whether the user's first socket came or last went: only then
        # do the others hear of it.  A presence store that fails costs the announcement,
        # never the join or leave itself.
        try:
            crossed = change(pull_request_id, username)
        except Exception as exc:
            logger.error("presence update failed for pr=%s: %s", pull_request_id, exc)
            return
        if crossed and not quietly:
            self.announce(event, pull_request_id, username, skip_sid=skip_sid)

    def announce_left(self, gone: Iterable[Left]) -> None:
        """Tell rooms that users are gone: a vanished process's (presence reaper), or
        removals that never reached Redis (presence repair)."""
        self._announce_all(protocol.USER_LEFT, gone)

    def announce_joined(self, back: Iterable[Joined]) -> None:
        """Tell rooms that users announced as left while this process stalled are here
        (presence repair after a reap)."""
        self._announce_all(protocol.USER_JOINED, back)

    def _announce_all(self, event: str, memberships: Iterable[Tuple[int, str]]) -> None:
        # Every one is emitted before any publish is waited for: a wait lets the subscriber
        # deliver other processes' news, and a stalled process's repair ("joined") must not
        # reach a member between the reaper's "left"s.
        sent = []
        for pull_request_id, username in memberships:
            if pull_request_id == CONNECTIONS:  # connection counts, not a room
                continue
            data = {"pullRequestId": pull_request_id, "username": username}
            ticket, recoverable = self.publish_to_room(event, data, pull_request_id, None)
            if ticket is not None:
                sent.append((ticket, recoverable, data, pull_request_id))
        for ticket, recoverable, data, pull_request_id in sent:
            self.reached(ticket, recoverable, event, data, pull_request_id, None)


class _AnswerOnReply(socketio_hooks.LaterAnswer):
    """A clustered send's ack, answered from its publish's reply (``broadcast_then``).

    One small object per message in flight, which also holds the connection's part
    (:class:`~prroom.internals.acks.LaterAnswer`), rather than nested closures: hundreds
    are alive at any moment under load, and each closure's cells are more for the garbage
    collector to look at."""

    __slots__ = ("broadcaster", "ticket", "recoverable", "answer", "broadcast")

    def __init__(self, broadcaster: Broadcaster, ticket: Ticket, recoverable: bool,
                 answer: Callable[[bool], Any], broadcast: Tuple[str, Dict[str, Any], int,
                                                                 Optional[str]]) -> None:
        self.broadcaster, self.ticket, self.recoverable = broadcaster, ticket, recoverable
        self.answer, self.broadcast = answer, broadcast

    def start(self) -> None:
        """The handler returned: answer once the reply is in."""
        self.ticket.then(self.finish)

    def finish(self, done: Ticket) -> None:
        """The reply is in (or the publish failed): send the ack."""
        event = self.broadcast[0]
        try:
            try:
                done.result()  # the batch ended: no wait (what reached() would start with)
                reached = True
            except QueueUnavailable:
                reached = self.broadcaster.reached(done, self.recoverable, *self.broadcast)
            body = self.answer(reached)
        except Exception:  # the client must hear back whatever went wrong
            logger.exception("error answering %s", event)
            body = protocol.failure(protocol.internal_error())
        self.send(body)
