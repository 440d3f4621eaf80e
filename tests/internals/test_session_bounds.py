"""prroom.internals.session_bounds: which address a session counts under, and the reaches
into python-engineio's handlers the bounds rely on."""
import inspect

import engineio
import pytest

from prroom.internals import session_bounds

TRUSTED = session_bounds.networks(["127.0.0.1", "::1", "10.0.0.0/8"])


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("198.51.100.9", None, "198.51.100.9"),
    ("198.51.100.9", "203.0.113.7", "198.51.100.9"),       # untrusted peer: header ignored
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),           # a local proxy
    ("127.0.0.1", "1.2.3.4, 203.0.113.7", "203.0.113.7"),  # the client wrote the first hop
    ("10.1.2.3", "203.0.113.7, 10.9.9.9", "203.0.113.7"),  # two trusted hops
    ("127.0.0.1", "10.0.0.1", "127.0.0.1"),                # only proxies: the peer
    ("::1", " 2001:db8::1 ", "2001:db8::1"),
    ("127.0.0.1", "x" * 500, "x" * 64),                    # a client's text, cut
])
def test_the_client_address_is_the_last_untrusted_hop(peer, forwarded, expected):
    environ = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    assert session_bounds.client_address(environ, TRUSTED) == expected
    assert session_bounds.client_address(environ, ()) == peer  # no trusted proxies


def test_engineio_refuses_a_handshake_its_connect_handler_refuses():
    source = inspect.getsource(engineio.Server._handle_connect)
    assert "ret = self._trigger_event('connect', sid, environ, run_async=False)" in source
    assert "if ret is not None and ret is not True:" in source
    assert "return self._unauthorized(ret or None)" in source
    trigger = inspect.getsource(engineio.Server._trigger_event)
    assert "self.handlers[event]" in trigger


def test_no_cap_per_address_starts_with_the_control_packet_limit_installed():
    from prroom.app import create_app
    from prroom.internals import seams

    app = create_app(config={"PRROOM_AUTH_MODE": "token", "PRROOM_SECRET_KEY": "k",
                             "PRROOM_MAX_SESSIONS_PER_ADDRESS": "0"})
    server = app.extensions["socketio"].server
    assert {o.seam.name: o.status for o in seams.report(server)}["session-bounds"] == \
        seams.INSTALLED
