"""WSGI entry point for production: ``gunicorn -c gunicorn.conf.py wsgi:app``.

:mod:`prroom.wsgi` applies gevent's monkey-patching before anything else is imported
(importing the ``prroom`` package itself loads nothing but the standard library's typing).
"""
from prroom.wsgi import app  # noqa: F401
