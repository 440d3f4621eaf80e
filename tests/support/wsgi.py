"""An in-process Engine.IO long-polling client: requests straight into a server's WSGI app.

For the tripwire tests of ``tests/internals/``: python-engineio and python-socketio are run
for real (threading mode, no sockets), from the HTTP request to the handlers and back.
"""
from __future__ import annotations

import io
import json
import threading
from typing import Any, Dict, List, Tuple

import socketio

from prroom.internals import socketio_hooks

Response = Tuple[str, str]


class WsgiPolling:
    """Talks Engine.IO long-polling to ``server``: anything with ``handle_request`` (a
    python-socketio or python-engineio server), or a WSGI app (a Flask-SocketIO app's
    ``wsgi_app``, whose handlers need the middleware's environ)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.app = getattr(server, "handle_request", server)

    def request(self, method: str = "GET", query: str = "EIO=4&transport=polling",
                body: bytes = b"") -> Response:
        """One request through the WSGI entry point: (status line, body)."""
        status: List[str] = []
        environ: Dict[str, Any] = {
            "REQUEST_METHOD": method, "QUERY_STRING": query, "PATH_INFO": "/socket.io/",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
            "wsgi.url_scheme": "http", "HTTP_HOST": "127.0.0.1"}
        chunks = self.app(environ, lambda line, headers, exc_info=None: status.append(line))
        return status[0], b"".join(chunks).decode()

    def handshake(self) -> Tuple[str, dict]:
        """Open a session: (sid, the OPEN packet's data)."""
        status, body = self.request()
        assert status.startswith("200") and body.startswith("0"), (status, body)
        opening = json.loads(body[1:])
        return opening["sid"], opening

    @staticmethod
    def query(sid: str) -> str:
        return f"EIO=4&transport=polling&sid={sid}"

    def get(self, sid: str) -> Response:
        return self.request(query=self.query(sid))

    def post(self, sid: str, *packets: str) -> Response:
        return self.request("POST", self.query(sid), "\x1e".join(packets).encode())

    def packets(self, sid: str) -> List[str]:
        """One poll, split into its packets (asserts a 200)."""
        status, body = self.get(sid)
        assert status.startswith("200"), (status, body)
        return body.split("\x1e")

    def get_in_thread(self, sid: str) -> Tuple[threading.Thread, Dict[str, Response]]:
        """Start a poll in a thread; its response lands in ``result["poll"]``."""
        result: Dict[str, Response] = {}
        thread = threading.Thread(target=lambda: result.setdefault("poll", self.get(sid)),
                                  daemon=True)
        thread.start()
        return thread, result


def polling_server(**options: Any) -> Tuple[socketio.Server, WsgiPolling]:
    """A python-socketio server (threading mode) and a polling client talking WSGI to it.

    Handlers run inline, so that a handler has run when the request that carried it
    returns."""
    server = socketio.Server(async_mode="threading", async_handlers=False, **options)
    return server, WsgiPolling(server)


def connected(client: WsgiPolling, *namespaces: str) -> str:
    """An Engine.IO session connected to ``namespaces`` ("/" by default), replies read."""
    sid, _ = client.handshake()
    for namespace in namespaces or ("/",):
        prefix = "" if namespace == "/" else namespace + ","
        client.post(sid, "40" + prefix)
        assert client.packets(sid)[0].startswith("40" + prefix), namespace
    return sid


class Postponed(socketio_hooks.LaterAnswer):
    """An ack answered later by the test itself: once started, its ``send`` waits in
    ``sends`` (call ``sends.pop()(body)`` from any thread to answer)."""

    __slots__ = ("sends",)

    def __init__(self, sends: List[Any]) -> None:
        self.sends = sends

    def start(self) -> None:
        """The handler returned: the test answers with the ``send`` it finds in ``sends``."""
        self.sends.append(self.send)
