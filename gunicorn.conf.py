"""gunicorn settings for prroom: ``gunicorn -c gunicorn.conf.py wsgi:app``.

Every value can be changed from the environment (names below); gunicorn's own command-line
flags still override this file, except the worker count, which must stay 1.
"""
import copy
import os
import resource

from gunicorn.glogging import CONFIG_DEFAULTS

_host = os.environ.get("PRROOM_HOST", "127.0.0.1")
_port = os.environ.get("PRROOM_PORT") or os.environ.get("PORT") or "8000"
bind = [os.environ.get("PRROOM_BIND") or f"{_host}:{_port}"]

# Socket.IO keeps each client's session in one process, and a port is served by one
# process: more workers would scatter a client's requests.  Scale out with more instances
# and a message queue instead.  WEB_CONCURRENCY (gunicorn's default) is deliberately ignored.
workers = 1
worker_class = "prroom.gunicorn_worker.WebSocketWorker"
# gevent workers default to 1,000 connections and hang connection 1,001; a chat server
# holds many idle sockets.
worker_connections = int(os.environ.get("PRROOM_WORKER_CONNECTIONS", "10000"))
timeout = int(os.environ.get("PRROOM_WORKER_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("PRROOM_GRACEFUL_TIMEOUT", "10"))
keepalive = 5

# gunicorn 26+ opens a control socket at one fixed path per user; several instances on a
# host would fight over it.  Off unless a path is given.
_control_socket = os.environ.get("PRROOM_CONTROL_SOCKET")
if _control_socket:
    control_socket = _control_socket
else:
    control_socket_disable = True

loglevel = os.environ.get("PRROOM_LOG_LEVEL", "info")
errorlog = "-"
accesslog = os.environ.get("PRROOM_ACCESS_LOG", "-") or None
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


def on_starting(server):
    """Fail fast on bad settings, refuse more than one worker, raise the open-file limit."""
    from prroom.config import ConfigError, from_environ  # light: no Flask import

    try:
        from_environ()
    except ConfigError as exc:
        raise SystemExit(f"prroom: {exc}") from None
    if server.cfg.workers != 1:
        raise SystemExit(f"prroom: workers must be 1 (got {server.cfg.workers}); run more "
                         "instances on other ports with PRROOM_MESSAGE_QUEUE to scale out")
    if os.environ.get("WEB_CONCURRENCY", "1") != "1":
        server.log.warning("WEB_CONCURRENCY=%s ignored: prroom runs one worker per port",
                           os.environ["WEB_CONCURRENCY"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = server.cfg.worker_connections + 100
    if soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        if new_soft < wanted:
            server.log.warning("open-file limit %s is below worker_connections=%s",
                               new_soft, server.cfg.worker_connections)
