"""The HTTP side of prroom: a blueprint mounted at ``PRROOM_URL_PREFIX``."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

blueprint = Blueprint("prroom", __name__)


@blueprint.get("/healthz")
def healthz():
    """Liveness: the process serves requests. Also reports the rooms it holds."""
    extension = current_app.extensions["prroom"]
    return jsonify(status="ok", rooms=extension.registry.room_count(),
                   asyncMode=extension.socketio.async_mode)
