"""SIGTERM to the whole process group (systemd, Kubernetes): one goodbye per client."""
from __future__ import annotations

import os
import signal
import threading
from typing import List

import pytest
import socketio

from tests.support import servers

pytestmark = pytest.mark.integration


def test_sigterm_to_the_process_group_says_goodbye_once():
    clients: List[socketio.Client] = []
    goodbyes: List[int] = []
    gone = [threading.Event() for _ in range(3)]
    try:
        with servers.running() as proc:
            for index in range(3):
                client = socketio.Client(reconnection=False)
                client.on("pr-room-server-shutdown", lambda data, i=index: goodbyes.append(i))
                client.on("disconnect", lambda *args, i=index: gone[i].set())
                client.connect(proc.url, transports=["websocket"], wait_timeout=5)
                assert client.call("join-pr-room", {"pullRequestId": 9, "username": f"u{index}"},
                                   timeout=5)["ok"]
                clients.append(client)
            # the master and the worker both get it, and the master sends the worker another
            os.killpg(proc.proc.pid, signal.SIGTERM)
            assert all(event.wait(10) for event in gone), "a client was never let go"
            assert proc.proc.wait(15) == 0
        assert sorted(goodbyes) == [0, 1, 2]  # exactly one each
        shutdowns = [line for line in proc.log().splitlines() if "shutdown: closed" in line]
        assert len(shutdowns) == 1, shutdowns
    finally:
        for client in clients:
            client.disconnect()
