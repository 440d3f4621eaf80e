"""Endpoints for operators and load balancers: readiness and Prometheus metrics.

- ``GET {prefix}/readyz``: 200 ``{"status": "ready"}`` when this process can serve; 503 with
  the reason when it cannot (clustered mode: the message queue or presence store is down).
- ``GET {prefix}{PRROOM_METRICS_PATH}``: Prometheus text format; off unless the path is set,
  and guarded by ``PRROOM_METRICS_TOKEN`` (bearer) when that is set.
"""
from __future__ import annotations

from typing import Any, Dict

from flask import Blueprint, Response, current_app, jsonify
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST

from prroom.server.api import matching_bearer_token

ops = Blueprint("prroom_ops", __name__)


@ops.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Readiness: can this process take traffic right now?"""
    state = current_app.extensions["prroom"]
    queue_up = state.queue_up()
    checks: Dict[str, Any] = {"queue": "not clustered" if queue_up is None else
                    ("up" if queue_up else "unreachable"),
                    "seams": state.seam_statuses()}
    if queue_up is False:
        response = jsonify(status="unavailable", checks=checks)
        response.status_code = 503
        return response
    return jsonify(status="ready", checks=checks)


def metrics_view() -> ResponseReturnValue:
    """Prometheus scrape endpoint, registered at PRROOM_METRICS_PATH when that is set."""
    state = current_app.extensions["prroom"]
    token = state.settings.metrics_token
    if token and not matching_bearer_token((token,)):
        return Response("metrics need 'Authorization: Bearer <PRROOM_METRICS_TOKEN>'\n",
                        status=401, headers={"WWW-Authenticate": 'Bearer realm="prroom"'})
    return Response(state.metrics.render(), content_type=CONTENT_TYPE_LATEST)
