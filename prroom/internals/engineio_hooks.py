"""python-engineio brought to the Engine.IO v4 protocol where clients or attackers notice.

Each fix is a wrapper around one python-engineio entry point, for the servers prroom is
installed on only (:func:`install`); the Engine.IO ``Socket`` methods are wrapped once per
process but change nothing for a server prroom was not installed on.  What each one needs
of python-engineio (names, call shapes, the behaviour it corrects) is checked by
``tests/internals/test_engineio_hooks.py``, which fails loudly when a release changes it.

* A handshake without ``transport`` is refused (400), not taken as long-polling; a method
  other than GET, POST and OPTIONS gets 400, not 405 (Node's engine.io answers 400).
* Long-polling: a POST whose payload cannot be decoded closes that session and is answered
  400 with one log line (python-engineio answered 200, kept the session and logged a
  traceback per request); a GET while another GET of the same session is pending closes
  the session, the pending one answering a CLOSE packet; a GET from a session past its
  ping timeout gets 400; a pending GET whose session is closed gets a CLOSE packet (NOOP
  when the client itself closed), not an empty body, which clients read as a parse error.
* The handshake's ``pingInterval`` is the configured interval in milliseconds:
  python-engineio truncates it to whole seconds first (0.3 s became 0, so clients gave up
  on every connection; 1.5 s became 1000 ms, a margin of 0.5 s taken from the timeout).
"""
from __future__ import annotations

import json
import logging
import re
import urllib.parse
from typing import Any, Callable, Dict, Iterable, Optional

from engineio import exceptions
from engineio import packet as eio_packet
from engineio import socket as eio_socket

logger = logging.getLogger("prroom")

#: Marks an ``engineio.Server`` whose sockets get the fixed long-polling behaviour.
_MARK = "_prroom_conformance"
_METHODS = ("GET", "POST", "OPTIONS")
#: A ``transport`` parameter with a value, as clients write it: parse_qs would find a
#: non-empty value too (a non-empty value never decodes to an empty one), so it need not run.
_PLAIN_TRANSPORT = re.compile(r"(?:^|&)transport=[^&]")


def install(server: Any) -> bool:
    """Apply every fix to ``server``'s Engine.IO server; False if it has no real one."""
    eio = getattr(server, "eio", None)
    if not hasattr(eio, "handle_request") or not hasattr(eio, "ping_interval"):
        return False
    if getattr(eio, _MARK, False):
        return True
    _patch_socket_class()
    setattr(eio, _MARK, True)
    _check_handshakes(eio)
    _announce_exact_ping_interval(eio)
    return True


def announced_ping_interval(eio: Any) -> int:
    """The ``pingInterval`` (ms) python-engineio itself would put in a handshake."""
    return int(eio.ping_interval + eio.ping_interval_grace_period) * 1000


def exact_ping_interval(eio: Any) -> int:
    """The configured ping interval plus grace period, in milliseconds, unrounded."""
    return int(round((eio.ping_interval + eio.ping_interval_grace_period) * 1000))


# -- the handshake --------------------------------------------------------------------------

def _refusal(start_response: Callable[..., Any], code: int, message: str) -> Iterable[bytes]:
    # Node's engine.io body for the same refusals
    start_response("400 BAD REQUEST", [("Content-Type", "application/json")])
    return [json.dumps({"code": code, "message": message}).encode()]


def _check_handshakes(eio: Any) -> None:
    handle_request = eio.handle_request

    def checked_handle_request(environ: Dict[str, Any],
                               start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in _METHODS:
            return _refusal(start_response, 2, "Bad handshake method")
        query = environ.get("QUERY_STRING", "")
        if "transport=" not in query or (_PLAIN_TRANSPORT.search(query) is None and not
                                         urllib.parse.parse_qs(query).get("transport", [""])[0]):
            return _refusal(start_response, 0, "Transport unknown")
        body: Iterable[bytes] = handle_request(environ, start_response)
        return body

    eio.handle_request = checked_handle_request


def _announce_exact_ping_interval(eio: Any) -> None:
    interval = exact_ping_interval(eio)
    connect = eio.handlers.get("connect")
    if interval == announced_ping_interval(eio) or connect is None:
        return

    def on_connect(sid: str, environ: Dict[str, Any], *args: Any) -> Any:
        # The OPEN packet is queued and not sent yet: the connect handler runs in between.
        sock = eio.sockets.get(sid)
        if sock is not None:
            _correct_open_packet(sock, interval)
        return connect(sid, environ, *args)

    eio.handlers["connect"] = on_connect


def _correct_open_packet(sock: Any, interval: int) -> None:
    queue = sock.queue
    try:
        pkt = queue.get_nowait()
    except Exception:  # nothing queued: not python-engineio's handshake order
        return
    queue.task_done()
    if pkt.packet_type == eio_packet.OPEN and isinstance(pkt.data, dict):
        pkt.data["pingInterval"] = interval
    queue.put(pkt)


# -- long-polling -----------------------------------------------------------------------------

def _is_upgrade(environ: Dict[str, Any]) -> bool:
    # python-engineio's own test in Socket.handle_get_request
    connection = [part.strip() for part in environ.get("HTTP_CONNECTION", "").lower().split(",")]
    return "upgrade" in connection and \
        environ.get("HTTP_UPGRADE", "").lower() in eio_socket.Socket.upgrade_protocols


def _patch_socket_class() -> None:
    cls = eio_socket.Socket
    if getattr(cls.handle_get_request, "_prroom_wrapped", False):
        return
    handle_get, handle_post, close = cls.handle_get_request, cls.handle_post_request, cls.close

    def handle_get_request(self: Any, environ: Dict[str, Any],
                           start_response: Callable[..., Any]) -> Any:
        if getattr(self.server, _MARK, False) and _is_upgrade(environ) and self.upgraded:
            # A second upgrade of the same session: python-engineio raises OSError, which
            # older releases (4.13) let out as a traceback per request; a 400 says it all.
            raise exceptions.EngineIOError()
        if not getattr(self.server, _MARK, False) or _is_upgrade(environ):
            return handle_get(self, environ, start_response)
        if not self.check_ping_timeout():  # closed it, with a CLOSE packet for a poller
            raise exceptions.EngineIOError()
        if self.__dict__.get("_prroom_polling"):
            # Two polls at once: the client is broken or not who it claims (Node closes too).
            logger.info("closing eio_sid=%s: a second long-polling GET while one is pending",
                        self.sid)
            self.close(wait=False, abort=False)
            raise exceptions.EngineIOError()
        self._prroom_polling = True
        try:
            packets = handle_get(self, environ, start_response)
        finally:
            self._prroom_polling = False
        if packets == [] and self.closed:
            closed_by_client = self.__dict__.get("_prroom_close_reason") == \
                self.server.reason.CLIENT_DISCONNECT
            return [eio_packet.Packet(eio_packet.NOOP if closed_by_client else eio_packet.CLOSE)]
        return packets

    def handle_post_request(self: Any, environ: Dict[str, Any]) -> Any:
        if not getattr(self.server, _MARK, False):
            return handle_post(self, environ)
        try:
            return handle_post(self, environ)
        except exceptions.EngineIOError:  # a body over the limit (refused by its length)
            # handle_request then disconnects the session, which waits for its queue to
            # drain: nobody polls it any more, so the request (and its connection) hung
            # for good.  Closed here without waiting, that disconnect has nothing to do.
            self.close(wait=False, abort=False)
            raise
        except Exception as exc:  # an undecodable payload: one line, and the session ends
            logger.warning("closing eio_sid=%s: malformed long-polling payload (%s)",
                           self.sid, type(exc).__name__)
            self.close(wait=False, abort=False)
            raise exceptions.EngineIOError() from None

    def close_(self: Any, wait: bool = True, abort: bool = False,
               reason: Optional[str] = None) -> Any:
        if getattr(self.server, _MARK, False) and not (self.closed or self.closing):
            self._prroom_close_reason = reason
        return close(self, wait=wait, abort=abort, reason=reason)

    for name, function in (("handle_get_request", handle_get_request),
                           ("handle_post_request", handle_post_request), ("close", close_)):
        vars(function)["_prroom_wrapped"] = True
        function.__name__ = name
        setattr(cls, name, function)
