"""docs/flask.md's "Inside an existing Flask app", word for word: the host initialises its own
SocketIO, then adds prroom to it.  ``PRROOM_*`` environment variables go into its config.

Served by gunicorn in the tests:
``gunicorn -c gunicorn.conf.py tests.integration.embedded_app:app``.
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402

from flask import Flask  # noqa: E402
from flask_socketio import SocketIO  # noqa: E402

from prroom import PRRoom  # noqa: E402

socketio = SocketIO()
rooms = PRRoom()


def create_app() -> Flask:
    """The host's factory, as the documentation shows it."""
    app = Flask(__name__)
    app.config.update({key: value for key, value in os.environ.items()
                       if key.startswith("PRROOM_")})
    app.config["PRROOM_URL_PREFIX"] = "/chat"
    socketio.init_app(app, async_mode="gevent")
    rooms.init_app(app, socketio=socketio)
    return app


app = create_app()
