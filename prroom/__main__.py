"""``python -m prroom``: serve prroom with gevent's WSGI server and WebSocket handler.

A convenience for trying it out; production runs ``gunicorn -c gunicorn.conf.py wsgi:app``.
Listens on ``PRROOM_HOST`` (default 127.0.0.1) and ``PRROOM_PORT`` (default 8000).
"""
from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402

from prroom.app import create_app  # noqa: E402
from prroom.core.config import server_settings  # noqa: E402


def main() -> None:
    """Run the server until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = create_app()
    server = server_settings()
    app.extensions["prroom"].socketio.run(app, host=server["host"], port=server["port"])


if __name__ == "__main__":
    main()
