"""A host app as the official Socket.IO protocol suites expect one, with prroom added.

Its own handlers, on ``/`` and on ``/custom``, are those of the suites' reference server:
``auth`` emitted back on connect, ``message`` echoed as ``message-back`` (binary included),
``message-with-ack`` acknowledged with its arguments; ``host-bug`` raises.  Its SocketIO
has sub-second-precision ping settings (``HOST_PING_INTERVAL``, ``HOST_PING_TIMEOUT``,
default 1.5 and 1.0 s) and its own defaults otherwise (async handlers, python-socketio's
manager, 1 MB payloads); ``PRROOM_*`` environment variables go into its config.  Served
by gunicorn in the tests: ``gunicorn -c gunicorn.conf.py tests.integration.guest_app:app``.
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402

from flask import Flask, jsonify  # noqa: E402
from flask_socketio import SocketIO, emit  # noqa: E402

from prroom import PRRoom  # noqa: E402

NAMESPACES = ("/", "/custom")

socketio = SocketIO(ping_interval=float(os.environ.get("HOST_PING_INTERVAL", "1.5")),
                    ping_timeout=float(os.environ.get("HOST_PING_TIMEOUT", "1.0")))
rooms = PRRoom()


def _register(namespace: str) -> None:
    @socketio.on("connect", namespace=namespace)
    def connect(auth=None):
        emit("auth", auth or {})

    @socketio.on("message", namespace=namespace)
    def message(*args):
        emit("message-back", args)

    @socketio.on("message-with-ack", namespace=namespace)
    def message_with_ack(*args):
        return args

    @socketio.on("host-bug", namespace=namespace)
    def host_bug(*args):
        raise RuntimeError("the host's handler failed")


for _namespace in NAMESPACES:
    _register(_namespace)


def create_app() -> Flask:
    """The host's factory: its config, its route, then the extensions."""
    app = Flask(__name__)
    app.config.update({key: value for key, value in os.environ.items()
                       if key.startswith("PRROOM_")})
    app.config["PRROOM_URL_PREFIX"] = "/chat"

    @app.get("/healthz")
    def host_health():
        return jsonify(host="ok")

    socketio.init_app(app, async_mode="gevent")
    rooms.init_app(app, socketio=socketio)
    return app


app = create_app()
