"""The deployment the documentation recommends, run for real: deploy/ is what it shows.

nginx (Debian's, unprivileged on loopback) runs deploy/nginx.conf with only its marked
addresses changed, in front of two clustered prroom instances with recovery on; the npm
socket.io-client connects through it with its default transports (long-polling, then the
upgrade to WebSocket).  The systemd unit and the container recipe are read as systemd and
a container builder would read them, and their commands are held to the documented ones.
"""
# lambdas binding a loop variable by default argument: mypy cannot infer their type
# mypy: disable-error-code="misc"
from __future__ import annotations

import configparser
import itertools
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest
import requests

from prroom.core.config import SERVER_SETTINGS
from tests.support import nginx, servers
from tests.support.cluster import cluster_env
from tests.support.node import NodeDriver
from tests.support.redis_server import RedisProcess

pytestmark = pytest.mark.integration

DEPLOY = servers.ROOT / "deploy"
UNIT = DEPLOY / "prroom@.service"
CONTAINERFILE = DEPLOY / "Containerfile"
#: The production command the documentation shows, from a checkout's root.
SERVER_COMMAND = ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]

SEND = "send-message-to-pr-room"
MESSAGE = "pr-room-message"
RECOVERY = {"PRROOM_RECOVERY_WINDOW": "30", "PRROOM_PRESENCE_GRACE": "5"}
# what a chat client that must not lose a message sets: its sends are retried until acked
# (one at a time, in order), and the clientMessageId makes a retry harmless
CLIENT = {"defaultTransports": True, "retries": 10, "ackTimeout": 3000}
ROUNDS = 5  # messages per user in each phase: before, during and after the SIGTERM

_rooms = itertools.count(9800)
_seqs = itertools.count(1_000)  # ack ids of our own, apart from NodeDriver.call's

Deployment = Tuple[nginx.NginxProcess, servers.ServerProcess, servers.ServerProcess]


@pytest.fixture
def deployment(redis_server: RedisProcess) -> Iterator[Deployment]:
    """nginx running deploy/nginx.conf in front of two clustered instances."""
    nginx.find_nginx()  # skip (or fail) before starting servers for nothing
    env = cluster_env(redis_server, f"deploy{next(_rooms)}", **RECOVERY)
    first = servers.gunicorn(env=env)
    second = servers.gunicorn(env=env)
    proxy = None
    try:
        first.wait_ready()
        second.wait_ready()
        proxy, _ = nginx.running_site([first.port, second.port])
        yield proxy, first, second
    finally:
        if proxy is not None:
            proxy.stop()
        first.stop()
        second.stop()


def test_the_test_runs_the_documented_file_with_only_its_addresses_changed() -> None:
    original = nginx.SITE_CONF.read_text()
    site = nginx.localize(original, 18080, [18001, 18002])
    assert nginx.masked(site) == nginx.masked(original)
    changed = [(a, b) for a, b in zip(nginx.directives(original), nginx.directives(site))
               if a != b]
    assert [b[1] for _, b in changed] == [
        ("server", "127.0.0.1:18001"), ("server", "127.0.0.1:18002"),
        ("listen", "127.0.0.1:18080")]
    # what the documentation asks of a load balancer is in the file
    words = {d[1] for d in nginx.directives(original)}
    assert ("ip_hash",) in words
    assert ("proxy_set_header", "Upgrade", "$http_upgrade") in words
    timeouts = [w for w in words if w[0] == "proxy_read_timeout"]
    assert timeouts and all(int(w[1].rstrip("s")) > 45 for w in timeouts)


def test_readiness_and_same_origin_pages_pass_through_nginx(deployment: Deployment) -> None:
    proxy, _, _ = deployment
    assert requests.get(proxy.url + "/readyz", timeout=5).status_code == 200
    handshake = proxy.url + "/socket.io/?EIO=4&transport=polling"
    # a page served through nginx is same-origin for prroom: Host keeps its port
    same = requests.get(handshake, headers={"Origin": proxy.url}, timeout=5)
    assert same.status_code == 200, same.text
    foreign = requests.get(handshake, headers={"Origin": "http://evil.example"}, timeout=5)
    assert foreign.status_code == 400


def _say(driver: NodeDriver, seqs: List[int], name: str, room: int, n: int) -> None:
    """Send ``name``'s message ``n`` with an ack, without waiting for it."""
    seq = next(_seqs)
    seqs.append(seq)
    driver.send("emit", name=name, event=SEND, ack=True, seq=seq,
                payload={"pullRequestId": room, "username": name, "message": f"{name} {n}",
                         "clientMessageId": f"{name}-{n}"})


def _acked(driver: NodeDriver, seqs: List[int], timeout: float = 30.0) -> None:
    for seq in seqs:
        record = driver.expect(lambda r, s=seq: r["ev"] == "ack" and r.get("seq") == s,
                               timeout)
        assert record["error"] is None and record["reply"]["ok"], record
    seqs.clear()


def _hosting(instances: Tuple[servers.ServerProcess, ...], name: str, room: int
             ) -> servers.ServerProcess:
    hosts = [s for s in instances if f"user={name} pr={room}" in s.log()]
    assert len(hosts) == 1, f"{name} joined on {len(hosts)} instances"
    return hosts[0]


def test_an_instance_stopped_mid_conversation_loses_nothing(deployment: Deployment,
                                                            driver: NodeDriver) -> None:
    proxy, first, second = deployment
    room = next(_rooms)
    users = ("alice", "bob")
    for name in users:
        driver.send("connect", name=name, url=proxy.url, options=CLIENT)
        opened = driver.expect(lambda r, n=name: r["name"] == n and r["ev"] == "open")
        assert opened["transport"] == "polling"
        record = driver.expect(lambda r, n=name: r["name"] == n and r["ev"] == "connect")
        assert not record["recovered"]
        reply = driver.call(name, "join-pr-room", {"pullRequestId": room, "username": name})
        assert reply["ok"], reply
        # the upgrade went through nginx
        driver.expect(lambda r, n=name: r["name"] == n and r["ev"] == "upgrade"
                      and r["transport"] == "websocket")
    # ip_hash: one client address, one instance
    leaving = _hosting((first, second), "alice", room)
    assert _hosting((first, second), "bob", room) is leaving
    survivor = second if leaving is first else first

    seqs: List[int] = []
    for n in range(ROUNDS):  # a conversation: each waits for the other's answer
        for name in users:
            _say(driver, seqs, name, room, n)
            _acked(driver, seqs)
    for n in range(ROUNDS, 2 * ROUNDS):  # in flight when the instance stops
        for name in users:
            _say(driver, seqs, name, room, n)
    leaving.proc.send_signal(signal.SIGTERM)  # a rolling restart: systemctl restart
    for n in range(2 * ROUNDS, 3 * ROUNDS):  # written while the clients move
        for name in users:
            _say(driver, seqs, name, room, n)

    for name in users:  # both sessions come back on the survivor, restored
        record = driver.expect(lambda r, n=name: r["name"] == n and r["ev"] == "connect",
                               timeout=30)
        assert record["recovered"] is True, record
        opened = driver.expect(lambda r, n=name: r["name"] == n and r["ev"] == "open")
        assert opened["transport"] == "polling"
        driver.expect(lambda r, n=name: r["name"] == n and r["ev"] == "upgrade"
                      and r["transport"] == "websocket", timeout=30)
    _acked(driver, seqs)
    assert leaving.proc.wait(30) == 0, leaving.log()
    assert survivor.log().count("recovered=true") == 2, survivor.log()
    # every message above was acked, so published before this one: whoever gets this one
    # got them all (a room's packets reach every member in one order)
    assert driver.call("alice", SEND, {"pullRequestId": room, "username": "alice",
                                       "message": "end"})["ok"]
    for name in users:
        driver.expect(lambda r, n=name: r["name"] == n and r.get("event") == MESSAGE
                      and r["args"][0]["message"] == "end", timeout=30)

    seen = {name: [args[0]["message"] for args in driver.events(name, MESSAGE)]
            for name in users}
    story = f"{seen}\n-- leaving --\n{leaving.log()}\n-- survivor --\n{survivor.log()}"
    for name in users:
        for sender in users:  # each side got every message once, in the order sent
            said = [m for m in seen[name] if m.startswith(sender + " ")]
            assert said == [f"{sender} {n}" for n in range(3 * ROUNDS)], story
    assert seen["alice"] == seen["bob"], story  # and both sides saw one conversation
    for name in users:
        assert not driver.events(name, "pr-room-user-left"), "a recovered user was seen leave"


# -- the systemd unit and the container recipe ---------------------------------------------

def _graceful_timeout() -> int:
    (setting,) = [s for s in SERVER_SETTINGS if s.key == "PRROOM_GRACEFUL_TIMEOUT"]
    return int(setting.default)


def _seconds(value: str) -> float:
    """A systemd time span: ``30``, ``30s``, ``1min 30s``, ``2m``."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False,
                                       comment_prefixes=("#", ";"))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_the_systemd_unit_runs_the_documented_server_and_stops_it_gracefully() -> None:
    service = _unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    working = Path(service["WorkingDirectory"])
    assert working.is_absolute()
    assert Path(argv[0]) == working / ".venv" / "bin" / "gunicorn", argv
    assert argv[1:] == SERVER_COMMAND[1:]
    assert service["Environment"] == "PRROOM_PORT=%i"  # one instance per nginx upstream port
    assert service["EnvironmentFile"].startswith("/")
    # SIGTERM to gunicorn's arbiter only; it hands it to the worker, which tells clients
    assert service["KillMode"] == "mixed"
    assert service.get("KillSignal", "SIGTERM") in ("SIGTERM", "TERM", "15")
    assert _seconds(service["TimeoutStopSec"]) > _graceful_timeout()
    assert service["Restart"] in ("always", "on-failure", "on-abnormal")
    assert service["User"] not in ("", "root", "0")
    assert int(service["LimitNOFILE"]) > 10_000  # PRROOM_WORKER_CONNECTIONS' default


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: the unit is only parsed")
    root = tmp_path / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(UNIT, units)
    # the unit's dependencies, and a stand-in for the virtual environment's gunicorn
    shutil.copytree("/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system",
                    ignore=lambda _, names: [n for n in names if not n.endswith(".target")])
    service = _unit()["Service"]
    gunicorn = root / shlex.split(service["ExecStart"])[0].lstrip("/")
    gunicorn.parent.mkdir(parents=True)
    gunicorn.write_text("#!/bin/sh\n")
    gunicorn.chmod(0o755)
    result = subprocess.run([analyze, "verify", f"--root={root}", "prroom@8001.service"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def _instructions() -> List[Tuple[str, str]]:
    """The Containerfile's instructions (continuations joined, comments dropped)."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines
            if line and not line.startswith("#")]


def _final_stage() -> List[Tuple[str, str]]:
    steps = _instructions()
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


def test_the_container_recipe_builds_from_the_project_and_runs_the_documented_server() -> None:
    steps = _instructions()
    for op, args in steps:  # everything it copies from the build context exists here
        if op == "COPY" and not args.startswith("--from"):
            for source in args.split()[:-1]:
                assert (servers.ROOT / source).exists(), source
    copied = {source for op, args in steps if op == "COPY" and not args.startswith("--from")
              for source in args.split()[:-1]}
    # what building the project reads: its build files, the package, setup.cfg's file: refs
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(servers.ROOT / "setup.cfg")
    needed = {"pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "prroom"} | {
        value.split(":", 1)[1].strip() for value in metadata["metadata"].values()
        if value.startswith("file:")}
    assert needed <= {source.rstrip("/") for source in copied}, needed
    assert any(op == "RUN" and re.search(r"pip install .*'\.(\[[a-z,]+\])?'", args)
               for op, args in steps), "installs the project from its own files"
    final = _final_stage()
    workdir = [args for op, args in final if op == "WORKDIR"][-1]
    (cmd,) = [json.loads(args) for op, args in final if op == "CMD"]
    assert cmd[0] == f"{workdir}/.venv/bin/gunicorn" and cmd[1:] == SERVER_COMMAND[1:]
    assert not [args for op, args in final if op == "ENTRYPOINT"]
    user = [args for op, args in final if op == "USER"][-1]
    assert user not in ("root", "0")
    env = " ".join(args for op, args in final if op == "ENV")
    port = re.search(r"PRROOM_PORT=(\d+)", env)
    assert port and "PRROOM_HOST=0.0.0.0" in env
    assert [args for op, args in final if op == "EXPOSE"] == [port.group(1)]


def test_the_container_health_check_asks_the_server() -> None:
    (check,) = [args for op, args in _final_stage() if op == "HEALTHCHECK"]
    argv = json.loads(check[check.index("CMD") + 3:].strip())
    assert "/healthz" in argv[-1] or "/readyz" in argv[-1]
    argv[0] = sys.executable  # the image's own virtual environment, here
    with servers.running() as server:
        env = {"PRROOM_PORT": str(server.port), "PATH": "/usr/bin:/bin"}
        assert subprocess.run(argv, env=env, timeout=30).returncode == 0
    # the same check against a port nobody serves says unhealthy
    env = {"PRROOM_PORT": str(servers.free_port()), "PATH": "/usr/bin:/bin"}
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
