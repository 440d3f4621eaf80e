"""What :meth:`PRRoom.init_app <prroom.server.extension.PRRoom.init_app>` does to the
server before the handlers: the async mode, the seams installed first (codec, transport,
cluster managers) and, under gevent, the watch on the event loop.
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Any, Callable, Dict, Tuple

from flask import Flask
from flask_socketio import SocketIO

from prroom.core.config import ConfigError, Settings
from prroom.diagnostics import gevent_traps, loop_monitor
from prroom.internals import (
    packet_codec,
    packet_writes,
    redis_sockets,
    seams,
    socketio_hooks,
    stacks,
)
from prroom.server.state import PRRoomState
from prroom.transport import event_path, idle
from prroom.transport import frames as websocket_frames
from prroom.transport import writes as websocket_writes

logger = logging.getLogger("prroom")


def resolve_async_mode(setting: str) -> str:
    """``auto`` means gevent when gevent has patched the process (gunicorn, wsgi.py,
    ``python -m prroom``) and threading otherwise (``flask run``, plain scripts)."""
    if setting != "auto":
        return setting
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return "threading"
    return "gevent" if monkey.is_module_patched("socket") else "threading"


def watch_the_event_loop(app: Flask, state: PRRoomState) -> None:
    """Under gevent: name the traps present now, and watch for blocks from now on."""
    seams.apply("loop-monitor-stacks", stacks.available, server=state.socketio.server)
    state.traps = gevent_traps.find_traps()
    for trap in state.traps:
        logger.warning("gevent trap: %s", trap)
    app.wsgi_app = label_requests(app.wsgi_app)  # type: ignore[method-assign]
    threshold = state.settings.blocking_threshold / 1000
    if threshold > 0:
        state.loop_monitor = loop_monitor.monitor_of_hub(threshold,
                                                         state.metrics.record_loop_block)
        monitor = state.loop_monitor
        state.metrics.watch_loop(lambda: monitor.last_lag, monitor.worst_recent_lag)


def _installed(server: Any, name: str) -> bool:
    """Whether seam ``name`` was installed for ``server``."""
    return any(outcome.seam.name == name and outcome.status == seams.INSTALLED
               for outcome in seams.report(server))


def label_requests(wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
    """WSGI middleware: label each request's greenlet (``GET /path``) for the loop monitor."""

    def labelled(environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        loop_monitor.serving(environ.get("REQUEST_METHOD", "-"), environ.get("PATH_INFO", "-"))
        try:
            return wsgi_app(environ, start_response)
        finally:
            loop_monitor.served()
    return labelled


def accepted_missing(settings: Settings) -> Tuple[str, ...]:
    """``PRROOM_ACCEPT_MISSING``'s seam names; ConfigError for a name that is no protection."""
    try:
        return seams.parse_accepted(settings.accept_missing)
    except ValueError as err:
        raise ConfigError(f"PRROOM_ACCEPT_MISSING: {err}") from None


def install_speed_seams(socketio: SocketIO, settings: Settings,
                        accepted: Tuple[str, ...]) -> None:
    """The seams installed on the server before prroom's handlers: the codec, the transport's
    fast paths, and the cluster managers' reaches (each with its status for the report)."""
    server = socketio.server
    live = (server, server.eio)

    def seam(name: str, install: Callable[[], Any]) -> seams.Outcome:
        try:
            return seams.apply(name, install, server=server, objects=live, accepted=accepted)
        except seams.SeamRefused as refused:
            raise ConfigError(str(refused)) from None

    seams.warn_about_newer_releases()
    seam("cluster-managers", lambda: True)  # prroom's managers subclass what it names
    if importlib.util.find_spec("redis") is not None:
        seam("redis-raw-reads", redis_sockets.install)
    else:
        seams.off("redis-raw-reads", "redis-py is not installed", server)
    seam("packet-codec", lambda: packet_codec.install(server))
    if socketio.async_mode != "gevent":
        for name in ("refused-body-unread", "frame-size-bound", "frame-unmasking",
                     "direct-writes", "ack-writes", "ping-wheel", "event-path",
                     "idle-watchers"):
            seams.off(name, f"async mode {socketio.async_mode}", server)
        return
    seam("refused-body-unread", lambda: True)  # used per request (prroom.server.api)
    seam("frame-size-bound", lambda: websocket_frames.install(server.eio))  # 1009 at the header
    seam("frame-unmasking", socketio_hooks.accelerate_gevent_websocket)
    if settings.websocket_writes != "direct":
        seams.off("direct-writes", "PRROOM_WEBSOCKET_WRITES=library", server)
        seams.off("ping-wheel", "PRROOM_WEBSOCKET_WRITES=library", server)
        seams.off("ack-writes", "PRROOM_WEBSOCKET_WRITES=library", server)
    else:
        wheel = seam("ping-wheel", lambda: True).status == seams.INSTALLED
        seam("direct-writes", lambda: websocket_writes.install(server, ping_wheel=wheel))
        seam("ack-writes", lambda: packet_writes.install(server))
    if settings.event_path == "direct":
        path = seam("event-path", lambda: event_path.install(server)).status
    else:
        path = seams.off("event-path", "PRROOM_EVENT_PATH=library", server).status
    idle.install(server.eio, False)
    if settings.idle_connections != "loop":
        seams.off("idle-watchers", "PRROOM_IDLE_CONNECTIONS=greenlet", server)
    elif settings.event_path != "direct" or settings.websocket_writes != "direct":
        seams.off("idle-watchers", "needs PRROOM_EVENT_PATH=direct and "
                  "PRROOM_WEBSOCKET_WRITES=direct", server)
    else:  # falls back (one warning) when either path could not be installed
        seam("idle-watchers", lambda: path == seams.INSTALLED
             and _installed(server, "direct-writes") and idle.install(server.eio, True))
