"""The WSGI application as prroom's gunicorn worker hands it to its server.

gevent-websocket asks the server's application for ``current_app`` (its own
``WebSocketApplication`` convention) whenever a WebSocket is closed or written after it
closed, to tell it ``on_close``.  An application without one, a Flask app, makes it build
a stand-in class each time.  After a WebSocket's close frame, python-engineio's close and the
WebSocket's ``__del__`` each close it again: four new classes for every connection that
ends, a measurable part of what its end costs.  :class:`ServedApp` is the application itself, with a
``current_app`` whose ``on_close`` does nothing, as the stand-in's did.  It relies on
gevent-websocket's ``WebSocket.current_app`` (the ``websocket-close`` seam, checked in
``tests/internals/test_gunicorn_worker.py``); without it, the application is served as is.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from prroom.internals import seams


class _NoWebSocketApplication:
    """What gevent-websocket tells of a closed WebSocket: nobody listens."""

    __slots__ = ()

    def on_close(self, *reason: Any) -> None:
        """The WebSocket closed (prroom's reader and writer find out on their own)."""


class ServedApp:
    """A WSGI application, and the ``current_app`` gevent-websocket looks for on it.

    Nothing else of the app is passed through: whoever needs more of it (the worker's
    shutdown) asks :func:`unwrapped`.
    """

    __slots__ = ("app",)

    #: gevent-websocket's ``server.application.current_app``: made once, not per close.
    current_app = _NoWebSocketApplication()

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        return self.app(environ, start_response)


def unwrapped(served: Any) -> Any:
    """The application itself, whether or not it is served through :class:`ServedApp`."""
    return served.app if isinstance(served, ServedApp) else served


def served_app(app: Any) -> Any:
    """``app`` as the worker's server should hold it (unchanged if the seam is missing)."""
    served = app
    if hasattr(app, "current_app"):
        seams.off("websocket-close", "the application has a current_app of its own")
        return app

    def install() -> bool:
        nonlocal served
        served = ServedApp(app)
        return True
    seams.apply("websocket-close", install)
    return served
