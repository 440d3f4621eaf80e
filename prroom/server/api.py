"""``POST {prefix}/pull-requests/<id>/messages``: post to a room over HTTP (bots, webhooks).

Off unless ``PRROOM_POST_TOKENS`` lists bearer tokens.  Same validation and limits as the
socket event; JSON errors with the same codes: 400 invalid input, 401 no or wrong token,
413 too long, 415 not JSON, 429 rate-limited (with ``Retry-After``), 503 queue unreachable.
"""
from __future__ import annotations

import hmac
import math
from typing import Any, Iterable

from flask import Blueprint, Response, current_app, jsonify, request

from prroom.core.protocol import ErrorCode, ProtocolError
from prroom.internals.managers import QueueUnavailable

api = Blueprint("prroom_api", __name__)

_STATUS = {ErrorCode.MESSAGE_TOO_LONG: 413, ErrorCode.RATE_LIMITED: 429}


def _error(status: int, code: str, message: str, **details: Any) -> Response:
    response = jsonify(ok=False, error={"code": code, "message": message, **details})
    response.status_code = status
    return response


def matching_bearer_token(tokens: Iterable[str]) -> str:
    """The configured token the request's ``Authorization: Bearer`` names, or ""."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return ""
    for token in tokens:  # constant-time comparison against each configured token
        if hmac.compare_digest(given.encode(), token.encode()):
            return token
    return ""


@api.post("/pull-requests/<int:pull_request_id>/messages")
def post_message(pull_request_id: int) -> Response:
    """Post ``{username, message}`` to a pull request's room; 201 with the message."""
    state = current_app.extensions["prroom"]
    tokens = state.settings.post_tokens
    if not tokens:
        return _error(404, "not-found", "posting over HTTP is off (PRROOM_POST_TOKENS is empty)")
    token = matching_bearer_token(tokens)
    if not token:
        response = _error(401, ErrorCode.UNAUTHORIZED,
                          "send 'Authorization: Bearer <token>' with a configured token")
        response.headers["WWW-Authenticate"] = 'Bearer realm="prroom"'
        return response
    if request.content_length and request.content_length > state.settings.max_frame_bytes:
        return _error(413, ErrorCode.MESSAGE_TOO_LONG, "the request body is too large",
                      limit=state.settings.max_frame_bytes)
    if not request.is_json:
        return _error(415, ErrorCode.INVALID_PAYLOAD, "send a JSON body "
                      "(Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, ErrorCode.INVALID_PAYLOAD, "the body must be a JSON object")
    try:
        state.post_limiter.charge(token, "post")
        payload = state.events.post({**body, "pullRequestId": pull_request_id})
    except ProtocolError as err:
        response = _error(_STATUS.get(err.code, 400), err.code, err.message, **err.details)
        if err.code == ErrorCode.RATE_LIMITED:
            response.headers["Retry-After"] = str(math.ceil(err.details["retryAfter"]))
        return response
    except QueueUnavailable as exc:
        return _error(503, "cluster-unavailable", str(exc))
    response = jsonify(ok=True, **payload)
    response.status_code = 201
    return response
