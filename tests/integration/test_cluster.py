"""Several prroom processes joined by a real Redis: rooms, presence and faults as one service."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.support import servers
from tests.support.clients import RoomClient
from tests.support.redis_server import RedisProcess

pytestmark = pytest.mark.integration

TTL = 3.0  # PRROOM_PRESENCE_TTL for these servers: a killed process is reaped within ~4 s
POST_TOKEN = "bot-token-for-tests"
_rooms = itertools.count(7000)


def cluster_env(redis, channel):
    return {"PRROOM_MESSAGE_QUEUE": redis.url, "PRROOM_CHANNEL": channel,
            "PRROOM_PRESENCE_TTL": str(TTL), "PRROOM_POST_TOKENS": POST_TOKEN,
            "PRROOM_MESSAGE_BURST": "100"}


@pytest.fixture(scope="module")
def redis_server():
    proc = RedisProcess()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def cluster(redis_server):
    """Two server processes, each `gunicorn -c gunicorn.conf.py` on its own port."""
    procs = [servers.gunicorn(env=cluster_env(redis_server, "main")) for _ in range(2)]
    for proc in procs:
        proc.wait_ready()
    yield procs
    for proc in procs:
        proc.stop()


@pytest.fixture
def clients():
    opened = []

    def open_client(server, presence=False, **kwargs):
        client = RoomClient(server.url, presence=presence, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        client.close()


def test_messages_reach_every_member_on_every_process_once_and_in_order(cluster, clients):
    room = next(_rooms)
    a1, b2, c1 = clients(cluster[0]), clients(cluster[1]), clients(cluster[0])
    for client, name in ((a1, "ann"), (b2, "ben"), (c1, "cat")):
        client.join(room, name)
    for n in range(20):
        a1.emit("send-message-to-pr-room",
                {"pullRequestId": room, "username": "ann", "message": f"m{n}"})
    a1.say(room, "ann", "m20")  # acked: all of ann's messages have been handled
    for client in (a1, b2, c1):
        got = [client.expect("pr-room-message")["message"] for _ in range(21)]
        assert got == [f"m{n}" for n in range(21)]  # in the order ann sent them
    b2.say(room, "ben", "end")  # no duplicates: the very next event is ben's
    for client in (a1, b2, c1):
        assert client.expect("pr-room-message")["message"] == "end"


def test_typing_crosses_processes_and_skips_the_typist(cluster, clients):
    room = next(_rooms)
    typist, reader = clients(cluster[0]), clients(cluster[1])
    typist.join(room, "typist")
    reader.join(room, "reader")
    typist.call("typing", {"pullRequestId": room, "username": "typist"})
    assert reader.expect("typing") == {"pullRequestId": room, "username": "typist"}
    typist.call("stop-typing", {"pullRequestId": room, "username": "typist"})
    assert reader.expect("stop-typing") == {"pullRequestId": room, "username": "typist"}
    typist.say(room, "typist", "mine")
    assert typist.expect("pr-room-message")["message"] == "mine"


def test_presence_is_one_member_per_user_across_processes(cluster, clients):
    room = next(_rooms)
    ann = clients(cluster[0], presence=True)
    ann.join(room, "ann")
    assert ann.expect("pr-room-members") == {"pullRequestId": room, "members": ["ann"]}
    ben_tab1 = clients(cluster[1], presence=True)
    ben_tab1.join(room, "ben")
    assert ben_tab1.expect("pr-room-members") == {"pullRequestId": room,
                                                  "members": ["ann", "ben"]}
    assert ann.expect("pr-room-user-joined") == {"pullRequestId": room, "username": "ben"}
    ben_tab2 = clients(cluster[0], presence=True)  # a second tab, on the other process
    ben_tab2.join(room, "ben")
    assert ben_tab2.expect("pr-room-members")["members"] == ["ann", "ben"]
    ben_tab1.close()  # one tab gone: ben is still there, nobody is told anything
    ann.say(room, "ann", "still here, ben?")
    assert ann.expect("pr-room-message")["message"] == "still here, ben?"
    ben_tab2.call("leave-pr-room", {"pullRequestId": room, "username": "ben"})
    assert ann.expect("pr-room-user-left") == {"pullRequestId": room, "username": "ben"}


def test_posts_from_outside_reach_members_on_every_process(cluster, clients, redis_server):
    room = next(_rooms)
    members = [clients(cluster[0]), clients(cluster[1])]
    for number, member in enumerate(members):
        member.join(room, f"member{number}")
    # from another process entirely (a CI job, a Celery task), through the queue
    code = ("import json, prroom; print(json.dumps(prroom.post_message("
            f"{room}, 'ci-bot', 'build passed', message_queue={redis_server.url!r}, "
            "channel='main')))")
    posted = json.loads(subprocess.run([sys.executable, "-c", code], check=True, timeout=30,
                                       capture_output=True, text=True).stdout)
    for member in members:
        message = member.expect("pr-room-message")
        assert (message["username"], message["message"], message["id"]) == \
            ("ci-bot", "build passed", posted["id"])
    # over HTTP, to one process; members of both get it
    url = f"{cluster[1].url}/pull-requests/{room}/messages"
    auth = {"Authorization": f"Bearer {POST_TOKEN}"}
    reply = requests.post(url, json={"username": "deploy-bot", "message": "deployed"},
                          headers=auth, timeout=5)
    assert reply.status_code == 201 and reply.json()["ok"] is True
    for member in members:
        assert member.expect("pr-room-message")["username"] == "deploy-bot"


@pytest.mark.parametrize("headers,body,status,code", [
    ({}, {"username": "bot", "message": "x"}, 401, "unauthorized"),
    ({"Authorization": "Bearer wrong"}, {"username": "bot", "message": "x"}, 401,
     "unauthorized"),
    ({"Authorization": f"Bearer {POST_TOKEN}"}, {"username": "bot"}, 400, "missing-field"),
    ({"Authorization": f"Bearer {POST_TOKEN}"}, {"username": "", "message": "x"}, 400,
     "invalid-field"),
    ({"Authorization": f"Bearer {POST_TOKEN}"}, {"username": "bot", "message": "x" * 4001},
     413, "message-too-long"),
    ({"Authorization": f"Bearer {POST_TOKEN}"}, "not json", 415, "invalid-payload"),
])
def test_http_posting_errors_are_clear_json(cluster, headers, body, status, code):
    url = f"{cluster[0].url}/pull-requests/1/messages"
    if isinstance(body, str):
        reply = requests.post(url, data=body, headers=headers, timeout=5)
    else:
        reply = requests.post(url, json=body, headers=headers, timeout=5)
    assert reply.status_code == status
    assert reply.json()["ok"] is False and reply.json()["error"]["code"] == code


def test_http_posting_is_off_without_tokens(server):
    reply = requests.post(f"{server.url}/pull-requests/1/messages",
                          json={"username": "bot", "message": "x"}, timeout=5)
    assert reply.status_code == 404


def test_sigterm_says_goodbye_and_the_cluster_hears_who_left_at_once(redis_server, cluster,
                                                                     clients):
    room = next(_rooms)
    leaving = servers.gunicorn(env=cluster_env(redis_server, "main")).wait_ready()
    try:
        stayer = clients(cluster[0], presence=True)
        stayer.join(room, "stayer")
        assert stayer.expect("pr-room-members")["members"] == ["stayer"]
        goner = clients(leaving, presence=True)
        goner.join(room, "goner")
        assert goner.expect("pr-room-members")["members"] == ["goner", "stayer"]
        assert stayer.expect("pr-room-user-joined")["username"] == "goner"
        started = time.monotonic()
        leaving.proc.send_signal(signal.SIGTERM)
        assert goner.expect("pr-room-server-shutdown")["reconnect"] is True
        assert stayer.expect("pr-room-user-left") == {"pullRequestId": room,
                                                      "username": "goner"}
        assert time.monotonic() - started < TTL  # told at once, not by the reaper
        assert leaving.proc.wait(15) == 0
    finally:
        leaving.stop()


def test_a_killed_process_is_reaped_and_a_restarted_one_rejoins(redis_server, cluster,
                                                                 clients):
    room = next(_rooms)
    doomed = servers.gunicorn(env=cluster_env(redis_server, "main")).wait_ready()
    try:
        watcher = clients(cluster[1], presence=True)
        watcher.join(room, "watcher")
        assert watcher.expect("pr-room-members")["members"] == ["watcher"]
        victim = RoomClient(doomed.url, presence=True)
        victim.join(room, "victim")
        assert watcher.expect("pr-room-user-joined")["username"] == "victim"
        started = time.monotonic()
        os.killpg(doomed.proc.pid, signal.SIGKILL)  # master and worker, no goodbye
        left = watcher.expect("pr-room-user-left", timeout=TTL * 3)
        elapsed = time.monotonic() - started
        assert left == {"pullRequestId": room, "username": "victim"}
        # heartbeat TTL, plus one reaper period (TTL / 3), plus slack for a busy machine
        assert elapsed <= TTL + TTL / 3 + 2, elapsed
        watcher.say(room, "watcher", "survivors fine")
        assert watcher.expect("pr-room-message")["message"] == "survivors fine"

        doomed.stop()
        reborn = servers.gunicorn(env=cluster_env(redis_server, "main"),
                                  port=doomed.port).wait_ready()
        doomed = reborn
        back = clients(reborn, presence=True)
        back.join(room, "victim")
        assert back.expect("pr-room-members")["members"] == ["victim", "watcher"]
        assert watcher.expect("pr-room-user-joined")["username"] == "victim"
        back.say(room, "victim", "I'm back")
        assert watcher.expect("pr-room-message")["message"] == "I'm back"
    finally:
        doomed.stop()


def test_redis_outage_local_chat_continues_and_cross_process_delivery_resumes(clients):
    redis = RedisProcess()
    procs = [servers.gunicorn(env=cluster_env(redis, "outage")) for _ in range(2)]
    try:
        for proc in procs:
            proc.wait_ready()
        room = next(_rooms)
        near, near2, far = clients(procs[0]), clients(procs[0]), clients(procs[1])
        for client, name in ((near, "near"), (near2, "near2"), (far, "far")):
            client.join(room, name)

        redis.stop()
        ack = near.say(room, "near", "during outage")
        assert ack["warning"]["code"] == "cluster-unavailable"  # told, not silence
        for client in (near, near2):  # the same process keeps chatting
            assert client.expect("pr-room-message")["message"] == "during outage"
        for proc in procs:
            assert requests.get(proc.url + "/healthz", timeout=5).status_code == 200
        not_ready = requests.get(procs[0].url + "/readyz", timeout=5)
        assert not_ready.status_code == 503
        assert not_ready.json()["checks"]["queue"] == "unreachable"

        redis.start()
        started = time.monotonic()
        deadline = started + 15
        while True:  # send until the far side hears one: resumption is by itself
            ack = near.say(room, "near", "are you back?")
            for client in (near, near2):
                assert client.expect("pr-room-message")["message"] == "are you back?"
            try:
                if far.expect("pr-room-message", timeout=0.5)["message"] == "are you back?":
                    break
            except Exception:
                assert time.monotonic() < deadline, "cross-process delivery did not resume"
        resumed_after = time.monotonic() - started
        assert resumed_after < 10, resumed_after
        deadline = time.monotonic() + 10
        while requests.get(procs[0].url + "/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "never ready again after Redis came back"
            time.sleep(0.2)  # readiness is polled, as a load balancer would
        far.say(room, "far", "loud and clear")
        assert near.expect("pr-room-message")["message"] == "loud and clear"
        assert "message queue unreachable" in procs[0].log()
    finally:
        for proc in procs:
            proc.stop()
        redis.stop()


def test_prroom_post_command_reaches_the_room(cluster, clients, redis_server):
    room = next(_rooms)
    member = clients(cluster[1])
    member.join(room, "member")
    done = subprocess.run([str(servers.BIN / "prroom"), "post", str(room), "cron",
                           "nightly build green", "--message-queue", redis_server.url,
                           "--channel", "main"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    message = member.expect("pr-room-message")
    assert (message["username"], message["id"]) == ("cron", done.stdout.strip())
    bad = subprocess.run([str(servers.BIN / "prroom"), "post", str(room), "", "x",
                          "--message-queue", redis_server.url], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "'username'" in bad.stderr
