"""Several prroom processes joined by a real Redis: rooms, presence and faults as one service."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Dict, Iterator, List, NamedTuple, Optional

import pytest
import requests

from tests.support import servers
from tests.support.clients import Clients, RoomClient, new_pull_request_id
from tests.support.redis_server import RedisProcess, running_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

TTL = 3.0  # PRROOM_PRESENCE_TTL for these servers: a killed process is reaped within ~4 s
POST_TOKEN = "bot-token-for-tests"
POST_BOT = "deploy-bot"  # the name POST_TOKEN's messages carry


def cluster_env(redis: RedisProcess, channel: str, ttl: float = TTL) -> Dict[str, str]:
    """The settings of one process of a cluster on ``redis``'s ``channel``."""
    return {"PRROOM_MESSAGE_QUEUE": redis.url, "PRROOM_CHANNEL": channel,
            "PRROOM_PRESENCE_TTL": str(ttl), "PRROOM_POST_TOKENS": f"{POST_TOKEN}={POST_BOT}",
            "PRROOM_MESSAGE_BURST": "100"}


@pytest.fixture(scope="module")
def cluster(redis_server: RedisProcess) -> Iterator[List[servers.ServerProcess]]:
    """Two server processes, each `gunicorn -c gunicorn.conf.py` on its own port."""
    with ExitStack() as stack:
        yield [stack.enter_context(servers.running(env=cluster_env(redis_server, "main")))
               for _ in range(2)]


def test_messages_reach_every_member_on_every_process_once_and_in_order(cluster, connect):
    room = new_pull_request_id()
    a1, b2, c1 = connect(cluster[0]), connect(cluster[1]), connect(cluster[0])
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


def test_typing_crosses_processes_and_skips_the_typist(cluster, connect):
    room = new_pull_request_id()
    typist, reader = connect(cluster[0]), connect(cluster[1])
    typist.join(room, "typist")
    reader.join(room, "reader")
    typist.call("typing", {"pullRequestId": room, "username": "typist"})
    assert reader.expect("typing") == {"pullRequestId": room, "username": "typist"}
    typist.call("stop-typing", {"pullRequestId": room, "username": "typist"})
    assert reader.expect("stop-typing") == {"pullRequestId": room, "username": "typist"}
    typist.say(room, "typist", "mine")
    assert typist.expect("pr-room-message")["message"] == "mine"


def test_presence_is_one_member_per_user_across_processes(cluster, connect):
    room = new_pull_request_id()
    ann = connect(cluster[0], presence=True)
    ann.join(room, "ann")
    assert ann.expect("pr-room-members") == {"pullRequestId": room, "members": ["ann"]}
    ben_tab1 = connect(cluster[1], presence=True)
    ben_tab1.join(room, "ben")
    assert ben_tab1.expect("pr-room-members") == {"pullRequestId": room,
                                                  "members": ["ann", "ben"]}
    assert ann.expect("pr-room-user-joined") == {"pullRequestId": room, "username": "ben"}
    ben_tab2 = connect(cluster[0], presence=True)  # a second tab, on the other process
    ben_tab2.join(room, "ben")
    assert ben_tab2.expect("pr-room-members")["members"] == ["ann", "ben"]
    ben_tab1.close()  # one tab gone: ben is still there, nobody is told anything
    ann.say(room, "ann", "still here, ben?")
    assert ann.expect("pr-room-message")["message"] == "still here, ben?"
    ben_tab2.call("leave-pr-room", {"pullRequestId": room, "username": "ben"})
    assert ann.expect("pr-room-user-left") == {"pullRequestId": room, "username": "ben"}


def test_posts_from_outside_reach_members_on_every_process(cluster, connect, redis_server):
    room = new_pull_request_id()
    members = [connect(cluster[0]), connect(cluster[1])]
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
        assert (message["username"], message["message"], message["id"], message["via"]) == \
            ("ci-bot", "build passed", posted["id"], "api")
    # over HTTP, to one process; members of both get it
    url = f"{cluster[1].url}/pull-requests/{room}/messages"
    auth = {"Authorization": f"Bearer {POST_TOKEN}"}
    reply = requests.post(url, json={"username": "deploy-bot", "message": "deployed"},
                          headers=auth, timeout=5)
    assert reply.status_code == 201 and reply.json()["ok"] is True
    for member in members:
        message = member.expect("pr-room-message")
        assert (message["username"], message["via"]) == ("deploy-bot", "api")


@pytest.mark.parametrize("headers,body,status,code", [
    ({}, {"username": "bot", "message": "x"}, 401, "unauthorized"),
    ({"Authorization": "Bearer wrong"}, {"username": "bot", "message": "x"}, 401,
     "unauthorized"),
    ({"Authorization": f"Bearer {POST_TOKEN}"}, {"username": POST_BOT}, 400, "missing-field"),
    ({"Authorization": f"Bearer {POST_TOKEN}"}, {"message": " "}, 400, "invalid-field"),
    ({"Authorization": f"Bearer {POST_TOKEN}"}, {"message": "x" * 4001},
     413, "message-too-long"),
    ({"Authorization": f"Bearer {POST_TOKEN}"}, {"username": "alice", "message": "x"},
     403, "identity-mismatch"),
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


def test_sigterm_says_goodbye_and_the_cluster_hears_who_left_at_once(redis_server, connect):
    # A cluster of its own whose reaper would take a minute: a user-left within the client's
    # wait can only be the leaving process's goodbye.
    room = new_pull_request_id()
    env = cluster_env(redis_server, "goodbye", ttl=60)
    with servers.running(env=env) as staying, servers.running(env=env) as leaving:
        stayer = connect(staying, presence=True)
        stayer.join(room, "stayer")
        assert stayer.expect("pr-room-members")["members"] == ["stayer"]
        goner = connect(leaving, presence=True)
        goner.join(room, "goner")
        assert goner.expect("pr-room-members")["members"] == ["goner", "stayer"]
        assert stayer.expect("pr-room-user-joined")["username"] == "goner"
        leaving.proc.send_signal(signal.SIGTERM)
        assert goner.expect("pr-room-server-shutdown")["reconnect"] is True
        assert stayer.expect("pr-room-user-left") == {"pullRequestId": room,
                                                      "username": "goner"}
        assert leaving.proc.wait(15) == 0


class Killed(NamedTuple):
    """A process killed (SIGKILL: no goodbye) under one of its room's members."""

    room: int
    port: int                   # where it listened
    watcher: RoomClient         # a member of the room on a surviving process
    left: Optional[dict]        # the pr-room-user-left the watcher got
    after: float                # seconds from the kill to it


def kill_a_members_process(redis_server: RedisProcess, survivor: servers.ServerProcess,
                           connect: Clients, wait: float) -> Killed:
    """Start a process, put a member on it in a room with a watcher on ``survivor``, kill it."""
    room = new_pull_request_id()
    with servers.running(env=cluster_env(redis_server, "main")) as doomed:
        watcher = connect(survivor, presence=True)
        watcher.join(room, "watcher")
        assert watcher.expect("pr-room-members")["members"] == ["watcher"]
        victim = connect(doomed, presence=True)
        victim.join(room, "victim")
        assert watcher.expect("pr-room-user-joined")["username"] == "victim"
        started = time.monotonic()
        os.killpg(doomed.proc.pid, signal.SIGKILL)  # master and worker, no goodbye
        left = watcher.expect("pr-room-user-left", timeout=wait)
        return Killed(room, doomed.port, watcher, left, time.monotonic() - started)


def test_a_killed_process_is_reaped_and_a_restarted_one_rejoins(redis_server, cluster,
                                                                 connect):
    # a generous wait: the reaper's bound is the stress test's
    killed = kill_a_members_process(redis_server, cluster[1], connect, wait=TTL * 5)
    room, watcher = killed.room, killed.watcher
    assert killed.left == {"pullRequestId": room, "username": "victim"}
    watcher.say(room, "watcher", "survivors fine")
    assert watcher.expect("pr-room-message")["message"] == "survivors fine"

    with servers.running(env=cluster_env(redis_server, "main"), port=killed.port) as reborn:
        back = connect(reborn, presence=True)
        back.join(room, "victim")
        assert back.expect("pr-room-members")["members"] == ["victim", "watcher"]
        assert watcher.expect("pr-room-user-joined")["username"] == "victim"
        back.say(room, "victim", "I'm back")
        assert watcher.expect("pr-room-message")["message"] == "I'm back"


@pytest.mark.stress
def test_a_killed_process_is_reaped_within_its_ttl(redis_server, cluster, connect):
    killed = kill_a_members_process(redis_server, cluster[1], connect, wait=TTL * 5)
    print(f"\nkilled process reaped {killed.after:.1f} s after SIGKILL (TTL {TTL} s)")
    # heartbeat TTL, plus one reaper period (TTL / 3), plus slack for a busy machine
    assert killed.after <= TTL + TTL / 3 + 2, killed.after


def test_a_process_stalled_past_its_ttl_is_reaped_then_its_users_are_back(redis_server,
                                                                          connect):
    # SIGSTOP stands for a long GC pause or a partition: the process is gone long enough to
    # be reaped, but its clients stay connected, and it comes back.
    ttl = 2.0
    room = new_pull_request_id()
    env = cluster_env(redis_server, "stall", ttl=ttl)
    with servers.running(env=env) as stalling, servers.running(env=env) as steady:
        observer = connect(steady, presence=True)
        observer.join(room, "observer")
        assert observer.expect("pr-room-members")["members"] == ["observer"]
        peer = connect(stalling, presence=True)  # a member on the stalled process itself
        peer.join(room, "peer")
        assert observer.expect("pr-room-user-joined")["username"] == "peer"
        user = connect(stalling, presence=True)
        user.join(room, "user")
        assert observer.expect("pr-room-user-joined")["username"] == "user"
        both = [connect(stalling, presence=True), connect(steady, presence=True)]
        for tab in both:  # a user with a tab on each process never left
            tab.join(room, "both")
        assert observer.expect("pr-room-user-joined")["username"] == "both"
        worker = stalling.worker_pid()
        os.kill(worker, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            left = observer.expect("pr-room-user-left", timeout=ttl * 5)
        finally:
            os.kill(worker, signal.SIGCONT)
        resumed = time.monotonic()
        # the very next presence events: peer and user back, nothing at all about both
        assert left == {"pullRequestId": room, "username": "peer"}
        assert observer.expect("pr-room-user-left") == {"pullRequestId": room,
                                                        "username": "user"}
        for name in ("peer", "user"):
            assert observer.expect("pr-room-user-joined", timeout=ttl * 3) == \
                {"pullRequestId": room, "username": name}
        print(f"\nstalled process reaped after {resumed - stopped:.1f} s (TTL {ttl} s); its "
              f"users announced back {time.monotonic() - resumed:.2f} s after SIGCONT")
        fresh = connect(steady, presence=True)
        fresh.join(room, "fresh")
        assert fresh.expect("pr-room-members")["members"] == ["both", "fresh", "observer",
                                                              "peer", "user"]
        assert observer.expect("pr-room-user-joined")["username"] == "fresh"
        user.say(room, "user", "still here")  # the user's socket lived through it
        assert observer.expect("pr-room-message")["message"] == "still here"
        # the stalled process's own members heard the reaper's news, then the repair's
        # a message from the steady process comes after its "fresh joined" on the same room
        # channel (the user's own message is delivered locally, ahead of what Redis relays)
        observer.say(room, "observer", "after fresh")
        assert roster_until_message(peer, "after fresh") == {"both", "fresh", "observer", "peer",
                                                             "user"}
        assert "rewrote this server's 3 memberships into Redis (it had been reaped); " \
               "2 users back" in stalling.log()


def roster_until_message(client: RoomClient, text: str) -> set:
    """The room's members as a page builds them from presence events (pr-room-members,
    then joined and left), up to the chat message ``text``."""
    members: set = set()
    while True:
        name, payload = client.next_event()
        if name == "pr-room-message" and payload["message"] == text:
            return members
        if name == "pr-room-members":
            members = set(payload["members"])
        elif name == "pr-room-user-joined":
            members.add(payload["username"])
        elif name == "pr-room-user-left" and payload["username"] != "peer":  # not ourselves
            members.discard(payload["username"])


class Outage(NamedTuple):
    """What two processes' members saw while their Redis went away and came back."""

    warning: Optional[dict]      # the ack's warning for a message sent during the outage
    local: List[str]             # what the sender's process delivered during it (2 members)
    health: List[int]            # /healthz of each process during it
    readiness: requests.Response  # /readyz of the sender's process during it
    resumed_after: Optional[float]  # seconds until the far process heard again, or None
    ready_again: bool            # /readyz answered 200 again afterwards
    heard_from_far: str          # what the sender got when the far member spoke after that
    log: str                     # the sender's process's log


@pytest.fixture(scope="module")
def redis_outage() -> Outage:
    """Run once, checked by a functional and a stress test."""
    room = new_pull_request_id()
    with running_redis() as redis, ExitStack() as stack:
        procs = [stack.enter_context(servers.running(env=cluster_env(redis, "outage")))
                 for _ in range(2)]
        connect = stack.enter_context(Clients())
        near, near2, far = connect(procs[0]), connect(procs[0]), connect(procs[1])
        for client, name in ((near, "near"), (near2, "near2"), (far, "far")):
            client.join(room, name)

        redis.stop()
        warning = near.say(room, "near", "during outage").get("warning")
        local = [client.expect("pr-room-message")["message"] for client in (near, near2)]
        health = [requests.get(proc.url + "/healthz", timeout=5).status_code
                  for proc in procs]
        readiness = requests.get(procs[0].url + "/readyz", timeout=5)

        redis.start()
        started = time.monotonic()

        def far_hears_again() -> bool:
            # resumption is by itself: send until the far side hears one
            near.say(room, "near", "are you back?")
            for client in (near, near2):
                assert client.expect("pr-room-message")["message"] == "are you back?"
            try:
                return far.expect("pr-room-message", timeout=0.5)["message"] == "are you back?"
            except Exception:  # nothing came (yet)
                return False

        resumed = wait_until(far_hears_again, timeout=30, interval=0)
        resumed_after = time.monotonic() - started if resumed else None
        # readiness is polled, as a load balancer would
        ready_again = wait_until(lambda: requests.get(procs[0].url + "/readyz",
                                                      timeout=5).status_code == 200,
                                 timeout=10, interval=0.2)
        far.say(room, "far", "loud and clear")
        heard = near.expect("pr-room-message")["message"]
        return Outage(warning, local, health, readiness, resumed_after, ready_again, heard,
                      procs[0].log())


def test_redis_outage_local_chat_continues_and_cross_process_delivery_resumes(redis_outage):
    outage = redis_outage
    assert outage.warning["code"] == "cluster-unavailable"  # told, not silence
    assert outage.local == ["during outage"] * 2  # the same process keeps chatting
    assert outage.health == [200, 200]
    assert outage.readiness.status_code == 503
    assert outage.readiness.json()["checks"]["queue"] == "unreachable"
    assert outage.resumed_after is not None, "cross-process delivery did not resume"
    assert outage.ready_again, "never ready again after Redis came back"
    assert outage.heard_from_far == "loud and clear"
    assert "message queue unreachable" in outage.log


@pytest.mark.stress
def test_redis_outage_cross_process_delivery_resumes_soon(redis_outage):
    assert redis_outage.resumed_after is not None and redis_outage.resumed_after < 10, \
        redis_outage.resumed_after


def test_prroom_post_command_reaches_the_room(cluster, connect, redis_server):
    room = new_pull_request_id()
    member = connect(cluster[1])
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
