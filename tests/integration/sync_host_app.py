"""A host app that cannot run under gevent: sync workers, prroom as a separate service.

``gunicorn -k sync tests.integration.sync_host_app:app``.  It never imports gevent: it
issues chat tokens with the secret it shares with the prroom service and posts bot messages
through the message queue (docs/flask.md, the separate service).
"""
import os
import sys

from flask import Flask, jsonify, request

from prroom import issue_token, post_message

app = Flask(__name__)


@app.get("/pull-requests/<int:pr>/chat-token")
def chat_token(pr: int):
    """A token for the logged-in user (here: a header standing in for the host's login)."""
    user = request.headers.get("X-User", "")
    if not user:
        return jsonify(error="log in first"), 401
    return jsonify(token=issue_token(os.environ["PRROOM_SECRET_KEY"], user, [pr]))


@app.post("/pull-requests/<int:pr>/merge")
def merge(pr: int):
    """Merging announces itself in the pull request's room."""
    posted = post_message(pr, "merge-bot", "merged to main")
    return jsonify(id=posted["id"], gevent_loaded="gevent" in sys.modules)


@app.get("/healthz")
def healthz():
    """Ready to serve."""
    return jsonify(status="ok")
