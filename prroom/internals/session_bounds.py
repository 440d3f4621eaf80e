"""Bounds on Engine.IO sessions that no single event handler sees.

* **Sessions per client address** (``PRROOM_MAX_SESSIONS_PER_ADDRESS``): python-engineio
  opens a session for every handshake; one address could open them until memory or file
  descriptors ran out.  The engine.io ``connect`` handler refuses past the cap (the
  handshake is answered ``401`` with ``{"message": ..., "code": "too-many-sessions"}``),
  and ``disconnect`` counts the session out.  The address is the peer's, or, when the peer
  is a trusted proxy (``PRROOM_TRUSTED_PROXIES``), the last ``X-Forwarded-For`` hop that is
  not itself one: the header is otherwise the client's to write.
* **Socket.IO packets other than events** (CONNECT, DISCONNECT, ACK...): the event layer's
  token buckets only see events, so CONNECTs to unknown namespaces were free.  Each
  Engine.IO session gets a bucket of its own at the ``room`` rate (a namespace CONNECT or
  DISCONNECT is a join or a leave): a refused CONNECT is answered with a CONNECT_ERROR
  ``rate-limited`` (with ``retryAfter``), other refused packets are dropped, and, as for
  events, ``PRROOM_RATE_LIMIT_DISCONNECT_AFTER`` refusals close the connection.

Both wrap python-engineio's handlers (``eio.handlers``), as :mod:`connects` does; the
``message`` wrapper keeps :data:`event_path.DIRECT_ATTRIBUTE` so prroom's own events still
take the direct path (which only carries events).
"""
from __future__ import annotations

import ipaddress
import logging
from typing import Any, Dict, Iterable, Optional, Set, Tuple

from prroom.core.limits import SocketLimiter
from prroom.core.protocol import ProtocolError
from prroom.transport import event_path

logger = logging.getLogger("prroom")

#: Socket.IO packet types a client sends that are not events: CONNECT, DISCONNECT, ACK,
#: CONNECT_ERROR (never legitimately), BINARY_ACK.
_CONTROL_TYPES = frozenset("01346")
_CONNECT_ERROR = 4


def networks(addresses: Optional[Iterable[str]]) -> Tuple[Any, ...]:
    """``PRROOM_TRUSTED_PROXIES``' entries (addresses or CIDR networks) as networks."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in addresses or ())


def _trusted(address: str, trusted: Tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(environ: Dict[str, Any], trusted: Tuple[Any, ...]) -> str:
    """The address a session is counted under (see the module's docstring); ``trusted``
    is what :func:`networks` returns."""
    peer = environ.get("REMOTE_ADDR") or "-"
    forwarded: Optional[str] = environ.get("HTTP_X_FORWARDED_FOR")
    if not forwarded or not trusted or not _trusted(peer, trusted):
        return peer
    for hop in reversed(forwarded.split(",")):
        hop = hop.strip()
        if hop and not _trusted(hop, trusted):
            return hop[:64]  # a client's text: kept short
    return peer


def cap_sessions_per_address(server: Any, max_sessions: int, trusted: Tuple[Any, ...]) -> bool:
    """Refuse a handshake past ``max_sessions`` open sessions of its address (0: no cap)."""
    if not max_sessions:
        return True  # no cap asked for: nothing to install, nothing missing
    eio = getattr(server, "eio", None)
    handlers = getattr(eio, "handlers", None)
    if handlers is None:
        return False
    connect, disconnect = handlers.get("connect"), handlers.get("disconnect")
    if connect is None or disconnect is None or getattr(connect, "_prroom_capped", False):
        return False
    open_of: Dict[str, int] = {}   # address -> open sessions
    address_of: Dict[str, str] = {}  # eio_sid -> its address
    warned: Set[str] = set()        # addresses refused since their count last went down

    def on_connect(eio_sid: str, environ: Dict[str, Any], *args: Any) -> Any:
        address = client_address(environ, trusted)
        count = open_of.get(address, 0)
        if count >= max_sessions:
            if address not in warned:
                warned.add(address)
                logger.warning("refusing Engine.IO sessions from addr=%s: %d open "
                               "(PRROOM_MAX_SESSIONS_PER_ADDRESS)%s", address, count,
                               _proxy_hint(environ, trusted))
            return {"message": f"too many sessions from this address (at most "
                               f"{max_sessions})", "code": "too-many-sessions"}
        result = connect(eio_sid, environ, *args)
        if result is None or result is True:  # accepted: count it until its disconnect
            open_of[address] = count + 1
            address_of[eio_sid] = address
        return result

    def on_disconnect(eio_sid: str, *args: Any) -> Any:
        address = address_of.pop(eio_sid, None)
        if address is not None:
            remaining = open_of[address] - 1
            if remaining:
                open_of[address] = remaining
            else:
                del open_of[address]
            warned.discard(address)
        return disconnect(eio_sid, *args)

    vars(on_connect)["_prroom_capped"] = True
    handlers["connect"], handlers["disconnect"] = on_connect, on_disconnect
    return True


def _proxy_hint(environ: Dict[str, Any], trusted: Tuple[Any, ...]) -> str:
    """Why one address may stand for many clients: a proxy that is not trusted."""
    peer = environ.get("REMOTE_ADDR") or "-"
    if environ.get("HTTP_X_FORWARDED_FOR") and not _trusted(peer, trusted):
        return (f"; {peer} sends X-Forwarded-For but is not in PRROOM_TRUSTED_PROXIES: if it "
                "is your proxy, every client behind it counts as this one address")
    return ""


def limit_control_packets(server: Any, limiter: SocketLimiter) -> bool:
    """Charge every non-event Socket.IO packet to its Engine.IO session's ``control``
    bucket in ``limiter`` (see the module's docstring)."""
    handlers = getattr(getattr(server, "eio", None), "handlers", None)
    if handlers is None:
        return False
    message, disconnect = handlers.get("message"), handlers.get("disconnect")
    if message is None or disconnect is None or getattr(message, "_prroom_control", False):
        return False

    def on_message(eio_sid: str, data: Any) -> Any:
        if type(data) is str and data[:1] in _CONTROL_TYPES:
            try:
                limiter.charge(eio_sid, "control")
            except ProtocolError as err:
                return _refused(eio_sid, data, err)
        return message(eio_sid, data)

    def _refused(eio_sid: str, data: str, err: ProtocolError) -> None:
        strikes = limiter.strikes(eio_sid)
        if strikes == 1:
            logger.info("rate-limited Socket.IO control packets from eio_sid=%s", eio_sid)
        if strikes == limiter.disconnect_after:
            logger.warning("closing eio_sid=%s: %d rate-limited Socket.IO control packets",
                           eio_sid, strikes)
            from prroom.internals.socketio_hooks import close_transport
            close_transport(server, eio_sid)
            return
        if data[:1] == "0":  # a CONNECT: the client waits for an answer
            namespace = data[1:].split(",", 1)[0] if data[1:2] == "/" else "/"
            server._send_packet(eio_sid, server.packet_class(
                _CONNECT_ERROR, data={"message": err.message, "data": err.to_dict()},
                namespace=namespace))

    def on_disconnect(eio_sid: str, *args: Any) -> Any:
        limiter.forget(eio_sid)
        return disconnect(eio_sid, *args)

    direct = getattr(message, event_path.DIRECT_ATTRIBUTE, None)
    if direct is not None:  # events keep their direct path
        vars(on_message)[event_path.DIRECT_ATTRIBUTE] = direct
    vars(on_message)["_prroom_control"] = True
    vars(on_message)["_prroom_wrapped"] = True
    handlers["message"], handlers["disconnect"] = on_message, on_disconnect
    return True

