"""An "existing" Flask app with its own routes and Socket.IO event, that adds prroom.

Served by gunicorn in the tests: ``gunicorn -c gunicorn.conf.py tests.integration.host_app:app``.
"""
from gevent import monkey

monkey.patch_all()

from flask import Flask, jsonify  # noqa: E402
from flask_socketio import SocketIO, emit  # noqa: E402

from prroom import PRRoom  # noqa: E402

socketio = SocketIO()
rooms = PRRoom()


@socketio.on("host-ping")
def host_ping(data):
    """The host app's own event, which must keep working beside prroom's."""
    emit("host-pong", {"echo": data})
    return {"pong": data}


def create_app():
    """The host app's factory: its own config and routes, then the extensions."""
    app = Flask(__name__)
    app.config["PRROOM_URL_PREFIX"] = "/chat"
    app.config["PRROOM_MAX_MESSAGE_LENGTH"] = 100

    @app.get("/")
    def index():
        return jsonify(app="host")

    @app.get("/healthz")
    def host_health():  # the host's own /healthz: prroom's lives under /chat
        return jsonify(host="ok")

    socketio.init_app(app, async_mode="gevent")
    rooms.init_app(app, socketio=socketio)
    return app


app = create_app()
