"""The embedding example of docs/flask.md, clustered: two gunicorn processes of a host app
that built its own SocketIO before adding prroom, sharing one Redis."""
from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Iterator, List

import pytest
import requests

from tests.support import servers
from tests.support.clients import Clients, new_pull_request_id
from tests.support.redis_server import RedisProcess

pytestmark = pytest.mark.integration

APP = "tests.integration.embedded_app:app"


@pytest.fixture(scope="module")
def embedded(redis_server: RedisProcess) -> Iterator[List[servers.ServerProcess]]:
    """Two processes of the documented embedding example on one Redis."""
    env = {"PRROOM_MESSAGE_QUEUE": redis_server.url, "PRROOM_CHANNEL": "embedded"}
    with ExitStack() as stack:
        yield [stack.enter_context(servers.running(env=env, app=APP,
                                                   health_path="/chat/healthz"))
               for _ in range(2)]


def test_a_message_sent_on_one_process_reaches_a_member_on_the_other(embedded):
    room = new_pull_request_id()
    with Clients() as connect:
        ann, ben = connect(embedded[0]), connect(embedded[1])
        ann.join(room, "ann")
        ben.join(room, "ben")
        assert ann.say(room, "ann", "across")["ok"] is True
        assert ben.expect("pr-room-message")["message"] == "across"
        ben.say(room, "ben", "back")
        assert ann.expect("pr-room-message")["message"] == "across"
        assert ann.expect("pr-room-message")["message"] == "back"
    for proc in embedded:
        ready = requests.get(proc.url + "/chat/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"]["queue"] == "up"


def test_the_host_server_gets_prroom_frame_limit_and_ping_times(embedded):
    opening = requests.get(embedded[0].url + "/socket.io/?EIO=4&transport=polling",
                           timeout=5).text
    handshake = json.loads(opening[1:])
    assert handshake["maxPayload"] == 65536  # not python-engineio's 1 MB
    assert (handshake["pingInterval"], handshake["pingTimeout"]) == (25000, 20000)
