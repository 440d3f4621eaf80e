"""WSGI entry point for production: ``gunicorn -c gunicorn.conf.py wsgi:app``.

gevent's monkey-patching must come before anything else is imported, so the standard library
(sockets, threads, locks) cooperates with the gevent-websocket worker.
"""
from gevent import monkey

monkey.patch_all()

from prroom import create_app  # noqa: E402

app = create_app()
