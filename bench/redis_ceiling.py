"""Redis's own CPU per room message: the ceiling of one clustered deployment.

    python bench/redis_ceiling.py [--seconds 3] [--rooms 100]   # with no other benchmark running

A deployment's room channels, and with recovery on its one sequence, live in one hash slot,
so one Redis core carries all of its messages.  This measures what Redis spends on each,
through prroom's own publisher and subscriber (pipelined as a clustered process sends them),
on a private redis-server (``--save "" --appendonly no``): Redis's ``used_cpu_sys +
used_cpu_user`` (INFO cpu) before and after a steady window, divided by the messages the
publisher got a reply for.  Each case is a message as a clustered process publishes it:

* ``SPUBLISH`` to a room channel with 0, 1 or 2 processes subscribed (hosting the room);
* recovery on: the publish script (numbered, kept in the room's stream capped at
  PRROOM_RECOVERY_BUFFER's default, published), with 1 or 2 processes subscribed; and a
  send with a ``clientMessageId`` (the script first checks for an earlier send with that id
  and keeps this one's ack for retries), with 1 process subscribed.

No prroom server or Socket.IO is involved: Redis's share does not depend on how many members
a room has on each process (a process gets one copy and fans it out itself), only on how
many processes host the room.  The ceiling is 1 / (CPU per message) per Redis core.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import List  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402
from gevent.event import Event  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.harness.processes import RedisServer  # noqa: E402
from prroom.cluster.publisher import ROOM_PUBLISH, Publisher, Ticket  # noqa: E402
from prroom.cluster.recovery_store import PUBLISH_SCRIPT  # noqa: E402
from prroom.cluster.subscriber import Subscriber  # noqa: E402
from prroom.core.config import DEFAULTS  # noqa: E402

# A chat message as the clustered manager publishes it (recovery's JSON message; the offset
# goes between head and tail), about the size of the rooms scenario's.
HEAD = ('abcdef0123456789:{"method":"emit","event":"pr-room-message","data":[{"pullRequestId":'
        '123,"username":"user1","message":"hello there, this is a message of the benchmark",'
        '"sentAt":"2026-12-05T21:00:00Z","id":"abcdefabcdef"},')
TAIL = ('],"binary":false,"namespace":"/","room":"pr:123","skip_sid":null,"callback":null,'
        '"host_id":null,"recoverable":true}')
# An ack as a send with a clientMessageId keeps it for retries.
ACK = '{"ok":true,"pullRequestId":123,"id":"abcdefabcdef","sentAt":"2026-12-05T21:00:00Z"}'
PLAIN, SCRIPT, WITH_ID = "publish", "script", "script with a clientMessageId"
CASES = [("SPUBLISH, no process hosts the room", 0, PLAIN),
         ("SPUBLISH, 1 process hosts the room", 1, PLAIN),
         ("SPUBLISH, 2 processes host the room", 2, PLAIN),
         ("recovery script, 1 process hosts the room", 1, SCRIPT),
         ("recovery script, 2 processes host the room", 2, SCRIPT),
         ("recovery script, clientMessageId, 1 process", 1, WITH_ID)]


def measure(url: str, subscribers: int, kind: str, rooms: int, senders: int,
            seconds: float) -> tuple:
    """(messages/s offered, Redis CPU us per message) of one case."""
    admin = redis.Redis.from_url(url)
    admin.flushall()
    pool = redis.Redis.from_url(url, protocol=2).connection_pool
    publisher = Publisher(pool.make_connection, gevent.spawn, lambda connection: True)
    sha = publisher.load_script(PUBLISH_SCRIPT)
    channels = [f"prroom:bench:pr:{n}" for n in range(rooms)]
    listeners: List[Subscriber] = []
    for _ in range(subscribers):
        listener = Subscriber(pool.make_connection, "prroom:bench", gevent.sleep,
                              lambda connection: True)
        gevent.spawn(lambda listener=listener: [None for _ in listener.messages()])
        listeners.append(listener)
    gevent.sleep(0.2)
    for listener in listeners:
        for channel in channels:
            pending = listener.want(channel)
            if pending is not None:
                pending.wait(2)
    done, stop = [0], [False]

    def sender(number: int) -> None:
        answered = Event()
        room = number % rooms
        keys = [f"prroom:bench:recovery:{name}" for name in
                ("epoch", "seq", f"room:{room}", f"dropped:{room}")]
        args = ["e1", HEAD, TAIL, ROOM_PUBLISH, channels[room],
                DEFAULTS["PRROOM_RECOVERY_BUFFER"], 120_000]
        payload = HEAD + '"x-1"' + TAIL
        sent = 0

        def answer(ticket: Ticket) -> None:
            ticket.result()
            done[0] += 1
            answered.set()
        while not stop[0]:
            answered.clear()
            sent += 1
            if kind == PLAIN:
                ticket = publisher.publish("room", channels[room], payload)
            elif kind == SCRIPT:
                ticket = publisher.run_script(sha, keys, args)
            else:  # each send a new id: the check finds none, and the ack is kept
                ticket = publisher.run_script(
                    sha, [*keys, f"prroom:bench:recovery:sent:{room}:{number}-{sent}"],
                    [*args, ACK, 30_000])
            ticket.then(answer)
            answered.wait()

    def cpu() -> float:
        info = admin.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    tasks = [gevent.spawn(sender, n) for n in range(senders)]
    gevent.sleep(1.0)  # warm: under the script, the streams fill up to their cap
    cpu0, done0 = cpu(), done[0]
    gevent.sleep(seconds)
    cpu1, done1 = cpu(), done[0]
    stop[0] = True
    gevent.joinall(tasks, timeout=2)
    for listener in listeners:
        listener.close()
    publisher.close()
    messages = done1 - done0
    return messages / seconds, (cpu1 - cpu0) / messages * 1e6


def main() -> int:
    """Every case, ``--repeat`` times; one line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per case")
    parser.add_argument("--rooms", type=int, default=100, help="room channels")
    parser.add_argument("--senders", type=int, default=200,
                        help="messages in flight (one each, as the rooms scenario's members)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prroom-redis-ceiling-") as logs:
        server = RedisServer([], Path(logs))
        try:
            version = redis.Redis.from_url(server.url).info("server")["redis_version"]
            print(f"redis-server {version}; {args.rooms} rooms, {args.senders} messages in "
                  f"flight, {args.seconds:g} s per case")
            for _ in range(args.repeat):
                for label, subscribers, kind in CASES:
                    rate, cost = measure(server.url, subscribers, kind, args.rooms,
                                         args.senders, args.seconds)
                    print(f"{label:44s} {rate:9.0f} msg/s offered  Redis {cost:5.2f} us/msg"
                          f"  -> {1e6 / cost:9.0f} msg/s per Redis core", flush=True)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
