"""prroom's reaches into library internals: each fails loudly when a library changes."""
import os

import socketio

from prroom import compat


def test_websocket_unmasking_is_accelerated_and_still_correct():
    from geventwebsocket.websocket import Header

    original = Header.__dict__["mask_payload"]
    payload = os.urandom(5000)
    header = Header(length=len(payload))
    header.mask = os.urandom(4)
    expected = bytes(original(header, payload)) if not getattr(
        original, "_prroom_wrapped", False) else None
    assert compat.accelerate_gevent_websocket() is True
    assert Header.mask_payload._prroom_wrapped and Header.unmask_payload._prroom_wrapped
    masked = Header.mask_payload(header, payload)
    if expected is not None:
        assert bytes(masked) == expected
    assert bytes(Header.unmask_payload(header, masked)) == payload  # XOR twice: identity


def test_python_socketio_still_has_the_entry_points_prroom_wraps():
    server = socketio.Server(async_mode="threading")
    assert callable(server._handle_event_internal)
    assert "message" in server.eio.handlers and "connect" in server.eio.handlers
    assert compat.track_ack_requests(server) is True
    assert server._handle_event_internal._prroom_wrapped
