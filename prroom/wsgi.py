"""The production WSGI app: ``gunicorn -c python:prroom.gunicorn_config prroom.wsgi:app``.

gevent's monkey-patching comes before anything else is imported, so the standard library
(sockets, threads, locks) cooperates with the gevent-websocket worker.
"""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from prroom.app import create_app  # noqa: E402
from prroom.core.config import ConfigError  # noqa: E402

try:
    app = create_app()
except ConfigError as error:  # one clear line, not a traceback from inside gunicorn
    sys.exit(f"prroom: {error}")
