"""prroom's HTTP API: posting to a room (bots, webhooks), and the admin endpoint.

``POST {prefix}/pull-requests/<id>/messages`` is off unless ``PRROOM_POST_TOKENS`` lists
bearer tokens.  Each token is bound to a bot name (the name its messages carry; a
``username`` in the body must be that name) and optionally to pull requests; the message
reaches members marked ``via: "api"``.  Same validation and limits as the socket event;
JSON errors with the same codes: 400 invalid input, 401 no or wrong token, 403 another name
or pull request than the token's, 411 no ``Content-Length``, 413 too long, 415 not JSON,
429 rate-limited (with ``Retry-After``), 503 queue unreachable.

``POST {prefix}/admin/disconnect-identity`` (``{"username": ...}``) disconnects an identity
on every process; off unless ``PRROOM_ADMIN_TOKEN`` is set, and behind that token only.

A body is refused by its headers alone (411, 413) before any of it is read, and that
connection is then closed rather than drained.
"""
from __future__ import annotations

import hmac
import logging
import math
from typing import Any, Iterable, Optional, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request

from prroom.cluster.channels import QueueUnavailable
from prroom.core.config import PostToken
from prroom.core.protocol import ErrorCode, ProtocolError, parse_username
from prroom.internals.http_bodies import leave_body_unread

api = Blueprint("prroom_api", __name__)
logger = logging.getLogger("prroom")

_STATUS = {ErrorCode.MESSAGE_TOO_LONG: 413, ErrorCode.RATE_LIMITED: 429,
           ErrorCode.IDENTITY_MISMATCH: 403, ErrorCode.FORBIDDEN: 403}

#: The HTTP-only error code of a body sent without ``Content-Length`` (411).
LENGTH_REQUIRED = "length-required"

#: Largest admin request body: ``{"username": ...}``.
_ADMIN_BODY_LIMIT = 4096

T = TypeVar("T")


def _error(status: int, code: str, message: str, **details: Any) -> Response:
    response = jsonify(ok=False, error={"code": code, "message": message, **details})
    response.status_code = status
    return response


def _bearer(candidates: Iterable[T], token_of: Any = str) -> Optional[T]:
    """The candidate whose token the request's ``Authorization: Bearer`` names, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return None
    found = None
    for candidate in candidates:  # constant-time comparison against every configured token
        if hmac.compare_digest(given.encode(), token_of(candidate).encode()) and found is None:
            found = candidate
    return found


def matching_bearer_token(tokens: Iterable[str]) -> str:
    """The configured token the request's ``Authorization: Bearer`` names, or ""."""
    return _bearer(tokens) or ""


def _unauthorized(message: str) -> Response:
    response = _error(401, ErrorCode.UNAUTHORIZED, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="prroom"'
    return response


def refuse_body_by_headers(limit: int) -> Optional[Response]:
    """411 for a body without ``Content-Length`` (chunked), 413 for one above ``limit``;
    decided from the headers, before a byte of the body is read (None: go ahead)."""
    length = request.content_length  # None when absent, or with Transfer-Encoding
    if length is None or "Transfer-Encoding" in request.headers:
        response = _error(411, LENGTH_REQUIRED, "send the body with a Content-Length header "
                          "(chunked bodies are not accepted)")
    elif length > limit:
        response = _error(413, ErrorCode.MESSAGE_TOO_LONG, "the request body is too large",
                          limit=limit)
    else:
        return None
    # the body stays unread: this connection cannot serve another request after it
    leave_body_unread(request.environ)
    response.headers["Connection"] = "close"
    return response


def _json_object(limit: int) -> Any:
    """The request's JSON object of at most ``limit`` bytes, or an error response (the
    length checked from the headers first: see :func:`refuse_body_by_headers`)."""
    refused = refuse_body_by_headers(limit)
    if refused is not None:
        return refused
    if not request.is_json:
        return _error(415, ErrorCode.INVALID_PAYLOAD, "send a JSON body "
                      "(Content-Type: application/json)")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, ErrorCode.INVALID_PAYLOAD, "the body must be a JSON object")
    return body


@api.post("/pull-requests/<int:pull_request_id>/messages")
def post_message(pull_request_id: int) -> Response:
    """Post ``{message[, username]}`` to a pull request's room as the token's bot; 201."""
    state = current_app.extensions["prroom"]
    entries = state.settings.post_tokens
    if not entries:
        return _error(404, "not-found", "posting over HTTP is off (PRROOM_POST_TOKENS is empty)")
    entry: Optional[PostToken] = _bearer(entries, lambda e: e.token)
    if entry is None:
        return _unauthorized("send 'Authorization: Bearer <token>' with a configured token")
    body = _json_object(state.settings.max_frame_bytes)
    if isinstance(body, Response):
        return body
    try:
        state.post_limiter.charge(entry.token, "post")
        claimed = body.get("username")
        if claimed is not None and claimed != entry.bot:
            raise ProtocolError(ErrorCode.IDENTITY_MISMATCH,
                                f"this token posts as {entry.bot!r}; leave 'username' out or "
                                "send that name", field="username")
        if entry.pull_requests is not None and pull_request_id not in entry.pull_requests:
            raise ProtocolError(ErrorCode.FORBIDDEN, "this token may not post to pull "
                                f"request {pull_request_id}", pullRequestId=pull_request_id)
        payload = state.events.post({**body, "pullRequestId": pull_request_id,
                                     "username": entry.bot})
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


@api.post("/admin/disconnect-identity")
def disconnect_identity() -> Response:
    """Disconnect ``{"username"}``'s connections on every process (PRROOM_ADMIN_TOKEN)."""
    state = current_app.extensions["prroom"]
    token = state.settings.admin_token
    if not token:
        return _error(404, "not-found", "the admin endpoint is off (PRROOM_ADMIN_TOKEN is "
                                        "empty)")
    if _bearer((token,)) is None:
        return _unauthorized("send 'Authorization: Bearer <PRROOM_ADMIN_TOKEN>'")
    body = _json_object(_ADMIN_BODY_LIMIT)
    if isinstance(body, Response):
        return body
    try:
        username = parse_username(body.get("username"), state.events.limits)
    except ProtocolError as err:
        return _error(400, err.code, err.message, **err.details)
    try:
        done = state.disconnect_identity(username)
    except QueueUnavailable as exc:
        return _error(503, "cluster-unavailable", f"only this process's connections were "
                      f"closed: {exc}")
    logger.warning("admin: disconnected identity=%s from %s", username, request.remote_addr)
    return jsonify(ok=True, username=username, closed=done.closed, published=done.published)
