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

from engineio import packet as eio_packet
from socketio import packet as sio_packet

from prroom.internals import packet_codec, packet_writes
from prroom.transport import framing
from prroom.transport import writes as websocket_writes

_MESSAGE = str(eio_packet.MESSAGE)

#: Whether the event being handled asked for an ack (None outside an event, or unknown).
ACK_REQUESTED: "contextvars.ContextVar[Optional[bool]]" = contextvars.ContextVar(
    "prroom_ack_requested", default=None)
#: Set by :func:`answer_later` during a handler: who will produce the ack, and when.
ANSWER_LATER: "contextvars.ContextVar[Any]" = contextvars.ContextVar("prroom_answer_later",
                                                                    default=None)
#: Answer senders take the ack's body.
SendAnswer = Callable[[Any], None]


def ack_requested() -> bool:
    """Whether the event being handled asked for an ack.

    False when it cannot be known, so the caller also sends the error event: the client
    then hears about a refusal twice rather than never.
    """
    return bool(ACK_REQUESTED.get())


def answer_later(server: Any, start: Callable[[SendAnswer], None]) -> Any:
    """Have the ack of the event being handled sent later, not from the handler's return.

    Returns what the handler must return for that (python-socketio's ``not_handled``, so
    it sends no ack of its own), and once the handler returned ``start(send)`` is called:
    ``send(body)`` sends the ack, from any task.  Returns None when that cannot be done
    (no ack asked for, or the event entry point is not wrapped): the handler answers now.
    """
    not_handled = getattr(server, "not_handled", None)
    if not_handled is None or not ACK_REQUESTED.get():
        return None
    ANSWER_LATER.set(start)
    return not_handled


def start_answer(start: Callable[[SendAnswer], None], server: Any, eio_sid: str,
                  namespace: str, ack_id: int) -> None:
    """Call ``start(send)``: the handler asked for its ack to be answered later."""
    # What the handler already sent this connection (its own copy of a broadcast) waits
    # for the ack, so that both leave in one write.  Its writer is looked up as
    # packet_writes.write_ack does, inline: this runs for every clustered message.
    writer: Any = None
    if namespace == "/" and server.packet_class is packet_codec.Packet and \
            getattr(getattr(server, "_send_packet", None), "_prroom_wrapped", False):
        writer = packet_writes.direct_writer(server.eio.sockets, eio_sid)
    sender: Any
    if isinstance(writer, websocket_writes.DirectWriter):
        sender = _HeldAck(server, eio_sid, ack_id, writer)
    else:
        sender = _AckSender(server, eio_sid, namespace, ack_id,
                            websocket_writes.hold_writes(server, eio_sid))
    try:
        start(sender.send)
    except BaseException:
        sender.release()
        raise


class _AckSender:
    """Sends one event's ack later, then lets the connection's held writes go (an object,
    not a closure: one is alive per message waiting for its answer)."""

    __slots__ = ("server", "eio_sid", "namespace", "ack_id", "_release")

    def __init__(self, server: Any, eio_sid: str, namespace: str, ack_id: int,
                 release: Optional[Callable[[], None]]) -> None:
        self.server = server
        self.eio_sid = eio_sid
        self.namespace = namespace
        self.ack_id = ack_id
        self._release = release

    def send(self, body: Any) -> None:
        """Send the ack with ``body``."""
        try:
            send_ack(self.server, self.eio_sid, self.namespace, self.ack_id, body)
        finally:
            self.release()

    def release(self) -> None:
        """Let the held writes go (once)."""
        release, self._release = self._release, None
        if release is not None:
            release()


class _HeldAck:
    """An ack on ``/`` sent later to a connection whose direct writer takes acks: the writer
    held until then, and the ack written to it straight (:class:`_AckSender` otherwise)."""

    __slots__ = ("server", "eio_sid", "ack_id", "_writer")

    def __init__(self, server: Any, eio_sid: str, ack_id: int,
                 writer: "websocket_writes.DirectWriter") -> None:
        self.server, self.eio_sid, self.ack_id = server, eio_sid, ack_id
        self._writer: Optional[websocket_writes.DirectWriter] = writer
        writer.hold()

    def send(self, body: Any) -> None:
        """Send the ack with ``body``."""
        # the frame packet_writes.write_ack writes, and release(), inline: this runs for
        # every clustered message
        writer, self._writer = self._writer, None
        try:
            text = packet_codec.plain_text(sio_packet.ACK, [body], self.ack_id)
            if writer is None or text is None:  # released already; or binary
                send_ack(self.server, self.eio_sid, "/", self.ack_id, body)
            else:
                writer.put_frame(framing.websocket_frame(_MESSAGE + text))
        finally:
            if writer is not None:
                writer.release()

    def release(self) -> None:
        """Let the held writes go (once)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()


def send_ack(server: Any, eio_sid: str, namespace: str, ack_id: int, body: Any) -> None:
    """Send the ACK packet for event ``ack_id`` with ``body``, as python-socketio does
    (its frame written straight to the connection where it can be)."""
    if namespace == "/" and packet_writes.write_ack(server, eio_sid, ack_id, [body]):
        return
    server._send_packet(eio_sid, server.packet_class(sio_packet.ACK, namespace=namespace,
                                                     id=ack_id, data=[body]))
