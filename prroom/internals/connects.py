"""The Socket.IO CONNECT as the protocol has it: prroom's reach into python-socketio's
``Server._handle_connect``.

python-socketio sends the CONNECT reply only after the connect handlers return (so a client
sees what they emit before its own ``connect``), refuses an unknown namespace with a bare
string, never times out a session that does not connect, and builds the reply with the sid
only.  :func:`fix_connects` wraps the one method where all four happen; the tripwires in
``tests/internals/test_connects.py`` fail when the method or what it calls changes.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Optional

logger = logging.getLogger("prroom")

# python-socketio's packet types (socketio.packet), as the wire spells them.
_CONNECT, _CONNECT_ERROR = 0, 4


def fix_connects(server: Any, connect_timeout: Optional[float] = None,
                 reply_extra: Optional[Callable[[str, str], Optional[Dict[str, Any]]]] = None
                 ) -> bool:
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
      background sweep for all sessions, oldest first, instead of a timer per session.  A
      session whose last namespace was disconnected (by its client's DISCONNECT, or by the
      server: an operator, a revoked identity) waits again: a client that ignores the
      server's DISCONNECT, or leaves every namespace, does not keep its connection for
      ever either.
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
                  reply_extra: Callable[[str, str], Optional[Dict[str, Any]]]) -> None:
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

    def on_eio_connect(eio_sid: str, environ: Dict[str, Any], *args: Any) -> Any:
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

    def wait_again_if_unconnected(eio_sid: Optional[str]) -> None:
        sock = eio.sockets.get(eio_sid) if eio_sid is not None else None
        if eio_sid is None or sock is None or sock.closed or sock.closing or eio_sid in waiting:
            return  # gone or going (the transport's own end runs these handlers too)
        manager = server.manager
        if not any(manager.sid_from_eio_sid(eio_sid, namespace) is not None
                   for namespace in list(manager.get_namespaces())):
            waiting[eio_sid] = time.monotonic()

    handle_disconnect, disconnect_sid = server._handle_disconnect, server.disconnect

    def on_namespace_left(eio_sid: str, namespace: Optional[str], *args: Any, **kwargs: Any
                          ) -> Any:
        try:
            return handle_disconnect(eio_sid, namespace, *args, **kwargs)
        finally:
            wait_again_if_unconnected(eio_sid)

    def on_server_disconnect(sid: str, namespace: Optional[str] = None, *args: Any,
                             **kwargs: Any) -> Any:
        eio_sid = server.manager.eio_sid_from_sid(sid, namespace or "/")
        try:
            return disconnect_sid(sid, namespace, *args, **kwargs)
        finally:
            wait_again_if_unconnected(eio_sid)

    eio.handlers["connect"], eio.handlers["disconnect"] = on_eio_connect, on_eio_disconnect
    server._handle_disconnect, server.disconnect = on_namespace_left, on_server_disconnect


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
