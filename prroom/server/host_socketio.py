"""What prroom needs from a Socket.IO server the host app built, and how it gets it.

A host may hand prroom its own ``SocketIO`` already initialised (``socketio.init_app(app)``
then ``rooms.init_app(app, socketio=socketio)``).  Its server was built from the host's
options and python-socketio's defaults, not prroom's; left as it is, prroom's clustered
messages would never leave the process, any client could send 1 MB frames, and a client's
events would be handled concurrently (out of order).  So, for each server option prroom
relies on:

* the host left it at the library's default: prroom sets its own value;
* the host chose a value that works for prroom (a frame limit, ping times, origins): it is
  kept, and logged once at start, unless the matching ``PRROOM_*`` setting is also set to
  something else, which is refused;
* the host chose something prroom cannot work with (its own client manager or message
  queue, ``async_handlers=True``, credentials for any origin): refused at start, one line
  naming the option and the fix (:class:`ConfigError`).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Collection, List, Mapping

from prroom.cluster.managers import ClusterManager
from prroom.cluster.room_index import IndexedManager
from prroom.core.config import ConfigError, Settings
from prroom.internals import host_server

logger = logging.getLogger("prroom")

#: Engine.IO option -> the prroom setting that decides it when the host did not.
TUNABLES = (
    ("max_http_buffer_size", "PRROOM_MAX_FRAME_BYTES"),
    ("ping_interval", "PRROOM_PING_INTERVAL"),
    ("ping_timeout", "PRROOM_PING_TIMEOUT"),
    ("cors_allowed_origins", "PRROOM_CORS_ALLOWED_ORIGINS"),
)


def manager_fits(manager: Any, settings: Settings) -> bool:
    """Whether ``manager`` is the kind prroom would have built for ``settings``."""
    if settings.message_queue:
        return isinstance(manager, ClusterManager) and \
            getattr(manager, "redis_url", None) == settings.message_queue
    return isinstance(manager, IndexedManager) and not isinstance(manager, ClusterManager)


def adopt(server: Any, host: Mapping[str, Any], wanted: Mapping[str, Any],
          settings: Settings, prroom_set: Collection[str],
          make_manager: Callable[[], Any]) -> List[str]:
    """Give ``server`` what prroom needs, or raise :class:`ConfigError`.

    ``host``: the options the host passed itself; ``wanted``: prroom's own server options
    (as for a server prroom builds); ``prroom_set``: the ``PRROOM_*`` keys the app's config
    sets explicitly.  Returns one note per host choice kept (already logged).
    """
    _adopt_manager(server, host, settings, make_manager)
    if host.get("async_handlers"):
        raise ConfigError("the host's SocketIO sets async_handlers=True: prroom handles each "
                          "client's events in the order sent, inline; remove async_handlers "
                          "from SocketIO(...)/init_app(...)")
    host_server.set_async_handlers(server, False)
    notes = []
    current = host_server.engineio_options(server)
    for option, key in TUNABLES:
        if option not in host:
            host_server.set_engineio_option(server, option, wanted[option])
            continue
        if _same(current[option], wanted[option]):
            continue
        if key in prroom_set:
            raise ConfigError(f"the host's SocketIO sets {option}={current[option]!r} but "
                              f"{key} asks for {wanted[option]!r}: remove one of them")
        note = (f"the host's SocketIO sets {option}={current[option]!r}: kept ({key} is not "
                f"applied)")
        notes.append(note)
        logger.info("%s", note)
    _check_credentials(server, host, settings)
    return notes


def _adopt_manager(server: Any, host: Mapping[str, Any], settings: Settings,
                   make_manager: Callable[[], Any]) -> None:
    if host_server.has_stock_manager(server):
        host_server.replace_manager(server, make_manager())
        return
    if manager_fits(server.manager, settings):
        return
    option = "message_queue" if "message_queue" in host else "client_manager"
    fix = ("set PRROOM_MESSAGE_QUEUE instead" if option == "message_queue" or
           not settings.message_queue else "leave the manager to prroom")
    raise ConfigError(f"the host's SocketIO sets {option} ({type(server.manager).__name__}), "
                      f"which prroom cannot deliver its rooms' messages through: remove "
                      f"{option} from SocketIO(...)/init_app(...) and {fix}")


def _check_credentials(server: Any, host: Mapping[str, Any], settings: Settings) -> None:
    options = host_server.engineio_options(server)
    if options["cors_allowed_origins"] != "*" and options["cors_allowed_origins"] != ["*"]:
        return
    if settings.auth_mode == "custom":  # as PRROOM_CORS_ALLOWED_ORIGINS='*' is (see config)
        raise ConfigError("the host's SocketIO sets cors_allowed_origins='*' with "
                          "PRROOM_AUTH_MODE='custom' (cookie-based): list the origins instead")
    if host.get("cors_credentials"):
        raise ConfigError("the host's SocketIO sets cors_credentials=True with any origin "
                          "('*'): any site could use its visitors' cookies here; list the "
                          "origins, or remove cors_credentials")
    host_server.set_engineio_option(server, "cors_credentials", False)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return bool(a == b)
