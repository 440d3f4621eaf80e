"""gunicorn settings for prroom: ``gunicorn -c gunicorn.conf.py wsgi:app`` (or ``prroom serve``).

Every value can be changed from the environment (names below); gunicorn's own command-line
flags still override this file, except the worker count, which must stay 1.
"""
import copy
import gc
import logging
import resource
import sys
from typing import Any

from gunicorn.glogging import CONFIG_DEFAULTS

from prroom.core.config import (  # light: no Flask
    ConfigError,
    check_origins,
    from_environ,
    ignored_environ,
    server_settings,
)

try:
    _server = server_settings()
    # the app's PRROOM_* settings too: fail here, before any worker boots
    _app_settings = from_environ()
    check_origins(_app_settings.get("PRROOM_CORS_ALLOWED_ORIGINS"),
                  _app_settings.get("PRROOM_AUTH_MODE", ""))
except ConfigError as _error:
    sys.exit(f"prroom: {_error}")

bind = [_server["bind"] or f"{_server['host']}:{_server['port']}"]

# Socket.IO keeps each client's session in one process, and a port is served by one
# process: more workers would scatter a client's requests.  Scale out with more instances
# and a message queue instead.  WEB_CONCURRENCY (gunicorn's default) is deliberately ignored.
workers = 1
worker_class = "prroom.transport.worker.WebSocketWorker"
# gevent workers default to 1,000 connections and hang connection 1,001; a chat server
# holds many idle sockets.
worker_connections = _server["worker_connections"]
timeout = _server["worker_timeout"]
graceful_timeout = _server["graceful_timeout"]
keepalive = 5

# gunicorn 26+ opens a control socket at one fixed path per user; several instances on a
# host would fight over it.  Off unless a path is given.
if _server["control_socket"]:
    control_socket = _server["control_socket"]
else:
    control_socket_disable = True

loglevel = _server["log_level"]
errorlog = "-"
accesslog = _server["access_log"] or None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'

# gunicorn replaces its whole "loggers" section with ours, so start from its defaults and
# add prroom's logger (connects, joins, refusals, disconnects) to the error log.
logconfig_dict = copy.deepcopy(CONFIG_DEFAULTS)
for _name in ("gunicorn.error", "gunicorn.access"):
    # the defaults also propagate to the root logger's console: every line came out twice
    logconfig_dict["loggers"][_name]["propagate"] = False
logconfig_dict["loggers"]["prroom"] = {
    "level": loglevel.upper(), "handlers": ["error_console"], "propagate": False,
    "qualname": "prroom"}
# python-engineio and python-socketio give their loggers a bare stderr handler of their own
# when no level is set, and the lines also propagated to the root logger's console: each of
# their errors came out twice.  With a level set here (theirs, ERROR, unless prroom's is
# higher) they add nothing, and their lines come out once, formatted like the others.
for _name in ("engineio.server", "socketio.server"):
    logconfig_dict["loggers"][_name] = {
        "level": max(loglevel.upper(), "ERROR", key=logging.getLevelName),
        "handlers": ["error_console"], "propagate": False, "qualname": _name}
# With a logconfig_dict, gunicorn writes the access log through its "gunicorn.access" logger
# whatever `accesslog` says: route that logger to where PRROOM_ACCESS_LOG asks.
if not accesslog:
    logconfig_dict["loggers"]["gunicorn.access"]["handlers"] = []
elif accesslog != "-":
    logconfig_dict["handlers"]["access_file"] = {
        "class": "logging.FileHandler", "formatter": "generic", "filename": accesslog}
    logconfig_dict["loggers"]["gunicorn.access"]["handlers"] = ["access_file"]
# client text (usernames, event names, X-Forwarded-For, origins) escaped and cut in every
# line of the error log, whoever logs it: see prroom.core.logtext
logconfig_dict.setdefault("filters", {})["prroom_client_text"] = {
    "()": "prroom.core.logtext.ClientTextFilter"}
logconfig_dict["handlers"]["error_console"]["filters"] = ["prroom_client_text"]
if _server["log_format"] == "json":
    logconfig_dict["formatters"]["generic"] = {"()": "prroom.server.logformat.JSONFormatter"}


def on_starting(server: Any) -> None:
    """Refuse more than one worker; give the worker enough file descriptors."""
    if server.cfg.workers != 1:
        raise SystemExit(f"prroom: workers must be 1 (got {server.cfg.workers}); run more "
                         "instances on other ports with PRROOM_MESSAGE_QUEUE to scale out")
    for setting, why in ignored_environ().items():
        server.log.warning("%s ignored: %s", setting, why)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = server.cfg.worker_connections + 100
    if soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        if new_soft < wanted:
            server.log.warning("open-file limit %s is below worker_connections=%s",
                               new_soft, server.cfg.worker_connections)


#: Young objects that trigger a collection (Python's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def post_worker_init(worker: Any) -> None:
    """Tune the worker's garbage collector once the app is loaded.

    ``gc.freeze()`` moves what loading created (modules, the app, its libraries: nearly
    everything alive) out of the collector's view, so a full collection no longer walks it.
    A larger young generation lets the objects of a request that waits for Redis (a
    clustered ack waits for its publish batch) die before a collection promotes them;
    profiled, collections were several times more frequent in a clustered process than in
    a standalone one.  Cyclic garbage is still collected, a little later.
    """
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
