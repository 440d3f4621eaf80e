"""The plain stack, for comparison: what a user writes in 40 lines with Flask-SocketIO.

The same events as ``../shared/peer/server.js`` and prroom (join, leave, send with an ack,
typing), with no validation, identity, limits or presence, served the usual way:

    gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 1 bench.plain_app:app

``bench/run.py --plain`` measures it beside prroom (and the peer with ``--peer``): the
starting point prroom's performance work is judged from.  Not part of the product.
"""
import os

from flask import Flask
from flask_socketio import SocketIO, emit, join_room, leave_room, rooms

app = Flask(__name__)
_ping_ms = os.environ.get("BENCH_PING_INTERVAL_MS")
socketio = SocketIO(app, cors_allowed_origins="*",
                    **({"ping_interval": int(_ping_ms) / 1000,
                        "ping_timeout": int(os.environ["BENCH_PING_TIMEOUT_MS"]) / 1000}
                       if _ping_ms else {}))


def _room(payload):
    return f"pr:{int(payload['pullRequestId'])}"


@app.route("/healthz")
def healthz():
    return "ok\n"


@socketio.on("join-pr-room")
def join(payload):
    join_room(_room(payload))
    return {"ok": True, "room": _room(payload)}


@socketio.on("leave-pr-room")
def leave(payload):
    leave_room(_room(payload))
    return {"ok": True, "room": _room(payload)}


@socketio.on("send-message-to-pr-room")
def send(payload):
    if _room(payload) not in rooms():
        return {"ok": False, "error": "not a member"}
    emit("pr-room-message", {"username": payload["username"], "message": payload["message"]},
         to=_room(payload))
    return {"ok": True}


@socketio.on("typing")
def typing(payload):
    emit("typing", {"username": payload["username"]}, to=_room(payload), include_self=False)
