"""gunicorn settings for prroom: ``gunicorn -c gunicorn.conf.py wsgi:app``.

The settings live in the package, ``prroom/gunicorn_config.py``, so that an installed prroom
(``prroom serve``, ``gunicorn -c python:prroom.gunicorn_config prroom.wsgi:app``) runs with
exactly the same ones as a checkout.  Importing it is light: it loads no Flask.
"""
from prroom.gunicorn_config import *  # noqa: F401,F403
