"""A host authenticator that raises: the host's error, logged once; the client refused once."""
from __future__ import annotations

from typing import List

import pytest
import socketio

from tests.support import servers

pytestmark = pytest.mark.integration

raising_server = servers.server_fixture(
    {"PRROOM_AUTH_MODE": "custom",
     "PRROOM_AUTHENTICATE": "tests.integration.raising_auth:authenticate"},
    doc="custom authentication whose authenticator raises for auth {boom: true}.")


def test_a_raising_authenticator_refuses_that_connect_once_with_a_code(raising_server):
    client = socketio.Client(reconnection=True, reconnection_delay=0.1)
    errors: List[dict] = []
    client.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(raising_server.url, transports=["websocket"], auth={"boom": True},
                       wait_timeout=5)
    client.disconnect()
    assert len(errors) == 1  # refused, not a dropped transport to retry in a loop
    assert errors[0]["data"] == {"code": "authentication-error",
                                 "message": "authentication failed on the server"}
    log = raising_server.log()
    assert log.count("the authenticator raised; refusing connection") == 1
    assert log.count("RuntimeError: user database unreachable") == 1  # the traceback
    assert "malformed packet" not in log
    # the same server still lets a good connection in
    good = socketio.Client(reconnection=False)
    good.connect(raising_server.url, transports=["websocket"], auth={"user": "ann"},
                 wait_timeout=5)
    assert good.call("join-pr-room", {"pullRequestId": 4}, timeout=5)["username"] == "ann"
    good.disconnect()
