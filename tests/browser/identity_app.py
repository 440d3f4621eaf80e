"""A host app that knows who is signed in, for the chat page's identity hook.

``PRROOM_AUTH_MODE=custom``: the socket is whoever the Flask session says (the page asks for
no name).  ``PRROOM_AUTH_MODE=token``: the page is handed a signed token through the identity
policy's ``page_identity`` hook.  ``GET /login/<name>`` signs in and opens ``?next=``.
Served as ``gunicorn -c gunicorn.conf.py tests.browser.identity_app:app``.
"""
from gevent import monkey

monkey.patch_all()

from flask import Flask, redirect, request, session  # noqa: E402

from prroom import PRRoom  # noqa: E402
from prroom.core.config import from_environ  # noqa: E402

rooms = PRRoom()


@rooms.authenticator
def authenticate(auth, request):
    """``custom`` mode: the session's user, or refuse."""
    return session.get("user")


def page_identity(request, pull_request_id):
    """``token`` mode: hand the signed-in user's page a token for this pull request only."""
    user = session.get("user")
    if not user:
        return {}
    return {"username": user, "auth": {"token": rooms.issue_token(user, [pull_request_id])}}


def create_app():
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "identity-app-secret"
    app.config.update(from_environ())  # PRROOM_AUTH_MODE and the client file from the test

    @app.get("/login/<name>")
    def login(name):
        session["user"] = name
        return redirect(request.args.get("next", "/"))

    rooms.init_app(app)
    if app.config.get("PRROOM_AUTH_MODE") == "token":
        rooms.identity.page_identity = page_identity  # type: ignore[attr-defined]
    return app


app = create_app()
