"""Fixtures: a real prroom under gunicorn + gevent-websocket, and real client factories."""
from __future__ import annotations

import itertools
import os

import pytest

from tests.support import servers
from tests.support.clients import RoomClient

# Short enough that the expiry test waits about a second, long enough not to fire mid-test.
TYPING_TIMEOUT = 1.0


@pytest.fixture(scope="session")
def server():
    """One production-shaped server shared by the integration tests (unique rooms per test)."""
    proc = servers.gunicorn(env={"PRROOM_TYPING_TIMEOUT": str(TYPING_TIMEOUT)})
    proc.wait_ready()
    yield proc
    proc.stop()


@pytest.fixture
def connect(server):
    """Factory: ``connect(transports=None, url=None, auth=None, presence=False)``."""
    opened = []

    def open_client(transports=None, url=None, auth=None, presence=False):
        client = RoomClient(url or server.url, transports=transports, auth=auth,
                            presence=presence)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


_ids = itertools.count(1000 + (os.getpid() % 1000) * 1000)


@pytest.fixture
def pr_id():
    """A pull request id no other test uses, so tests sharing a server never interfere."""
    return next(_ids)
