"""Fixtures every test may use; each wires a factory of tests/support/."""
from __future__ import annotations

import threading
from typing import Iterator

import pytest

from tests.support import servers
from tests.support.clients import Clients, new_pull_request_id
from tests.support.environ import clear_settings
from tests.support.node import NodeDriver
from tests.support.redis_server import RedisProcess, running_redis

server = servers.server_fixture(
    servers.SHARED_SERVER_ENV, scope="session",
    doc="One production-shaped server shared by the integration tests (unique rooms per test).")


@pytest.fixture
def connect(request: pytest.FixtureRequest) -> Iterator[Clients]:
    """The client factory (tests.support.clients.Clients), to ``server`` unless told where."""
    with Clients(lambda: request.getfixturevalue("server")) as clients:
        yield clients


@pytest.fixture
def driver() -> Iterator[NodeDriver]:
    """npm socket.io-client sockets in one Node process (tests.support.node.NodeDriver)."""
    node = NodeDriver()
    yield node
    node.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    """A private redis-server for one test module (skipped where tools/run-tests could not
    get redis-server, as the quick start says)."""
    with running_redis() as proc:
        yield proc


@pytest.fixture
def pr_id() -> int:
    """A pull request id no other test uses, so tests sharing a server never interfere."""
    return new_pull_request_id()


@pytest.fixture(autouse=True)
def no_prroom_settings_from_the_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app() reads PRROOM_* from the environment: every test starts from none."""
    clear_settings(monkeypatch)


@pytest.fixture(autouse=True)
def no_client_left_reconnecting() -> Iterator[None]:
    """A python-socketio client a test leaves reconnecting would try that test's port for
    the rest of the run, and reach a later test's server there (``Client.disconnect()``
    does not stop a reconnection under way; ``Client.shutdown()`` does)."""
    yield
    left = [thread.name for thread in threading.enumerate()
            if thread.name.endswith("(_handle_reconnect)")]
    assert not left, f"a socketio.Client is still reconnecting: {left}"
