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
CONNECT reply before anything a connect handler emits (:func:`fix_connects`), ``{"message":
"Invalid namespace"}`` for an unknown namespace, a connect timeout, a bound on binary
attachments (:func:`guard_packets`).  Everything else it reserves, it reserves on its own
namespace only, and only for the events it handles itself.

It also reads python-engineio's per-socket send queues to find clients too slow to read
(:func:`overfull_sockets`), which no public API exposes.
"""
from __future__ import annotations

import contextvars
import logging
import time
from typing import Any, Callable, Collection, Dict, Iterable, List, Optional, Tuple

from socketio import packet as _sio_packet

from prroom.internals import loop_monitor, websocket_writes

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

_ack_requested: contextvars.ContextVar = contextvars.ContextVar("prroom_ack_requested",
                                                               default=None)
#: Set by :func:`answer_later` during a handler: who will produce the ack, and when.
_answer_later: contextvars.ContextVar = contextvars.ContextVar("prroom_answer_later",
                                                              default=None)
#: Answer senders take the ack's body.
SendAnswer = Callable[[Any], None]


def track_ack_requests(server: Any, namespace: str = "/") -> bool:
    """Make :func:`ack_requested` work for events of ``server``; False if unsupported.

    On ``namespace`` (prroom's) it also renames reserved and non-string event names, so they
    reach prroom's catch-all as the unknown events they are; other namespaces are the host's
    and keep python-socketio's behaviour.
    """
    original = getattr(server, "_handle_event_internal", None)
    if original is None:
        logger.warning("python-socketio has no _handle_event_internal; prroom errors will be "
                       "sent both as ack and as pr-room-error")
        return False
    if getattr(original, "_prroom_wrapped", False):
        return True

    def handle_event_internal(server_: Any, sid: str, eio_sid: str, data: list,
                              namespace_: str, id: Optional[int]) -> Any:
        name = data[0] if data else None
        if namespace_ == namespace:
            if not isinstance(name, str) or name in RESERVED_EVENT_NAMES:
                data = [f"(reserved) {str(name)[:50]}", *data[1:]]
        # named in the blocked-loop warning if this event holds the loop (host events too)
        label = loop_monitor.serving(f"event {str(name)[:50]}")
        token = _ack_requested.set(id is not None)
        later = _answer_later.set(None)
        try:
            result = original(server_, sid, eio_sid, data, namespace_, id)
            start = _answer_later.get()
            if start is not None and id is not None:
                _start_answer(start, server_, eio_sid, namespace_, id)
            return result
        finally:
            _answer_later.reset(later)
            _ack_requested.reset(token)
            loop_monitor.served(label)

    vars(handle_event_internal)["_prroom_wrapped"] = True
    server._handle_event_internal = handle_event_internal
    return True


def ack_requested() -> bool:
    """Whether the event being handled asked for an ack.

    False when it cannot be known, so the caller also sends the error event: the client
    then hears about a refusal twice rather than never.
    """
    return bool(_ack_requested.get())


def answer_later(server: Any, start: Callable[[SendAnswer], None]) -> Any:
    """Have the ack of the event being handled sent later, not from the handler's return.

    Returns what the handler must return for that (python-socketio's ``not_handled``, so
    it sends no ack of its own), and once the handler returned ``start(send)`` is called:
    ``send(body)`` sends the ack, from any task.  Returns None when that cannot be done
    (no ack asked for, or the event entry point is not wrapped): the handler answers now.
    """
    not_handled = getattr(server, "not_handled", None)
    if not_handled is None or not _ack_requested.get():
        return None
    _answer_later.set(start)
    return not_handled


def _start_answer(start: Callable[[SendAnswer], None], server: Any, eio_sid: str,
                  namespace: str, ack_id: int) -> None:
    # What the handler already sent this connection (its own copy of a broadcast) waits
    # for the ack, so that both leave in one write.
    release = websocket_writes.hold_writes(server, eio_sid)

    def send(body: Any) -> None:
        try:
            send_ack(server, eio_sid, namespace, ack_id, body)
        finally:
            if release is not None:
                release()
    try:
        start(send)
    except BaseException:
        if release is not None:
            release()
        raise


def send_ack(server: Any, eio_sid: str, namespace: str, ack_id: int, body: Any) -> None:
    """Send the ACK packet for event ``ack_id`` with ``body``, as python-socketio does."""
    server._send_packet(eio_sid, server.packet_class(_sio_packet.ACK, namespace=namespace,
                                                     id=ack_id, data=[body]))


def answer_unread() -> bool:
    """Whether the event being handled asked for no ack (so nobody reads its answer).

    False outside a client event (HTTP posts, background tasks) and when unknown.
    """
    return _ack_requested.get() is False


def overfull_sockets(server: Any, limit: int) -> List[str]:
    """Engine.IO session ids whose outgoing queue holds more than ``limit`` packets."""
    sockets = getattr(server.eio, "sockets", {})
    try:
        # Walked in place: a copy of every (sid, socket) pair each second was the largest
        # cost of an idle server (the collector ran over the whole heap for those tuples).
        return _overfull(sockets.items(), limit)
    except RuntimeError:  # changed size: another OS thread (threading mode) connected
        return _overfull(list(sockets.items()), limit)


def _overfull(items: Iterable[Tuple[str, Any]], limit: int) -> List[str]:
    found = []
    for eio_sid, sock in items:  # nothing here switches greenlets
        queue = getattr(sock, "queue", None)
        if queue is not None and queue.qsize() > limit:
            found.append(eio_sid)
    return found


def connected_eio_sids(server: Any) -> List[str]:
    """Engine.IO session ids of every connection of this process."""
    return list(getattr(server.eio, "sockets", {}))


def close_transport(server: Any, eio_sid: str) -> None:
    """Close one connection's transport, as a lost connection, without waiting on it.

    Packets already queued still go out first (the writer stops at the end of the queue),
    but no Engine.IO CLOSE packet is added: after a CLOSE (or a Socket.IO DISCONNECT),
    socket.io-client and python-socketio do not reconnect; after a dropped transport they do.
    """
    sock = server.eio.sockets.get(eio_sid)
    if sock is None:
        return
    try:
        sock.close(wait=False, abort=True)
    except TypeError:  # python-engineio without the abort flag
        sock.close(wait=False)


def refuse_new_connections(server: Any) -> None:
    """From now on, answer new Engine.IO handshakes 401, at the transport level.

    A refusal there is a failed transport, which every client retries with backoff
    (another instance, behind a load balancer); a refused Socket.IO CONNECT would instead
    make socket.io-client give up for good.
    """
    original = server.eio.handlers.get("connect")

    def refuse(*args: Any) -> bool:
        return False

    if original is not None:
        server.eio.handlers["connect"] = refuse


class BinaryPayload:
    """What a prroom handler receives instead of a payload that carried binary attachments."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<binary payload>"


#: The one :class:`BinaryPayload`: prroom's handlers test ``payload is BINARY_PAYLOAD``.
BINARY_PAYLOAD = BinaryPayload()

# python-socketio's packet types (socketio.packet), as the wire spells them.
_CONNECT, _CONNECT_ERROR, _BINARY_EVENT = 0, 4, 5


def _handled_by(server: Any, namespace: str, event: Any, handlers: Collection) -> bool:
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


def _class_method(server: Any, namespace: str, event: str) -> Optional[Callable]:
    """The host's class-based namespace handler's ``on_<event>``, if it has one."""
    handler = getattr(server, "namespace_handlers", {}).get(namespace)
    if handler is None or not isinstance(event, str):
        return None
    return getattr(handler, "on_" + event, None)


def host_class_handler(server: Any, namespace: str, event: str) -> Callable[..., Any]:
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


def host_class_first(server: Any, namespace: str, catch_all: Callable[..., Any]
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

    def refusing_reconstruct(data: list, attachments: list) -> list:
        reconstruct(data, attachments)
        return [data[0], BINARY_PAYLOAD]

    pkt.reconstruct_binary = refusing_reconstruct


def guard_packets(server: Any, on_violation: Callable[[str, str], None], namespace: str = "/",
                  handlers: Collection = (), max_attachments: int = DEFAULT_MAX_ATTACHMENTS
                  ) -> None:
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
    """
    eio = getattr(server, "eio", None)
    original = eio.handlers.get("message") if eio is not None else None
    if original is None or getattr(original, "_prroom_wrapped", False):
        return
    pending = server._binary_packet  # eio_sid -> the binary packet awaiting attachments
    handlers = frozenset(handlers)

    handled = [0]

    def message(eio_sid: str, data: Any) -> Any:
        # A connection whose socket always has data never makes its reader wait, so under
        # gevent it would never let the others run: yield every 16 incoming packets.
        handled[0] += 1
        if not handled[0] & 15:
            server.sleep(0)
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

    vars(message)["_prroom_wrapped"] = True
    server.eio.handlers["message"] = message


def fix_connects(server: Any, connect_timeout: Optional[float] = None,
                 reply_extra: Optional[Callable[[str, str], Optional[dict]]] = None) -> bool:
    """Socket.IO CONNECT handling as the protocol has it; False if python-socketio differs.

    * The CONNECT (or CONNECT_ERROR) reply goes out before anything the connect handlers
      emitted to the connecting client: python-socketio sends it after they return, so
      socket.io-client fired those events before its own ``connect``.  While the handlers
      run, the Engine.IO socket's packets are held, then sent reply first.
    * An unknown namespace is refused with ``{"message": "Invalid namespace"}``, not the
      bare string ``"Unable to connect"`` (socket.io-client reads ``err.message``).
    * With ``connect_timeout``, an Engine.IO session that has not connected to any
      namespace within that many seconds is closed (Node's ``connectTimeout``):
      authentication happens at CONNECT, so unauthenticated sessions must not be held.  One
      background sweep for all sessions, oldest first, instead of a timer per session.
    * With ``reply_extra(namespace, sid)``, the fields it returns are added to a successful
      CONNECT reply's ``{"sid": ...}`` (connection state recovery's ``pid``): python-socketio
      builds that reply itself, with the sid only.
    """
    original = getattr(server, "_handle_connect", None)
    eio = getattr(server, "eio", None)
    if original is None or eio is None or not hasattr(server, "namespace_handlers"):
        return False
    if getattr(original, "_prroom_wrapped", False):
        return True
    waiting: Dict[str, float] = {}  # eio_sid -> when it opened, oldest first

    def handle_connect(eio_sid: str, namespace: Optional[str], data: Any) -> Any:
        namespace = namespace or "/"
        if not _namespace_exists(server, namespace):
            server._send_packet(eio_sid, server.packet_class(
                _CONNECT_ERROR, data={"message": "Invalid namespace"}, namespace=namespace))
            return None
        sock = eio.sockets.get(eio_sid)
        if sock is None:  # not a real Engine.IO session (Flask-SocketIO's test client)
            return original(eio_sid, namespace, data)
        held: List[Any] = []
        sock.send = held.append  # shadows Socket.send for the handlers' duration
        try:
            return original(eio_sid, namespace, data)
        finally:
            del sock.send
            if reply_extra is not None:
                _extend_reply(server, held, namespace, eio_sid, reply_extra)
            _send_reply_first(sock, held)
            if waiting and server.manager.sid_from_eio_sid(eio_sid, namespace) is not None:
                waiting.pop(eio_sid, None)

    vars(handle_connect)["_prroom_wrapped"] = True
    server._handle_connect = handle_connect
    if connect_timeout:
        _start_connect_timeout(server, waiting, connect_timeout)
    return True


def _namespace_exists(server: Any, namespace: str) -> bool:
    # python-socketio's own rule (Server._handle_connect), before it calls pre_connect
    return (namespace in server.handlers or namespace in server.namespace_handlers
            or server.namespaces == "*" or namespace in server.namespaces)


def _extend_reply(server: Any, held: List[Any], namespace: str, eio_sid: str,
                  reply_extra: Callable[[str, str], Optional[dict]]) -> None:
    """Rebuild the held CONNECT reply with ``reply_extra``'s fields next to its sid."""
    sid = server.manager.sid_from_eio_sid(eio_sid, namespace)
    if sid is None:
        return
    extra = reply_extra(namespace, sid)
    if not extra:
        return
    for pkt in held:
        data = getattr(pkt, "data", None)
        if isinstance(data, str) and data[:1] == "0":
            pkt.data = server.packet_class(_CONNECT, {"sid": sid, **extra},
                                           namespace=namespace).encode()
            return


def _send_reply_first(sock: Any, held: List[Any]) -> None:
    """Send ``held`` Engine.IO packets, the (last) CONNECT / CONNECT_ERROR reply first."""
    if sock.closed:  # a handler closed the connection: nothing can be sent any more
        return
    reply = None
    for index in range(len(held) - 1, -1, -1):
        data = getattr(held[index], "data", None)
        if isinstance(data, str) and data[:1] in ("0", "4"):
            reply = held.pop(index)
            break
    if reply is not None:
        sock.send(reply)
    index = 0
    while index < len(held):  # a thread may still append through a stale reference
        sock.send(held[index])
        index += 1


def _start_connect_timeout(server: Any, waiting: Dict[str, float], timeout: float) -> None:
    eio = server.eio
    connect, disconnect = eio.handlers.get("connect"), eio.handlers.get("disconnect")
    if connect is None or disconnect is None:
        return
    started = [False]
    interval = max(0.05, min(1.0, timeout / 4))

    def on_eio_connect(eio_sid: str, environ: dict, *args: Any) -> Any:
        waiting[eio_sid] = time.monotonic()
        if not started[0]:
            started[0] = True  # here we are surely in the serving process (after a fork)
            server.start_background_task(sweep)
        return connect(eio_sid, environ, *args)

    def on_eio_disconnect(eio_sid: str, *args: Any) -> Any:
        waiting.pop(eio_sid, None)
        return disconnect(eio_sid, *args)

    def sweep() -> None:
        while True:
            server.sleep(interval)
            try:
                closed = _close_expired(eio, waiting, time.monotonic() - timeout)
                if closed:
                    logger.info("closed %d Engine.IO session(s) that sent no Socket.IO CONNECT "
                                "within %s s", closed, timeout)
            except Exception:
                logger.exception("connect-timeout sweep failed; retrying")

    eio.handlers["connect"], eio.handlers["disconnect"] = on_eio_connect, on_eio_disconnect


def _close_expired(eio: Any, waiting: Dict[str, float], opened_before: float) -> int:
    closed = 0
    while waiting:
        eio_sid, opened = next(iter(waiting.items()))
        if opened > opened_before:
            break
        waiting.pop(eio_sid, None)
        sock = eio.sockets.get(eio_sid)
        if sock is not None and not (sock.closed or sock.closing):
            sock.close(wait=False, abort=False)  # a CLOSE packet, then the transport ends
            closed += 1
    return closed


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
        return XorMaskerSimple(self.mask).process(bytes(payload))

    vars(mask_payload)["_prroom_wrapped"] = True
    Header.mask_payload = Header.unmask_payload = mask_payload
    return True


def registered_handlers(server: Any, namespace: str) -> Dict[str, Callable]:
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
