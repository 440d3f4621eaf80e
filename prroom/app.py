"""``create_app()``: the standalone prroom server used by wsgi.py, flask run and python -m."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from flask import Flask

from prroom.core.config import from_environ
from prroom.server.extension import PRRoom


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    """Build a Flask app serving prroom.

    Settings come from ``PRROOM_*`` environment variables, overridden by ``config``.
    """
    app = Flask("prroom")
    app.config.update(from_environ())
    if config:
        app.config.update(config)
    PRRoom(app)
    return app
