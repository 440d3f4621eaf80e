"""prroom's reaches into python-socketio, python-engineio and Flask-SocketIO internals.

prroom answers a refused request through the Socket.IO ack when the client asked for one,
and with a ``pr-room-error`` event otherwise.  python-socketio does not tell a handler whether
an ack was requested, so the server's per-event entry point (``_handle_event_internal``,
present in python-socketio 5.0 through at least 5.18, called on the greenlet/thread that runs
the handler in both sync and async handler modes) is wrapped to record it in a context
variable.  If a future release drops that method, prroom falls back to sending both the ack
and the event, which is safe and only redundant.

prroom is a guest in the host's Socket.IO server: what it changes for everyone is only what
makes python-socketio behave as the protocol (and Node's reference server) says -- the
CONNECT reply before anything a connect handler emits, ``{"message": "Invalid namespace"}``
for an unknown namespace and a connect timeout (all three in :mod:`connects`), a bound on
binary attachments (:func:`guard_packets`).  Everything else it reserves, it reserves on its own
namespace only, and only for the events it handles itself.

What prroom does to one Engine.IO session (find the clients too slow to read, close a
transport as lost, refuse new sessions) is in :mod:`prroom.internals.sockets`, and whether
the event being handled asked for an ack (and answering it later) in
:mod:`prroom.internals.acks`; both are re-exported here.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Collection, Dict, Iterable, List, Optional

from prroom.diagnostics import loop_monitor
from prroom.internals import packet_codec, packet_writes
from prroom.internals.acks import ACK_REQUESTED, ANSWER_LATER, start_answer
from prroom.internals.acks import LaterAnswer as LaterAnswer
from prroom.internals.acks import ack_requested as ack_requested
from prroom.internals.acks import answer_later as answer_later
from prroom.internals.acks import send_ack as send_ack
from prroom.internals.sockets import can_find_slow_consumers as can_find_slow_consumers
from prroom.internals.sockets import close_replaced as close_replaced
from prroom.internals.sockets import close_transport as close_transport
from prroom.internals.sockets import connected_eio_sids as connected_eio_sids
from prroom.internals.sockets import eio_packet_sender as eio_packet_sender
from prroom.internals.sockets import overfull_sockets as overfull_sockets
from prroom.internals.sockets import refuse_new_connections as refuse_new_connections
from prroom.internals.types import SocketIOServer
from prroom.transport import event_path

logger = logging.getLogger("prroom")

#: Event names a client may not send on prroom's namespace: python-socketio dispatches an
#: *event* named ``connect`` or ``disconnect`` to those lifecycle handlers (re-running
#: authentication, or dropping the socket's state while it stays connected), and one named
#: ``*`` straight to the catch-all with its arguments shifted.  ``message`` is an ordinary
#: event (the host's ``send()``), never reserved.
RESERVED_EVENT_NAMES = frozenset({"connect", "disconnect", "*"})

#: Node's socket.io-parser refuses a binary packet announcing more attachments than this
#: (its ``maxAttachments``); python-socketio would wait for (and hold) as many as claimed.
DEFAULT_MAX_ATTACHMENTS = 10

#: ``on_handler_error(eio_sid, event, exception, acked)``: a handler raised; returns the body
#: of the event's ack when ``acked``.
HandlerError = Callable[[str, str, BaseException, bool], Any]


def track_ack_requests(server: Any, namespace: str = "/",
                       on_handler_error: Optional[HandlerError] = None) -> bool:
    """Make :func:`ack_requested` work for events of ``server``; False if unsupported.

    On ``namespace`` (prroom's) it also renames reserved and non-string event names, so they
    reach prroom's catch-all as the unknown events they are; other namespaces are the host's
    and keep python-socketio's behaviour.

    A handler that raises (the host's: prroom's own catch their errors) is the server's
    error, not the client's: with ``on_handler_error`` it goes there, the event gets no ack,
    and nothing reaches the packet guard, which would take it for a malformed packet.
    """
    original = getattr(server, "_handle_event_internal", None)
    if original is None:
        return False
    if getattr(original, "_prroom_wrapped", False):
        return True

    def failed(server_: Any, eio_sid: str, namespace_: str, id: Optional[int], name: Any,
               exc: Exception) -> None:
        # the handler's (or its ack's) error, never the client's
        if on_handler_error is None:
            raise exc
        body = on_handler_error(eio_sid, str(name)[:50], exc, id is not None)
        if id is not None:  # the client waits for an answer: give it the error
            server_._send_packet(eio_sid, server_.packet_class(
                _ACK, namespace=namespace_, data=[body], id=id))

    def handle_event_internal(server_: Any, sid: str, eio_sid: str, data: List[Any],
                              namespace_: str, id: Optional[int]) -> Any:
        name = data[0] if data else None
        if namespace_ == namespace:
            if not isinstance(name, str) or name in RESERVED_EVENT_NAMES:
                data = [f"(reserved) {str(name)[:50]}", *data[1:]]
        # named in the blocked-loop warning if this event holds the loop (host events too)
        loop_monitor.serving("event", name, 50)
        token = ACK_REQUESTED.set(id is not None)
        later = ANSWER_LATER.set(None)
        try:
            try:
                result = original(server_, sid, eio_sid, data, namespace_, id)
            except Exception as exc:
                failed(server_, eio_sid, namespace_, id, name, exc)
                return None
            start = ANSWER_LATER.get()
            if start is not None and id is not None:
                start_answer(start, server_, eio_sid, namespace_, id)
            return result
        finally:
            ANSWER_LATER.reset(later)
            ACK_REQUESTED.reset(token)
            loop_monitor.served()

    def run_own(server_: Any, handler: Callable[..., Any], sid: str, eio_sid: str,
                data: List[Any], id: Optional[int]) -> None:
        # handle_event_internal for one of prroom's own handlers (``handler``, found by the
        # caller): called at once, and its ack written without a packet object
        name = data[0]
        loop_monitor.serving("event", name, 50)
        token = ACK_REQUESTED.set(id is not None)
        later = ANSWER_LATER.set(None)
        try:
            try:
                result = handler(sid, *data[1:])
                if id is not None and result is not server_.not_handled:
                    _ack(server_, eio_sid, id, result)
            except Exception as exc:
                failed(server_, eio_sid, "/", id, name, exc)
                return
            start = ANSWER_LATER.get()
            if start is not None and id is not None:
                start_answer(start, server_, eio_sid, "/", id)
        finally:
            ANSWER_LATER.reset(later)
            ACK_REQUESTED.reset(token)
            loop_monitor.served()

    vars(handle_event_internal)["_prroom_wrapped"] = True
    vars(handle_event_internal)[_RUN_OWN] = run_own
    server._handle_event_internal = handle_event_internal
    return True


#: The attribute of the wrapped event entry point that runs one of prroom's own handlers.
_RUN_OWN = "_prroom_run_own"


def _ack(server: Any, eio_sid: str, id: int, result: Any) -> None:
    """The ack python-socketio's ``_handle_event_internal`` sends for what a handler
    returned (None: no arguments; a tuple: several), its frame written straight to the
    connection where it can be."""
    body = [] if result is None else list(result) if isinstance(result, tuple) else [result]
    if not packet_writes.write_ack(server, eio_sid, id, body):
        server._send_packet(eio_sid, server.packet_class(_ACK, namespace="/", id=id, data=body))


class BinaryPayload:
    """What a prroom handler receives instead of a payload that carried binary attachments."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<binary payload>"


#: The one :class:`BinaryPayload`: prroom's handlers test ``payload is BINARY_PAYLOAD``.
BINARY_PAYLOAD = BinaryPayload()

# python-socketio's packet types (socketio.packet), as the wire spells them.
_ACK, _BINARY_EVENT = 3, 5


def _handled_by(server: SocketIOServer, namespace: str, event: Any,
                handlers: Collection[Any]) -> bool:
    """Whether ``event`` on ``namespace`` would be dispatched to one of ``handlers``."""
    if not isinstance(event, str) or event in RESERVED_EVENT_NAMES:
        return True  # renamed for prroom's catch-all (see track_ack_requests)
    table = server.handlers.get(namespace, {})
    handler = table.get(event)
    if handler is None:
        if _class_method(server, namespace, event) is not None:
            return False  # the catch-all hands it on to the host's class
        handler = table.get("*")
    return handler is not None and handler in handlers


def _class_method(server: SocketIOServer, namespace: str,
                  event: str) -> Optional[Callable[..., Any]]:
    """The host's class-based namespace handler's ``on_<event>``, if it has one."""
    handler = getattr(server, "namespace_handlers", {}).get(namespace)
    if handler is None or not isinstance(event, str):
        return None
    return getattr(handler, "on_" + event, None)


def host_class_handler(server: SocketIOServer, namespace: str, event: str) -> Callable[..., Any]:
    """A handler that runs the host's class-based namespace's ``on_<event>``, if any.

    python-socketio looks in ``server.handlers`` before ``server.namespace_handlers``, so
    prroom's handlers on a namespace would hide a ``Namespace`` class the host registered
    there (``socketio.on_namespace``): its connect, disconnect and events never ran.  prroom
    calls this before its own lifecycle handlers.  The class is looked up at every call, as
    python-socketio does: a host may register it after prroom.  The handler returns None
    when the class has no such method.
    """
    def dispatch(*args: Any) -> Any:
        if _class_method(server, namespace, event) is None:
            return None
        return server.namespace_handlers[namespace].trigger_event(event, *args)
    return dispatch


def host_class_first(server: SocketIOServer, namespace: str, catch_all: Callable[..., Any]
                     ) -> Callable[..., Any]:
    """``catch_all`` (``(event, sid, *args)``), after the host's class-based namespace.

    An event the host's ``Namespace`` class on ``namespace`` has an ``on_<event>`` for goes
    to it, as it would without prroom; any other event to ``catch_all``.
    """
    def dispatch(event: Any, *args: Any) -> Any:
        if _class_method(server, namespace, event) is not None:
            return server.namespace_handlers[namespace].trigger_event(event, *args)
        return catch_all(event, *args)
    return dispatch


def _refuse_binary(pkt: Any) -> None:
    """Have ``pkt`` reconstruct to ``[event, BINARY_PAYLOAD]`` once its attachments are in.

    The real reconstruction still runs first, so a packet whose placeholders point at no
    attachment is as malformed for prroom's events as for the host's.
    """
    reconstruct = pkt.reconstruct_binary

    def refusing_reconstruct(data: List[Any], attachments: List[Any]) -> List[Any]:
        reconstruct(data, attachments)
        return [data[0], BINARY_PAYLOAD]

    pkt.reconstruct_binary = refusing_reconstruct


def guard_packets(server: Any, on_violation: Callable[[str, str], None], namespace: str = "/",
                  handlers: Collection[Any] = (), max_attachments: int = DEFAULT_MAX_ATTACHMENTS
                  ) -> bool:
    """Close connections that send undecodable Socket.IO packets; bound binary packets.

    python-socketio would log a traceback for every malformed packet, keep collecting the
    attachments a binary packet announces (as many as it claims), take a text frame as an
    attachment, and wait forever for a binary packet that announces none.  Here, as in
    Node's socket.io-parser: a packet that cannot be decoded, more than ``max_attachments``
    attachments, or text where an attachment is due closes that connection (logged once,
    through ``on_violation(eio_sid, reason)``); a binary packet with no attachment is
    dispatched at once.  Binary events stay the host's to use; only an event on
    ``namespace`` that would reach one of ``handlers`` (prroom's own) gets
    :data:`BINARY_PAYLOAD` in place of its arguments, for prroom to refuse.

    Returns False when python-socketio's message handler is not there to guard.
    """
    eio = getattr(server, "eio", None)
    original = eio.handlers.get("message") if eio is not None else None
    if original is None:
        return False
    if getattr(original, "_prroom_wrapped", False):
        return True
    pending = server._binary_packet  # eio_sid -> the binary packet awaiting attachments
    handlers = frozenset(handlers)

    handled = [0]

    def take_turn() -> None:
        # A connection whose socket always has data never makes its reader wait, so under
        # gevent it would never let the others run: yield every 16 incoming packets.
        handled[0] += 1
        if not handled[0] & 15:
            server.sleep(0)

    def message(eio_sid: str, data: Any) -> Any:
        take_turn()
        header = isinstance(data, str) and data[:1] in ("5", "6")
        if eio_sid in pending:
            if isinstance(data, str):
                pending.pop(eio_sid, None)
                return on_violation(eio_sid, "text frame where a binary attachment was due")
            header = False
        try:
            result = original(eio_sid, data)
        except Exception as exc:  # a malformed packet: its sender is broken or hostile
            pending.pop(eio_sid, None)
            return on_violation(eio_sid, f"malformed packet ({type(exc).__name__})")
        if header:
            return _check_binary_header(eio_sid)
        return result

    def _check_binary_header(eio_sid: str) -> Any:
        pkt = pending.get(eio_sid)
        if pkt is None:
            return None
        if pkt.attachment_count > max_attachments:
            del pending[eio_sid]
            return on_violation(eio_sid, f"binary packet announcing {pkt.attachment_count} "
                                         f"attachments (at most {max_attachments})")
        is_event = pkt.packet_type == _BINARY_EVENT
        if not isinstance(pkt.data, list) or (is_event and not pkt.data):
            del pending[eio_sid]
            return on_violation(eio_sid, "malformed packet (binary payload is not an array)")
        ns = pkt.namespace or "/"
        if pkt.attachment_count == 0:  # nothing will follow: dispatch it now, as Node does
            del pending[eio_sid]
            if is_event:
                return server._handle_event(eio_sid, ns, pkt.id, pkt.data)
            return server._handle_ack(eio_sid, ns, pkt.id, pkt.data)
        if is_event and ns == namespace and _handled_by(server, ns, pkt.data[0], handlers):
            _refuse_binary(pkt)
        return None

    def direct(eio_sid: str, text: str) -> bool:
        # What python-socketio's _handle_eio_message and _handle_event would do with a
        # plain event for one of prroom's handlers; False leaves it to them.
        if (namespace != "/" or eio_sid in pending or server.async_handlers
                or server.packet_class is not packet_codec.Packet):
            return False
        event = event_path.plain_event(text, packet_codec.Packet.json.loads)
        if event is None:
            return False
        ack_id, data = event
        handler = server.handlers.get("/", {}).get(data[0])
        if handler not in handlers:
            return False
        manager = server.manager
        sid = manager.sid_from_eio_sid(eio_sid, "/")
        if sid is None or not manager.is_connected(sid, "/"):
            return False
        take_turn()
        entry = server._handle_event_internal
        # one of prroom's own events goes straight to its handler (no event lookup, the ack
        # written without a packet object); a reserved name's handler is a lifecycle one,
        # which the entry point renames the event away from
        run_own = getattr(entry, _RUN_OWN, None) if data[0] not in RESERVED_EVENT_NAMES \
            else None
        try:
            if run_own is None:
                entry(server, sid, eio_sid, data, "/", ack_id)
            else:
                run_own(server, handler, sid, eio_sid, data, ack_id)
        except Exception as exc:  # as the library path's guard above
            on_violation(eio_sid, f"malformed packet ({type(exc).__name__})")
        return True

    vars(message)["_prroom_wrapped"] = True
    vars(message)[event_path.DIRECT_ATTRIBUTE] = direct
    server.eio.handlers["message"] = message
    return True



def accelerate_gevent_websocket() -> bool:
    """Unmask incoming WebSocket frames in C (wsaccel) instead of a Python loop.

    gevent-websocket 0.10 XORs every byte of every client frame in pure Python (~600 us per
    8 KB message, a CPU cost any client can multiply) and only uses wsaccel for UTF-8
    validation.  wsaccel (a dependency of prroom) does the same XOR in ~5 us.  Returns True
    once installed; False when either library is missing (nothing changes then).
    """
    try:
        from geventwebsocket.websocket import Header
        from wsaccel.xormask import XorMaskerSimple
    except ImportError:
        return False
    if getattr(Header.mask_payload, "_prroom_wrapped", False):
        return True

    def mask_payload(self: Any, payload: Any) -> bytes:
        unmasked: bytes = XorMaskerSimple(self.mask).process(bytes(payload))
        return unmasked

    vars(mask_payload)["_prroom_wrapped"] = True
    Header.mask_payload = Header.unmask_payload = mask_payload
    return True


def registered_handlers(server: SocketIOServer, namespace: str) -> Dict[str, Callable[..., Any]]:
    """The handlers already registered on ``server`` for ``namespace`` (the host app's).

    python-socketio keeps them in ``server.handlers[namespace]`` and offers no accessor;
    prroom reads them to chain a host's connect/disconnect handlers before its own and to
    leave a host's catch-all alone.
    """
    return dict(server.handlers.get(namespace, {}))


def options_set_by_host(socketio: Any) -> Iterable[str]:
    """Names of the server options a host passed to its ``SocketIO(...)`` itself.

    Flask-SocketIO keeps them in ``server_options`` until ``init_app``; prroom only fills in
    the options a host left unset.
    """
    return tuple(getattr(socketio, "server_options", {}) or {})


def served_engineio_path(socketio: Any) -> Optional[str]:
    """The path Flask-SocketIO's middleware serves Socket.IO at (``/socket.io/``), if known.

    A host's own SocketIO may use another path than ``PRROOM_SOCKETIO_PATH``; the chat page
    must connect to the one actually served, which only the middleware (``sockio_mw``) knows.
    """
    middleware = getattr(socketio, "sockio_mw", None)
    path = getattr(middleware, "engineio_path", None)
    return path or None
