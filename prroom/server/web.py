"""The HTTP side of prroom: a blueprint mounted at ``PRROOM_URL_PREFIX``.

- ``GET /healthz``: liveness.
- ``GET /pr/<id>`` (``?embed=1`` for the iframe view) and ``GET /pr/<id>/embed``: the chat
  page, rendered from ``templates/prroom/chat.html`` with ``static/prroom/chat.{js,css}``.
  A host app can override the template with its own ``prroom/chat.html``.
- ``GET /socket.io-client.min.js``: the socket.io-client build from
  ``PRROOM_SOCKETIO_CLIENT_FILE``, when that is set (404 otherwise).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
    send_file,
    url_for,
)
from flask.typing import ResponseReturnValue

from prroom import __version__
from prroom.core.protocol import MAX_PULL_REQUEST_ID
from prroom.internals import socketio_hooks

blueprint = Blueprint("prroom", __name__, template_folder="templates",
                      static_folder="static/prroom", static_url_path="/prroom-static")

_PR_ID = f"<int(min=1, max={MAX_PULL_REQUEST_ID}):pull_request_id>"


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    """Liveness: the process serves requests. Also reports the rooms it holds."""
    state = current_app.extensions["prroom"]
    monitor = state.loop_monitor
    loop = None if monitor is None else {
        "worstLagMs": round(monitor.worst_recent_lag() * 1000, 1),
        "lastLagMs": round(monitor.last_lag * 1000, 1), "blocks": monitor.blocks,
        "thresholdMs": round(monitor.threshold * 1000, 1)}
    return jsonify(status="ok", rooms=state.registry.room_count(),
                   asyncMode=state.socketio.async_mode, eventLoop=loop)


@blueprint.get(f"/pr/{_PR_ID}")
def chat_page(pull_request_id: int) -> ResponseReturnValue:
    """The chat page of one pull request; ``?embed=1`` gives the iframe view."""
    embed = request.args.get("embed", "").lower() not in ("", "0", "false", "no")
    return _render_chat(pull_request_id, embed)


@blueprint.get(f"/pr/{_PR_ID}/embed")
def chat_embed(pull_request_id: int) -> ResponseReturnValue:
    """The chrome-less chat view, for an ``<iframe>`` in the host app's pull request page."""
    return _render_chat(pull_request_id, embed=True)


@blueprint.get("/socket.io-client.min.js")
def socketio_client() -> ResponseReturnValue:
    """The locally configured socket.io-client build (``PRROOM_SOCKETIO_CLIENT_FILE``)."""
    path = current_app.extensions["prroom"].settings.socketio_client_file
    if not path:
        abort(404)
    return send_file(path, mimetype="text/javascript")


def page_identity(state: Any, pull_request_id: int) -> Dict[str, Any]:
    """What the page is told about its user: the hook for token / session identity.

    If the identity policy has a ``page_identity(request, pull_request_id)`` method, its
    result is used: ``{"username": ..., "auth": {...}}``; ``username`` skips the name form
    and ``auth`` is sent as the Socket.IO ``auth`` payload (e.g. ``{"token": ...}`` from
    :meth:`PRRoom.issue_token`).  A policy that authenticates connections by itself (a
    session cookie sent with the handshake) gets ``{"authenticated": True}``: no name form,
    the name comes back in the join ack.  Otherwise (``PRROOM_AUTH_MODE=none``) ``{}``: the
    page asks for a name and remembers it in the browser.
    """
    policy = state.identity
    hook = getattr(policy, "page_identity", None)
    if hook is not None:
        return dict(hook(request, pull_request_id) or {})
    if getattr(policy, "authenticates", False):
        return {"authenticated": True}
    return {}


def _render_chat(pull_request_id: int, embed: bool) -> Response:
    state = current_app.extensions["prroom"]
    settings = state.settings
    client_src, client_integrity = _client_script(settings)
    page_config = {
        "pullRequestId": pull_request_id,
        "embed": embed,
        "socketPath": request.script_root + _engineio_path(state),
        "clientUrl": client_src,
        "typingTimeout": settings.typing_timeout,
        "limits": {"maxMessageLength": settings.max_message_length,
                   "maxUsernameLength": settings.max_username_length},
        "identity": page_identity(state, pull_request_id),
    }
    html = render_template("prroom/chat.html", pull_request_id=pull_request_id, embed=embed,
                           page_config=page_config, client_src=client_src,
                           client_integrity=client_integrity,
                           max_username_length=settings.max_username_length,
                           asset_url=_asset_url)
    response = current_app.make_response(html)
    script_sources = " ".join(["'self'", *_origin(client_src)])
    # Defence in depth: chat text is inserted as text, and even if it were not, no injected
    # inline script or plugin could run.
    # Who may frame the page (clickjacking): the full page nobody, the embed view the pages
    # PRROOM_EMBED_FRAME_ANCESTORS names.  X-Frame-Options for browsers without CSP 2; it
    # cannot name other origins, so it is left out when the setting lists some.
    ancestors = settings.embed_frame_ancestors if embed else ("'none'",)
    response.headers["Content-Security-Policy"] = (
        f"script-src {script_sources}; object-src 'none'; base-uri 'none'; "
        f"frame-ancestors {' '.join(ancestors)}")
    frame_options = {("'none'",): "DENY", ("'self'",): "SAMEORIGIN"}.get(ancestors)
    if frame_options:
        response.headers["X-Frame-Options"] = frame_options
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"  # the page may carry a token
    return response


def _asset_url(filename: str) -> str:
    return url_for("prroom.static", filename=filename, v=__version__)


def _client_script(settings: Any) -> Tuple[str, Optional[str]]:
    """``(src, integrity)`` of the socket.io-client script tag."""
    if settings.socketio_client_file:
        return url_for("prroom.socketio_client", v=__version__), None
    return settings.socketio_client_url, settings.socketio_client_integrity or None


def _origin(url: str) -> Tuple[str, ...]:
    """The CSP source allowing ``url``'s host, if it is on another host."""
    parts = urlsplit(url)
    if not parts.netloc:
        return ()
    return (f"{parts.scheme}://{parts.netloc}" if parts.scheme else parts.netloc,)


def _engineio_path(state: Any) -> str:
    """The Socket.IO endpoint path as served (a host app's own SocketIO may set another)."""
    path = socketio_hooks.served_engineio_path(state.socketio)
    if path:
        return path
    configured: str = state.settings.socketio_path
    return "/" + configured.strip("/") + "/"

