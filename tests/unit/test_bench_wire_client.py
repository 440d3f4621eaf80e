"""bench/loadgen/wire.js: the load generator's minimal client, against a real prroom server
under gunicorn, does what the scenarios need of socket.io-client (joins acked, chat messages
delivered and acked, pings answered), so its figures are of the same traffic."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from harness.base import BenchError, Layout
from harness.loadgen import Loadgen
from harness.processes import PrroomServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrroomServer]:
    """One prroom server (1 s pings, for the idle scenario) for every test here."""
    logs = tmp_path_factory.mktemp("wire-logs")
    served = PrroomServer(None, logs, 400, {}, name="wire")
    served.start(idle_ping=1.0)
    try:
        yield served
    finally:
        served.stop()


def _run(server: PrroomServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         config: Dict[str, Any], client: str, hold: float = 0.0) -> Dict[str, Any]:
    monkeypatch.setenv("NODE_PATH", str(ROOT / "tests" / "node" / "node_modules"))
    barriers: List[str] = []

    def on_barrier(name: str, data: List[Dict[str, Any]]) -> None:
        barriers.append(name)
        if name == "connect:end" and hold:
            # the idle scenario: held through pings, which come on the server's clock
            time.sleep(hold)

    [result] = Loadgen([dict(url=server.url, **config)], [None], tmp_path, 1000,
                       client).run(on_barrier, 120)
    assert barriers[0] == "connect:start" and barriers[1] == "connect:end", barriers
    return result


@pytest.mark.parametrize("client", ["wire", "socket.io"])
def test_rooms_join_send_and_get_every_copy_with_either_client(
        server: PrroomServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        client: str) -> None:
    result = _run(server, tmp_path, monkeypatch,
                  dict(scenario="rooms", sockets=40, roomSize=10, prBase=9100 if
                       client == "wire" else 9200, warmup=0.2, duration=1.0), client)
    assert result["joined"] == 40 and result["errors"] == {}
    assert result["acked"] > 40 and result["refused"] == 0
    # every acked message reaches its room of 10 (the window's edges cut a few either way)
    assert 8 * result["acked"] <= result["delivered"] <= 12 * result["acked"] + 400


def test_a_fan_out_by_the_wire_client_gets_every_copy_once(
        server: PrroomServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(server, tmp_path, monkeypatch,
                  dict(scenario="fanout", members=50, messages=20, intervalMs=5,
                       prBase=9300, drainSeconds=10, ack=True), "wire")
    assert (result["joined"], result["expected"], result["received"], result["extra"]) == \
        (50, 1000, 1000, 0)
    assert 0 < result["firstP50Ms"] <= result["p50Ms"] <= result["p99Ms"]


def test_idle_wire_clients_answer_pings_and_stay_connected(
        server: PrroomServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(server, tmp_path, monkeypatch,
                  dict(scenario="idle", sockets=30, roomSize=10, prBase=9400), "wire",
                  hold=3.5)
    assert result["joined"] == 30 and result["stillConnected"] == 30
    assert result["disconnects"] == 0 and result["minPingsPerSocket"] >= 2


def test_a_client_the_load_generator_does_not_have_is_refused() -> None:
    with pytest.raises(BenchError, match="unknown load generator client 'ws'"):
        Layout([0, 1], client="ws")
