"""A legacy host app whose views block gevent's event loop, served beside prroom.

``gunicorn -c gunicorn.conf.py tests.integration.blocking_app:app``.  Two ways a real app
freezes every chat of its process: a CPU loop in a view, and a call on a socket gevent never
patched (a C driver's own socket behaves so).  It also keeps a reference to an unpatched
function, as a module imported before monkey-patching would, for the start-up check.
"""
import time

from flask import Flask, jsonify, request
from gevent import monkey

from prroom import PRRoom

# What ``from socket import create_connection`` at import time before patch_all() leaves
# behind: the original, blocking function.
early_create_connection = monkey.get_original("socket", "create_connection")
_BlockingSocket = monkey.get_original("socket", "socket")


def render_huge_diff(milliseconds: int) -> int:
    """CPU work that never yields (syntax-highlighting a giant diff, say)."""
    deadline = time.perf_counter() + milliseconds / 1000
    lines = 0
    while time.perf_counter() < deadline:
        lines += 1
    return lines


def query_with_a_c_driver(milliseconds: int) -> bytes:
    """A blocking read on a socket gevent does not know (as mysqlclient's would be)."""
    listener = _BlockingSocket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = _BlockingSocket()
    try:
        client.connect(listener.getsockname())
        client.settimeout(milliseconds / 1000)
        try:
            return client.recv(1)  # nobody answers: blocks the whole thread until the timeout
        except OSError:
            return b""
    finally:
        client.close()
        listener.close()


app = Flask(__name__)
app.config["PRROOM_METRICS_PATH"] = "/metrics"
PRRoom(app)


@app.get("/reports/diff")
def diff_report():
    """The CPU-bound view."""
    return jsonify(lines=render_huge_diff(int(request.args.get("ms", "500"))))


@app.get("/reports/db")
def db_report():
    """The view stuck in an unpatched socket."""
    return jsonify(rows=len(query_with_a_c_driver(int(request.args.get("ms", "500")))))


@app.extensions["prroom"].socketio.on("render-diff")
def render_diff_event(milliseconds: int) -> dict:
    """The host's own Socket.IO event, as CPU-bound as its view."""
    return {"lines": render_huge_diff(milliseconds)}
