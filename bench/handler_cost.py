#!/usr/bin/env python3
"""Instructions per chat message through prroom's own Python path: a figure that two
revisions can be compared by on a noisy machine.

    python bench/handler_cost.py [--base REV|DIR] [--branch REV|DIR] [--rooms N] [--size N]
                                 [--messages N] [--repeat K] [--timed] [--variant V]
                                 [--queue redis://...] [--parts]

``bench/run.py`` measures the whole server, sockets and kernel included; on a shared virtual
machine its figures move by a tenth from one run to the next, so a change worth a few per
cent cannot be seen there.  This script counts instead.  In one process, prroom's own app
(gevent's monkey-patching done, as under gunicorn) gets ``--rooms`` rooms of ``--size``
sessions, each connected and joined by long-polling requests straight into the WSGI app,
then given the direct writer a WebSocket connection has, on a stand-in socket that takes
every write.  Then acked ``send-message-to-pr-room`` events go, sender after sender, through
the same direct dispatch the WebSocket reader hands a frame to, yielding to the event loop
every 16 as the packet guard does.  Valgrind's cachegrind (no cache simulation) counts the
instructions of two such processes, one sending ``--messages`` more than the other; the
difference divided by ``--messages`` is what one message costs: decoding it, the rate limit,
the handler, the broadcast's encoding and fan-out to the room, the ack, the metrics, and the
corked writes at the end of the loop turn.

Not in it: reading frames from sockets, the system calls that write them, the event loop's
own waiting (``bench/run.py`` has all of those), and what caches and branch prediction do to
time.  Two runs of the same tree agree to well under a per cent, whatever else the machine
runs.  ``--timed`` prints CPU µs per message instead (no valgrind: as noisy as the machine).

``--parts`` (with ``--queue``) splits what clustering adds to a message: seven measurements
of one tree, standalone and clustered, acked and not, and clustered with its publishes
answered in the process (so without Redis) or sent where no process listens (so without
the copy of each message that comes back to its own process); and the receiving side of a
room that spans processes: the same messages as another process published them, their
bytes as Redis sends them read by this process's subscriber and delivered to the rooms'
members here (only the socket they come from is a stand-in).  ``--variant`` takes one of
them alone.

Each side is a tree, as in ``bench/compare.py``: a directory, or a git revision checked out
into a temporary worktree; ``--branch`` defaults to this working tree.  Needs valgrind
(Debian: ``apt-get install valgrind``) unless ``--timed``.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from harness.ab_runs import Tree, print_counts, with_trees
from harness.base import BenchError, log

#: Messages sent before the counted ones (first calls, caches filled, dicts grown).
WARMUP = 500
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


#: What the measured process varies (``--variant``): the messages asked for no ack; or,
#: clustered, publishes answered in the process without reaching Redis, or published on
#: channels no process listens to (so no copy of a message comes back to its sender); or
#: the receiving side: messages another process published, read from Redis's bytes and
#: delivered to the rooms' members here (``harness.received``).
VARIANTS = ("acked", "unacked", "answered", "unheard", "received")


def inner(rooms: int, size: int, messages: int, timed: bool, queue: Optional[str],
          variant: str = "acked") -> None:
    """The measured process: set up the rooms, send ``messages`` after the warm-up."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    from harness.received import deliver_received, published_frames

    from prroom.app import create_app
    from prroom.gunicorn_config import post_worker_init
    from prroom.transport import event_path
    from prroom.transport.writes import DirectWriter

    config = {"PRROOM_ASYNC_MODE": "gevent", "PRROOM_MAX_SESSIONS_PER_ADDRESS": 0}
    for kind in ("MESSAGE", "TYPING", "ROOM"):
        config[f"PRROOM_{kind}_RATE"] = config[f"PRROOM_{kind}_BURST"] = 1_000_000
    if queue:  # clustered: a channel of this process's own on the queue
        config.update(PRROOM_MESSAGE_QUEUE=queue, PRROOM_CHANNEL=f"handler-cost-{os.getpid()}")
    app = create_app(config)
    # the garbage collector tuned as gunicorn's worker has it once the app is loaded: with
    # Python's defaults, collections (several times more frequent clustered) would be
    # counted that a served worker does not make
    post_worker_init(None)
    server = app.extensions["prroom"].socketio.server
    if variant in ("answered", "unheard", "received") and not queue:
        raise BenchError(f"--variant {variant} measures a clustered process: give --queue")
    acked = variant not in ("unacked", "received")

    def request(method: str, query: str, body: str = "") -> str:
        import io
        status: List[str] = []
        data = body.encode()
        environ = {"REQUEST_METHOD": method, "QUERY_STRING": query,
                   "PATH_INFO": "/socket.io/", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
                   "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_LENGTH": str(len(data)),
                   "wsgi.input": io.BytesIO(data), "wsgi.url_scheme": "http",
                   "HTTP_HOST": "127.0.0.1", "REMOTE_ADDR": "127.0.0.1"}
        def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(line)

        chunks = app(environ, start_response)
        text = b"".join(chunks).decode()
        if not status[0].startswith("200"):
            raise BenchError(f"{method} {query}: {status[0]} {text[:200]}")
        return text

    written = {"deliveries": 0, "acks": 0}

    class TakesAll:
        """A socket that takes every write at once (and counts what it was given)."""

        def send(self, data: bytes, flags: int = 0, timeout: Optional[float] = None) -> int:
            written["deliveries"] += data.count(b'"pr-room-message"')
            written["acks"] += data.count(b'[{"ok":true,')
            return len(data)

    class Queue:
        """What the fan-out and the ack path look for on a connection: its direct writer."""

        def __init__(self) -> None:
            self.writer = DirectWriter(None, TakesAll())

        def qsize(self) -> int:
            return 0

    senders = []
    for room in range(1, rooms + 1):
        for member in range(size):
            import json
            sid = json.loads(request("GET", "EIO=4&transport=polling")[1:])["sid"]
            query = f"EIO=4&transport=polling&sid={sid}"
            request("POST", query, "40")
            request("GET", query)
            user = f"u{room}-{member}"
            request("POST", query, '421["join-pr-room",{"pullRequestId":%d,"username":"%s"}]'
                    % (room, user))
            request("GET", query)
            senders.append((sid, room, user))
    for sid, _, _ in senders:
        server.eio.sockets[sid].queue = Queue()
    direct = getattr(server.eio.handlers["message"], event_path.DIRECT_ATTRIBUTE, None)
    if direct is None:
        raise BenchError("this tree has no direct event dispatch to measure")
    texts = [(sid, '2%s["send-message-to-pr-room",{"pullRequestId":%d,"username":"%s",'
              '"message":"a review comment of an ordinary length"}]'
              % (n if acked else "", room, user))
             for n, (sid, room, user) in enumerate(senders)]
    manager = server.manager
    if variant == "answered":  # the cluster's own work without Redis: replies at once
        from prroom.cluster.publisher import Ticket
        reply = Ticket.answered(1)
        manager.publisher.publish = lambda kind, channel, payload: reply
    elif variant == "unheard":  # rooms stay subscribed; their messages go elsewhere
        # (a room's channel is built from this prefix where it is published)
        manager.channel = f"{manager.channel}-unheard"
    frames = published_frames(manager, [
        (f"pr:{room}", '2["pr-room-message",{"pullRequestId":%d,"username":"%s","message":'
         '"a review comment of an ordinary length","id":"a1b2c3d4-%d","sentAt":%d}]'
         % (room, user, n, 1765148400000 + n))
        for n, (_, room, user) in enumerate(senders)]) if variant == "received" else []
    last: List[Any] = []
    if queue and variant != "answered":  # a publish's reply: how many processes heard it
        publish = manager.publisher.publish

        def publish_and_keep(kind: str, channel: Any, payload: Any) -> Any:
            ticket = publish(kind, channel, payload)
            last[:] = [ticket]
            return ticket
        manager.publisher.publish = publish_and_keep

    expected = 0

    def send(count: int) -> None:
        nonlocal expected
        if variant == "received":  # the same messages, as another process's publishes
            deliver_received(manager, frames, count)
            return
        sent = 0
        while sent < count:
            for sid, text in texts[:count - sent]:
                if not direct(sid, text):
                    raise BenchError("the direct dispatch declined a chat message")
            sent += min(len(texts), count - sent)
        gevent.sleep(0)  # the last corked writes
        if queue and acked:  # clustered acks come with their publish's reply
            deadline = time.monotonic() + 30
            while written["acks"] < expected + count and time.monotonic() < deadline:
                gevent.sleep(0.001)

    send(WARMUP)
    expected = WARMUP
    started = time.process_time()
    send(messages)
    if timed:
        print(f"cpu_us_per_message {(time.process_time() - started) / messages * 1e6:.2f}")
    sent = WARMUP + messages
    if written != {"deliveries": sent * size, "acks": sent if acked else 0}:  # whole
        raise BenchError(f"{sent} messages to rooms of {size}, but written: {written}")
    if last:
        heard = last[0].wait()
        if heard != (0 if variant == "unheard" else 1):
            raise BenchError(f"the last publish reached {heard} listener(s)")


def instructions(tree: Tree, args: argparse.Namespace, messages: int) -> int:
    """Instructions of one measured process of ``tree`` sending ``messages``."""
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
               "--cachegrind-out-file=/dev/null", sys.executable, __file__,
               *_inner_arguments(args, messages)]
    # one string hashing for every run: set and dict layouts (so their probing) the same
    env = {**tree.environment(), "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, env=env, cwd=tree.path, capture_output=True, text=True)
    found = _REFS.search(done.stderr)
    if done.returncode or not found:
        raise BenchError(f"{tree.side}: valgrind run failed: {done.stderr.strip()[-800:]}")
    return int(found[1].replace(",", ""))


def _inner_arguments(args: argparse.Namespace, messages: int) -> List[str]:
    return ["--inner", "--rooms", str(args.rooms), "--size", str(args.size), "--messages",
            str(messages), "--variant", args.variant,
            *(["--queue", args.queue] if args.queue else [])]


def per_message(tree: Tree, args: argparse.Namespace) -> float:
    """Instructions one message costs in ``tree`` (or CPU µs with ``--timed``)."""
    if args.timed:
        done = subprocess.run([sys.executable, __file__, "--timed",
                               *_inner_arguments(args, args.messages)],
                              env=tree.environment(), cwd=tree.path,
                              capture_output=True, text=True)
        found = re.search(r"cpu_us_per_message ([\d.]+)", done.stdout)
        if done.returncode or not found:
            raise BenchError(f"{tree.side}: run failed: {done.stderr.strip()[-800:]}")
        return float(found[1])
    fewer = instructions(tree, args, 0)
    more = instructions(tree, args, args.messages)
    counted: int = args.messages
    return (more - fewer) / counted


#: The measurements of ``--parts``: (label, clustered, variant).
PARTS = (("standalone, acked", False, "acked"), ("standalone, unacked", False, "unacked"),
         ("clustered, acked", True, "acked"), ("clustered, unacked", True, "unacked"),
         ("clustered, publishes answered in process", True, "answered"),
         ("clustered, no copy comes back", True, "unheard"),
         ("clustered, received from another process", True, "received"))


def parts(args: argparse.Namespace) -> int:
    """Print what clustering adds to one message, and which part of it is which."""
    if not args.queue or args.timed or args.base:
        print("handler_cost: --parts counts one tree, clustered: give --queue, without "
              "--timed or --base", file=sys.stderr)
        return 2
    tree = Tree("branch", args.branch)
    got: Dict[str, float] = {}
    try:
        for label, clustered, variant in PARTS:
            got[variant if not clustered else f"cluster-{variant}"] = value = per_message(
                tree, argparse.Namespace(**{**vars(args), "variant": variant,
                                            "queue": args.queue if clustered else None}))
            log(f"{label}: {value:,.0f} instructions per message")
    except BenchError as error:
        print(f"handler_cost: {error}", file=sys.stderr)
        return 1
    finally:
        tree.remove()
    print(f"\ninstructions per chat message, {tree.describe()} (rooms of {args.size}, "
          f"{args.messages:,} counted after {WARMUP:,}; clustered on {args.queue}):")
    for label, clustered, variant in PARTS:
        print(f"  {label:42} {got[variant if not clustered else f'cluster-{variant}']:>9,.0f}")
    rows = (
        ("clustering adds, in all", got["cluster-acked"] - got["acked"]),
        ("  Redis's part: publish, its reply, the copy read back",
         got["cluster-acked"] - got["cluster-answered"]),
        ("    of which the copy read back", got["cluster-acked"] - got["cluster-unheard"]),
        ("  answering the ack from the reply, not at once",
         got["cluster-answered"] - got["acked"]),
        ("an ack, standalone", got["acked"] - got["unacked"]),
        ("an ack, clustered", got["cluster-acked"] - got["cluster-unacked"]),
    )
    for label, value in rows:
        print(f"  {label:56} {value:>+9,.0f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", help="compare with this revision or directory")
    parser.add_argument("--branch", help="the tree measured (default: this working tree)")
    parser.add_argument("--rooms", type=int, default=20, help="rooms (default 20)")
    parser.add_argument("--size", type=int, default=10, help="sessions per room (default 10)")
    parser.add_argument("--messages", type=int, default=2000,
                        help="messages counted (default 2,000)")
    parser.add_argument("--repeat", type=int, default=1, help="measurements per side")
    parser.add_argument("--timed", action="store_true",
                        help="CPU µs per message instead of instructions (noisy)")
    parser.add_argument("--queue", help="clustered: this PRROOM_MESSAGE_QUEUE (redis://...); "
                        "Redis's own work is not counted")
    parser.add_argument("--variant", choices=VARIANTS, default="acked",
                        help="acked (default); unacked: no ack asked for; clustered only: "
                        "answered (publishes answered in the process, Redis never reached), "
                        "unheard (published where no process listens: no copy comes back), "
                        "received (messages another process published, delivered here)")
    parser.add_argument("--parts", action="store_true",
                        help="with --queue: what clustering adds to a message, part by part "
                        "(seven measurements of this working tree)")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.rooms, args.size, args.messages, args.timed, args.queue, args.variant)
        return 0
    if args.parts:
        return parts(args)
    unit = "CPU µs" if args.timed else "instructions"

    def measure(trees: List[Tree]) -> None:
        figures: Dict[str, List[float]] = {tree.side: [] for tree in trees}
        for _ in range(args.repeat):
            for tree in trees:
                figures[tree.side].append(per_message(tree, args))
                log(f"{tree.side} ({tree.describe()}): {figures[tree.side][-1]:,.0f} {unit} "
                    f"per message")
        print(f"\n{unit} per chat message (rooms of {args.size}, {args.variant}; "
              f"{args.messages:,} counted after {WARMUP:,}"
              f"{'; clustered on ' + args.queue if args.queue else ''}):")
        print_counts(trees, figures)
    return with_trees("handler_cost", args.base, args.branch, measure)


if __name__ == "__main__":
    os.environ.setdefault("PRROOM_LOG_LEVEL", "error")
    sys.exit(main())
