"""A host app that already logs people in with Flask-Login, and lets prroom reuse that.

``PRROOM_AUTH_MODE=custom``: the authenticator reads Flask-Login's ``current_user`` from the
session cookie the browser already sends; the room rule lets each user into their own pull
requests only.  Served as ``gunicorn -c gunicorn.conf.py tests.integration.login_app:app``.
"""
from gevent import monkey

monkey.patch_all()

from flask import Flask, abort, request  # noqa: E402
from flask_login import LoginManager, UserMixin, current_user, login_user  # noqa: E402

from prroom import PRRoom  # noqa: E402

#: who may see which pull requests, as the code host would know it
PULL_REQUESTS_OF = {"alice": {1, 2}, "bob": {2}}


class User(UserMixin):
    def __init__(self, name):
        self.id = name


login_manager = LoginManager()
rooms = PRRoom()


@login_manager.user_loader
def load_user(user_id):
    return User(user_id) if user_id in PULL_REQUESTS_OF else None


@rooms.authenticator
def authenticate(auth, request):
    """The socket is whoever the host app's session says; anonymous sockets are refused."""
    return current_user.get_id() if current_user.is_authenticated else None


@rooms.room_authorizer
def can_join(identity, pull_request_id):
    return pull_request_id in PULL_REQUESTS_OF.get(identity.name, ())


def create_app():
    app = Flask(__name__)
    app.config.update(SECRET_KEY="host-app-secret", PRROOM_AUTH_MODE="custom")
    login_manager.init_app(app)

    @app.post("/login")
    def login():
        name = request.form.get("name", "")
        if name not in PULL_REQUESTS_OF:
            abort(403)
        login_user(User(name))
        return "logged in"

    rooms.init_app(app)
    return app


app = create_app()
