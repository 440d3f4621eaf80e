"""Acks: whether the event being handled asked for one, and answering it later.

python-socketio does not tell a handler whether its client asked for an ack, and sends the
ack from the handler's return value.  prroom's event entry point
(:func:`prroom.internals.socketio_hooks.track_ack_requests`) records the first in
:data:`ACK_REQUESTED` for the handler's duration; a clustered send whose ack must wait for
its publish's reply says so with :func:`answer_later`, and the entry point then hands the
ack to that answer (:func:`start_answer`) instead of sending it.
"""
from __future__ import annotations

import contextvars
from typing import Any, Callable, Optional

from socketio import packet as sio_packet

from prroom.internals import packet_codec, packet_writes
from prroom.transport import framing
from prroom.transport import writes as websocket_writes

#: Whether the event being handled asked for an ack (None outside an event, or unknown).
ACK_REQUESTED: "contextvars.ContextVar[Optional[bool]]" = contextvars.ContextVar(
    "prroom_ack_requested", default=None)
#: Set by :func:`answer_later` during a handler: who will produce the ack, and when.
ANSWER_LATER: "contextvars.ContextVar[Any]" = contextvars.ContextVar("prroom_answer_later",
                                                                    default=None)


def ack_requested() -> bool:
    """Whether the event being handled asked for an ack.

    False when it cannot be known, so the caller also sends the error event: the client
    then hears about a refusal twice rather than never.
    """
    return bool(ACK_REQUESTED.get())


class LaterAnswer:
    """An event's ack sent after its handler returned: subclass it with :meth:`start`.

    The handler returns :func:`answer_later` of one; once it returned, the event's entry
    point ties it to the event's connection and ack id and calls :meth:`start`, which
    arranges for :meth:`send` to be called once, from any task.  Meanwhile what the handler
    sent the connection (its own copy of a broadcast) waits, to leave with the ack in one
    write.  One object per waiting ack, the subclass's state and the connection's together:
    hundreds wait at any moment under load, and a clustered message makes one.
    """

    __slots__ = ("_server", "_eio_sid", "_namespace", "_ack_id", "_writer", "_release")
    # set by start_answer before start(): the event's connection and ack, and what holds
    # its writes (its direct writer, or the release of hold_writes)
    _server: Any
    _eio_sid: str
    _namespace: str
    _ack_id: int
    _writer: Optional[websocket_writes.DirectWriter]
    _release: Optional[Callable[[], None]]

    def start(self) -> None:
        """The handler returned: arrange for :meth:`send` to be called once."""
        raise NotImplementedError

    def send(self, body: Any) -> None:
        """Send the ack with ``body``, then let the held writes go."""
        # the frame packet_writes.write_ack writes, to the writer held for it, inline: this
        # runs for every clustered message
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                text = packet_codec.plain_text(sio_packet.ACK, [body], self._ack_id)
                if text is not None:
                    writer.put_frame(
                        framing.websocket_frame(packet_writes.ENGINEIO_MESSAGE + text))
                    return
            # no direct writer (or released already); or binary: python-socketio's way
            send_ack(self._server, self._eio_sid, self._namespace, self._ack_id, body)
        finally:
            if writer is not None:
                writer.release()
            else:
                self.release()

    def release(self) -> None:
        """Let the held writes go without sending (once)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
        release, self._release = self._release, None
        if release is not None:
            release()


def answer_later(server: Any, answer: LaterAnswer) -> Any:
    """Have the ack of the event being handled sent later by ``answer``, not from the
    handler's return.

    Returns what the handler must return for that (python-socketio's ``not_handled``, so
    it sends no ack of its own); once the handler returned, ``answer.start()`` is called.
    Returns None when that cannot be done (no ack asked for, or the event entry point is not
    wrapped): the handler answers now.
    """
    not_handled = getattr(server, "not_handled", None)
    if not_handled is None or not ACK_REQUESTED.get():
        return None
    ANSWER_LATER.set(answer)
    return not_handled


def start_answer(answer: LaterAnswer, server: Any, eio_sid: str, namespace: str,
                 ack_id: int) -> None:
    """Tie ``answer`` to event ``ack_id`` of connection ``eio_sid`` and start it: the
    handler asked for its ack to be answered later."""
    answer._server, answer._eio_sid, answer._namespace, answer._ack_id = \
        server, eio_sid, namespace, ack_id
    # What the handler already sent this connection waits for the ack.  Its writer is
    # looked up as packet_writes.write_ack does, inline: this runs for every clustered
    # message.
    writer: Any = None
    if namespace == "/" and server.packet_class is packet_codec.Packet and \
            getattr(getattr(server, "_send_packet", None), "_prroom_wrapped", False):
        writer = packet_writes.direct_writer(server.eio.sockets, eio_sid)
    if isinstance(writer, websocket_writes.DirectWriter):
        writer.hold()
        answer._writer, answer._release = writer, None
    else:
        answer._writer = None
        answer._release = websocket_writes.hold_writes(server, eio_sid)
    try:
        answer.start()
    except BaseException:
        answer.release()
        raise


def send_ack(server: Any, eio_sid: str, namespace: str, ack_id: int, body: Any) -> None:
    """Send the ACK packet for event ``ack_id`` with ``body``, as python-socketio does
    (its frame written straight to the connection where it can be)."""
    if namespace == "/" and packet_writes.write_ack(server, eio_sid, ack_id, [body]):
        return
    server._send_packet(eio_sid, server.packet_class(sio_packet.ACK, namespace=namespace,
                                                     id=ack_id, data=[body]))
