"""Every reach into a library's private parts, declared once.

prroom's protections and its speed come partly from names the libraries do not promise to
keep.  Each reach is a :class:`Seam` here: the library, the names it touches, what it is
for, its kind and what happens without it.  At start :func:`apply` checks a seam's names and
runs its install; what it does when that fails depends on the kind:

* *protection* (without it a bound or a guard is gone): the server refuses to start with one
  line naming the seam, the library and its version, unless ``PRROOM_ACCEPT_MISSING`` names
  the seam (the operator's explicit choice to run without it);
* *speed* and *compatibility* (the library's own path still works): one WARNING naming the
  seam and what fell back.

Nothing here reads a library's private name at import time: a release that drops one gives
a refusal or a warning, never an ImportError.  The statuses are kept per server for
``prroom check-config``, ``/readyz`` and the ``prroom_seam_status`` metric, and the library
internals table of the documentation is :func:`markdown_table`.
"""
from __future__ import annotations

import importlib
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

logger = logging.getLogger("prroom")

PROTECTION, SPEED, COMPATIBILITY = "protection", "speed", "compatibility"
#: What became of a seam at start.
INSTALLED, FELL_BACK, REFUSED, ACCEPTED, OFF = (
    "installed", "fell back", "refused", "missing (accepted)", "off")

#: The newest release of each library the seams were proven against (the test suite and the
#: compatibility matrix's newest cell); a newer one installed gets one warning at start.
PROVEN: Dict[str, str] = {
    "python-socketio": "5.18.1",
    "python-engineio": "4.15.1",
    "flask-socketio": "5.7.0",
    "gevent": "26.9.0",
    "gevent-websocket": "0.10.1",
    "gunicorn": "27.0.1",
    "redis": "8.2.0",
    "prometheus-client": "0.26.0",
}


class SeamRefused(RuntimeError):
    """A protection seam could not install and the operator did not accept running without it."""


@dataclass(frozen=True)
class Seam:
    """One reach into a library's internals.

    ``touches`` are ``module:Attr.chain`` (a module or class attribute) or
    ``module:Class#attr`` (an attribute each instance gets in ``__init__``, checked on the
    live object at start).
    """

    name: str
    library: str
    touches: Tuple[str, ...]
    purpose: str
    kind: str
    fallback: str

    def missing(self, objects: Iterable[Any] = ()) -> List[str]:
        """The touched names the installed library does not have."""
        objects = tuple(objects)
        return [touch for touch in self.touches if not _present(touch, objects)]


def _resolve(path: str) -> Any:
    module_name, _, chain = path.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in chain.split(".") if chain else ():
        value = getattr(value, part)
    return value


def _present(touch: str, objects: Tuple[Any, ...]) -> bool:
    path, _, instance_attr = touch.partition("#")
    try:
        owner = _resolve(path)
    except (ImportError, AttributeError):
        return False
    if not instance_attr:
        return True
    live = [obj for obj in objects if isinstance(owner, type) and isinstance(obj, owner)]
    return all(hasattr(obj, instance_attr) for obj in live)


_SIO, _EIO = "python-socketio", "python-engineio"

#: Every seam, in the order the server installs them.
SEAMS: Tuple[Seam, ...] = (
    Seam("packet-guard", _SIO, (
        "socketio.server:Server#_binary_packet", "socketio.server:Server._handle_event",
        "socketio.server:Server._handle_ack", "socketio.server:Server._handle_event_internal",
        "socketio.packet:Packet.reconstruct_binary"),
        "a malformed packet closes its connection with one log line; binary attachments "
        "bounded by PRROOM_MAX_ATTACHMENTS; a flooding reader yields to the others",
        PROTECTION, "none: the server refuses to start"),
    Seam("connect-handling", _SIO, (
        "socketio.server:Server._handle_connect", "socketio.server:Server._send_packet",
        "socketio.server:Server._handle_disconnect", "socketio.server:Server.disconnect",
        "socketio.base_manager:BaseManager.get_namespaces",
        "socketio.server:Server#namespace_handlers", "engineio.socket:Socket.send"),
        "PRROOM_CONNECT_TIMEOUT (also once a session has left its last namespace); the "
        "CONNECT reply before what connect handlers emit; "
        "Node's refusal of an unknown namespace; recovery's pid in the reply",
        PROTECTION, "none: the server refuses to start"),
    Seam("slow-consumer-drop", _EIO, (
        "engineio.server:Server#sockets", "engineio.socket:Socket.close"),
        "connections that do not read what they are sent (PRROOM_MAX_QUEUED_PACKETS) are "
        "dropped; shutdown finds every connection; a connection whose session a new one "
        "took over (recovery) is closed",
        PROTECTION, "none: the server refuses to start"),
    Seam("host-server", _SIO, (
        "socketio.server:Server#manager_initialized", "socketio.server:Server#async_handlers",
        "socketio.base_manager:BaseManager.initialize",
        "engineio.server:Server#max_http_buffer_size",
        "engineio.server:Server#ping_interval_grace_period",
        "engineio.server:Server#cors_credentials"),
        "a Socket.IO server the host app built gets prroom's client manager (clustered "
        "mode), frame limit, inline handlers and ping times where the host left defaults",
        PROTECTION, "none: the server refuses to start"),
    Seam("session-bounds", _EIO, (
        "socketio.server:Server._send_packet", "socketio.server:Server#packet_class"),
        "PRROOM_MAX_SESSIONS_PER_ADDRESS; Socket.IO packets that are not events (CONNECT, "
        "DISCONNECT, ACK) rate-limited per session",
        PROTECTION, "none: the server refuses to start"),
    Seam("frame-size-bound", "gevent-websocket", (
        "geventwebsocket.websocket:Header.decode_header",
        "geventwebsocket.websocket:WebSocket.read_message",
        "geventwebsocket.websocket:WebSocket.receive"),
        "a WebSocket frame (or fragmented message) over PRROOM_MAX_FRAME_BYTES is refused at "
        "its header with close 1009, before its payload is read",
        PROTECTION, "none: the server refuses to start"),
    Seam("ack-tracking", _SIO, (
        "socketio.server:Server._handle_event_internal", "socketio.server:Server#not_handled"),
        "a refusal goes in the ack when one was asked for, else as pr-room-error; reserved "
        "event names reach the catch-all; clustered acks answered from the publish's reply",
        COMPATIBILITY, "refusals are sent both as ack and as pr-room-error"),
    Seam("engineio-conformance", _EIO, (
        "engineio.socket:Socket.handle_get_request", "engineio.socket:Socket.handle_post_request",
        "engineio.socket:Socket.close", "engineio.server:Server.handle_request"),
        "handshake and long-polling answers as Node's engine.io gives them; the exact "
        "pingInterval in the handshake",
        COMPATIBILITY, "python-engineio's own answers"),
    Seam("packet-codec", _SIO, (
        "socketio.packet:Packet.json", "socketio.packet:Packet.data_is_binary",
        "socketio.server:Server#packet_class", "engineio.json:_safe_int"),
        "Socket.IO packets decoded and encoded with one kept JSON codec",
        SPEED, "python-socketio's own codec"),
    Seam("frame-unmasking", "gevent-websocket", (
        "geventwebsocket.websocket:Header.mask_payload", "wsaccel.xormask:XorMaskerSimple"),
        "client frames unmasked in C instead of a Python loop",
        SPEED, "frames unmasked in Python"),
    Seam("direct-writes", _EIO, (
        "engineio.socket:Socket._websocket_handler", "engineio.server:Server.create_queue",
        "engineio.server:Server.start_background_task"),
        "packets written straight to the WebSocket, corked per loop turn, without a writer "
        "greenlet per connection",
        SPEED, "engine.io's writer greenlet per connection"),
    Seam("ack-writes", _SIO, (
        "socketio.server:Server._send_packet", "engineio.server:Server#sockets"),
        "an event's ack goes straight to its connection's direct writer, not through "
        "python-engineio's send, socket lookup, ping check and log call",
        SPEED, "acks take python-engineio's send path"),
    Seam("ping-wheel", _EIO, (
        "engineio.socket:Socket._send_ping", "engineio.socket:Socket.schedule_ping",
        "engineio.server:Server._service_task", "engineio.server:Server#start_service_task",
        "engineio.socket:Socket.check_ping_timeout"),
        "every connection's pings from one timer wheel, ping timeouts from one sweep",
        SPEED, "engine.io's ping task per ping and its service task"),
    Seam("event-path", _EIO, (
        "engineio.async_drivers.gevent:WebSocketWSGI.wait",
        "engineio.socket:Socket._websocket_handler",
        "socketio.server:Server._handle_event_internal",
        "geventwebsocket.websocket:MSG_CLOSED"),
        "a plain event for a prroom handler goes from the frame to the handler without "
        "two packet objects and two dispatch layers",
        SPEED, "every frame takes the library's path"),
    Seam("idle-watchers", "gevent", (
        "gevent._socket3:socket._read_event", "gevent.pywsgi:WSGIHandler.handle",
        "geventwebsocket.handler:WebSocketHandler.run_websocket",
        "engineio.socket:Socket._websocket_handler", "engineio.socket:Socket.receive"),
        "a silent WebSocket connection is held by its socket's event-loop watcher, not by "
        "a parked greenlet with its stacks; a few shared greenlets read when input arrives",
        SPEED, "a parked greenlet per connection"),
    Seam("native-metric-locks", "prometheus-client", (
        "prometheus_client.values:Lock", "prometheus_client.values:MutexValue"),
        "metric values take the OS's lock (in C) instead of gevent's patched one",
        SPEED, "gevent's lock"),
    Seam("batched-metrics", "prometheus-client", (
        "prometheus_client.metrics:Histogram#_sum", "prometheus_client.metrics:Histogram#_buckets"),
        "event counts and handling times are added to the metrics when they are scraped, "
        "a histogram's many observations at once (its sum and bucket values)",
        SPEED, "each event updates its counters and histogram as it is handled"),
    Seam("loop-monitor-stacks", "CPython", ("sys:_current_frames",),
        "the blocked-loop warning shows the stack of the code holding the event loop, "
        "read from the watchdog's thread",
        COMPATIBILITY, "blocked-loop warnings without a stack"),
    Seam("cluster-managers", _SIO, (
        "socketio.base_manager:BaseManager.basic_enter_room",
        "socketio.base_manager:BaseManager.basic_leave_room",
        "socketio.base_manager:BaseManager.basic_disconnect",
        "socketio.base_manager:BaseManager.get_participants",
        "socketio.pubsub_manager:PubSubManager._handle_emit",
        "socketio.pubsub_manager:PubSubManager._thread",
        "socketio.redis_manager:RedisManager._publish",
        "socketio.server:Server._send_eio_packet"),
        "O(rooms of a socket) membership; clustered broadcasts encoded once and published "
        "on per-room channels; cluster-wide commands (disconnect an identity)",
        PROTECTION, "none: the server refuses to start"),
    Seam("redis-raw-reads", "redis", ("redis.connection:Connection#_sock",),
        "the cluster's publisher and subscriber read Redis's replies straight from their "
        "connection's socket, many per read, instead of one redis-py read_response each",
        SPEED, "one redis-py read_response per reply"),
    Seam("refused-body-unread", "gevent", (
        "gevent.pywsgi:Input._discard", "gevent.pywsgi:Input.position",
        "gevent.pywsgi:Input.content_length", "gevent.pywsgi:Input.chunked_input"),
        "an HTTP body refused by its headers (411, 413) is not read: the connection closes",
        PROTECTION, "none: the server refuses to start"),
    Seam("websocket-close", "gevent-websocket", (
        "geventwebsocket.websocket:WebSocket.current_app",),
        "gevent-websocket finds a listener for closes on the served application instead of "
        "building a stand-in class at each close (several per connection)",
        SPEED, "a class built at each close of a WebSocket"),
    Seam("gunicorn-worker", "gevent", (
        "gevent.pywsgi:WSGIHandler.handle_one_request", "gevent.pywsgi:WSGIHandler.MessageClass",
        "gevent.pywsgi:WSGIHandler.finalize_headers", "gevent.pywsgi:WSGIHandler._sendall",
        "gevent.pywsgi:Input._discard",
        "gunicorn.workers.ggevent:PyWSGIHandler.log_request", "http.client:_MAXLINE",
        "http.client:_MAXHEADERS"),
        "PRROOM_HEADER_TIMEOUT, PRROOM_BODY_TIMEOUT, PRROOM_MAX_HEADER_BYTES and the "
        "keep-alive timeout; gunicorn's access log for WebSocket sessions, without session "
        "ids; no parsed headers kept per connection; a WebSocket upgrade's 101 reply sent "
        "with the first frame",
        PROTECTION, "none: the worker refuses to boot"),
)

SEAMS_BY_NAME: Dict[str, Seam] = {seam.name: seam for seam in SEAMS}
PROTECTIONS: FrozenSet[str] = frozenset(s.name for s in SEAMS if s.kind == PROTECTION)


@dataclass(frozen=True)
class Outcome:
    """What became of one seam at start."""

    seam: Seam
    status: str
    reason: str = ""


#: server (python-socketio's) -> {seam name: outcome}
_reports: "weakref.WeakKeyDictionary[Any, Dict[str, Outcome]]" = weakref.WeakKeyDictionary()
#: outcomes of seams installed once per process (no server): the worker, metric locks
_process: Dict[str, Outcome] = {}


def library_version(library: str) -> str:
    """The installed release of ``library`` (a distribution name), or ``"?"``."""
    if library == "CPython":
        import platform
        return platform.python_version()
    try:
        from importlib.metadata import version
        return version(library)
    except Exception:  # noqa: BLE001 - not installed, or no metadata: say so, never fail
        return "?"


def apply(name: str, install: Callable[[], Any], *, server: Any = None,
          objects: Iterable[Any] = (), accepted: Iterable[str] = ()) -> Outcome:
    """Check seam ``name``'s names, then ``install()`` it; act on the result by its kind.

    ``install`` returns False (or raises) when it cannot install.  Raises
    :class:`SeamRefused` for a protection that is neither installed nor in ``accepted``.
    """
    seam = SEAMS_BY_NAME[name]
    missing = seam.missing(objects)
    reason = ""
    if missing:
        reason = "missing " + ", ".join(missing)
    else:
        try:
            if install() is False:
                reason = "its install found the library changed"
        except Exception as exc:  # noqa: BLE001 - any failure is this seam's, reported below
            reason = f"its install raised {type(exc).__name__}: {exc}"
    if not reason:
        outcome = Outcome(seam, INSTALLED)
    else:
        where = f"{seam.library} {library_version(seam.library)}"
        if seam.kind == PROTECTION and name not in set(accepted):
            outcome = Outcome(seam, REFUSED, reason)
            _record(server, outcome)
            raise SeamRefused(
                f"prroom: protection {name!r} cannot install on {where} ({reason}); "
                f"pin a release it supports (the documentation's \"Supported versions\"), or set "
                f"PRROOM_ACCEPT_MISSING={name} to run without it")
        status = ACCEPTED if seam.kind == PROTECTION else FELL_BACK
        outcome = Outcome(seam, status, reason)
        logger.warning("prroom seam %s (%s) %s on %s (%s): %s", name, seam.kind, status,
                       where, reason, seam.fallback)
    _record(server, outcome)
    return outcome


def off(name: str, why: str, server: Any = None) -> Outcome:
    """Record seam ``name`` as not used by configuration (a setting, or not under gevent)."""
    outcome = Outcome(SEAMS_BY_NAME[name], OFF, why)
    _record(server, outcome)
    return outcome


def _record(server: Any, outcome: Outcome) -> None:
    if server is None:
        _process[outcome.seam.name] = outcome
    else:
        _reports.setdefault(server, {})[outcome.seam.name] = outcome


def report(server: Any = None) -> List[Outcome]:
    """Every seam's outcome for ``server`` (and the process-wide ones), in declaration order."""
    known = {**_process, **(_reports.get(server, {}) if server is not None else {})}
    return [known.get(seam.name, Outcome(seam, OFF, "not installed in this process"))
            for seam in SEAMS]


def warn_about_newer_releases() -> List[str]:
    """One WARNING per library installed in a newer release than the seams were proven on."""
    from packaging.version import InvalidVersion, Version

    newer = []
    for library, proven in PROVEN.items():
        installed = library_version(library)
        try:
            if installed != "?" and Version(installed) > Version(proven):
                newer.append(library)
                logger.warning("prroom: %s %s is newer than the release its seams were proven "
                               "on (%s); run `prroom check-config` and the test suite's "
                               "tests/internals", library, installed, proven)
        except InvalidVersion:
            continue
    return newer


def markdown_table() -> str:
    """The library internals table of the documentation, made from the declarations."""
    lines = ["| seam | kind | library (proven on) | touches | what it is for | without it |",
             "|---|---|---|---|---|---|"]
    for seam in SEAMS:
        touches = ", ".join(f"`{touch}`" for touch in seam.touches)
        lines.append(f"| `{seam.name}` | {seam.kind} | {seam.library} "
                     f"({PROVEN.get(seam.library, '?')}) | {touches} | {seam.purpose} | "
                     f"{seam.fallback} |")
    return "\n".join(lines)


def parse_accepted(names: Optional[Iterable[str]]) -> Tuple[str, ...]:
    """``PRROOM_ACCEPT_MISSING``'s names, each a protection seam (ValueError otherwise)."""
    accepted = tuple(names or ())
    unknown = [name for name in accepted if name not in PROTECTIONS]
    if unknown:
        raise ValueError(f"not a protection seam: {', '.join(unknown)} (expected some of "
                         f"{', '.join(sorted(PROTECTIONS))})")
    return accepted
