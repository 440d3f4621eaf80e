"""The cluster's Redis connections: batching, failures, subscriptions (channels.py,
publisher.py, subscriber.py).

The batching logic runs against a scripted connection, so what goes out in which write is
exact; the redis-py calls it relies on (``pack_commands``, ``send_packed_command``,
``read_response``, ``can_read``, RESP2 and RESP3 replies, the pure-Python and hiredis
parsers) are checked against a real private redis-server.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, List, Tuple

import pytest
import redis
from redis.exceptions import ResponseError

from prroom.cluster.channels import QueueUnavailable, pubsub_mode, redis_has_sharded_pubsub
from prroom.cluster.publisher import Publisher, Ticket
from prroom.cluster.resp import frame
from prroom.cluster.subscriber import Subscriber
from prroom.internals import redis_sockets

WAIT = 5.0
_opened: list = []  # publishers and subscribers of the running test


def closed_after_the_test(channel):
    """``channel`` (a Publisher or Subscriber), closed when the test ends: its tasks would
    otherwise go on reconnecting to a Redis that is gone, taking CPU from later tests."""
    _opened.append(channel)
    return channel


@pytest.fixture(autouse=True)
def _close_channels():
    yield
    while _opened:
        _opened.pop().close()


def decoded(data: bytes) -> List[tuple]:
    """The commands of a write in RESP (what the publisher sends), each a tuple of str."""
    commands, lines = [], iter(data.split(b"\r\n"))
    for head in lines:
        if not head:
            continue
        assert head[:1] == b"*", head
        arguments = []
        for _ in range(int(head[1:])):
            length = int(next(lines)[1:])
            argument = next(lines)
            assert len(argument) == length, (argument, length)
            arguments.append(argument.decode())
        commands.append(tuple(arguments))
    return commands


class ScriptedConnection:
    """Stands in for a redis-py Connection: records writes, answers from a script."""

    def __init__(self, answer: Callable = lambda command: 1) -> None:
        self.answer = answer
        self.writes: List[list] = []
        self.replies: "queue.Queue" = queue.Queue()
        self.connects = 0
        self.closed = False
        self.fail_send = False

    def connect(self) -> None:
        self.connects += 1

    def pack_commands(self, commands):
        return list(commands)

    def send_packed_command(self, commands, check_health=True) -> None:
        if self.fail_send:
            raise redis.ConnectionError("connection reset")
        commands = [command for item in commands
                    for command in (decoded(item) if isinstance(item, bytes) else [item])]
        self.writes.append(commands)
        for command in commands:
            self.replies.put(self.answer(command))

    def send_command(self, *args, **kwargs) -> None:
        self.send_packed_command([args])

    def can_read(self, timeout: float = 0) -> bool:
        try:
            self._next = self.replies.get(timeout=timeout)
        except queue.Empty:
            return False
        return True

    def read_response(self):
        reply = self._next
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def disconnect(self) -> None:
        self.closed = True


class Tasks:
    """``start`` for the publisher: tasks wait until the test lets them run, then run."""

    def __init__(self) -> None:
        self.held: List[Callable] = []
        self.released = False

    def start(self, target: Callable) -> None:
        if self.released:
            threading.Thread(target=target, daemon=True).start()
        else:
            self.held.append(target)

    def run_all(self) -> None:
        self.released = True
        held, self.held = self.held, []
        for target in held:
            threading.Thread(target=target, daemon=True).start()


def publisher_with(connection, sharded: bool = True):
    tasks = Tasks()
    made = []

    def connect():
        made.append(connection)
        return connection
    publisher = closed_after_the_test(Publisher(connect, tasks.start, lambda c: sharded))
    return publisher, tasks, made


def test_what_one_turn_published_leaves_in_one_write_in_order():
    connection = ScriptedConnection(answer=lambda command: len(command[2]))
    publisher, tasks, _ = publisher_with(connection)
    tickets = [publisher.publish("room", f"ch:{n}", "x" * n) for n in range(1, 6)]
    tickets.append(publisher.publish("deployment", "deploy", "bye"))
    tasks.run_all()  # the writer runs once the publishers are done: one batch
    assert [ticket.wait() for ticket in tickets] == [1, 2, 3, 4, 5, 3]
    assert connection.writes == [[("SPUBLISH", f"ch:{n}", "x" * n) for n in range(1, 6)]
                                 + [("PUBLISH", "deploy", "bye")]]
    assert publisher.healthy and publisher.batches == 1


def test_other_commands_share_the_publishes_batch_in_order():
    connection = ScriptedConnection(answer=lambda command: command[0])
    publisher, tasks, _ = publisher_with(connection)
    tickets = [publisher.publish("room", "ch", "a"), publisher.call("EVAL", "return 1", 0),
               publisher.publish("room", "ch", "b")]
    tasks.run_all()
    assert [ticket.wait() for ticket in tickets] == ["SPUBLISH", "EVAL", "SPUBLISH"]
    assert connection.writes == [[("SPUBLISH", "ch", "a"), ("EVAL", "return 1", "0"),
                                  ("SPUBLISH", "ch", "b")]]


def test_a_ticket_calls_back_with_its_outcome_instead_of_being_waited_for():
    def answer(command):
        return ResponseError("refused") if command[2] == "bad" else 1
    connection = ScriptedConnection(answer)
    publisher, tasks, _ = publisher_with(connection)
    outcomes: "queue.Queue" = queue.Queue()

    def outcome(ticket) -> None:
        try:
            outcomes.put(ticket.result())
        except QueueUnavailable:
            outcomes.put("unavailable")
    good, bad = publisher.publish("room", "ch", "ok"), publisher.publish("room", "ch", "bad")
    good.then(outcome)
    bad.then(lambda ticket: 1 / 0)  # a broken callback: logged, the others still run
    bad.then(outcome)
    tasks.run_all()
    assert [outcomes.get(timeout=WAIT), outcomes.get(timeout=WAIT)] == [1, "unavailable"]
    good.then(outcome)  # after the batch ended: called at once
    assert outcomes.get_nowait() == 1


def test_an_answered_ticket_is_one_whose_reply_came_already():
    ticket = Ticket.answered(3)
    told: List[Any] = []
    ticket.then(told.append)  # called at once
    assert told == [ticket] and ticket.wait() == 3 and ticket.result() == 3


def test_a_failed_batch_calls_back_too():
    connection = ScriptedConnection()
    connection.fail_send = True
    publisher, tasks, _ = publisher_with(connection)
    told: "queue.Queue" = queue.Queue()
    publisher.publish("room", "ch", "m").then(told.put)
    tasks.run_all()
    with pytest.raises(QueueUnavailable):
        told.get(timeout=WAIT).result()


def test_rooms_use_plain_publish_when_the_server_has_no_sharded_pubsub():
    connection = ScriptedConnection()
    publisher, tasks, _ = publisher_with(connection, sharded=False)
    ticket = publisher.publish("room", "ch", "m")
    tasks.run_all()
    ticket.wait()
    assert connection.writes == [[("PUBLISH", "ch", "m")]]


def test_an_error_reply_fails_only_its_own_command():
    def answer(command):
        return ResponseError("no such thing") if command[2] == "bad" else 1
    connection = ScriptedConnection(answer)
    publisher, tasks, _ = publisher_with(connection)
    good, bad, after = (publisher.publish("room", "ch", text) for text in ("ok", "bad", "ok"))
    tasks.run_all()
    assert good.wait() == 1 and after.wait() == 1
    with pytest.raises(QueueUnavailable):
        bad.wait()


def test_a_lost_connection_fails_the_unanswered_commands_and_never_resends_them():
    replies = iter([1, 1, redis.ConnectionError("Connection closed by server."), 1])
    connection = ScriptedConnection(answer=lambda command: next(replies))
    publisher, tasks, _ = publisher_with(connection)
    tickets = [publisher.publish("room", "ch", str(n)) for n in range(4)]
    tasks.run_all()
    assert [tickets[0].wait(), tickets[1].wait()] == [1, 1]  # those reached Redis
    for ticket in tickets[2:]:
        with pytest.raises(QueueUnavailable):
            ticket.wait()
    assert len(connection.writes) == 1  # a message is never delivered twice
    assert connection.closed and not publisher.healthy


def test_while_redis_is_away_batches_fail_at_once_until_it_is_back():
    connection = ScriptedConnection()
    connection.fail_send = True
    publisher, tasks, made = publisher_with(connection)
    first = publisher.publish("room", "ch", "1")
    tasks.run_all()
    with pytest.raises(QueueUnavailable):
        first.wait()
    attempts = len(made)
    second = publisher.publish("room", "ch", "2")
    with pytest.raises(QueueUnavailable):
        second.wait()
    assert len(made) == attempts  # no connect attempt per message while Redis is away
    connection.fail_send = False
    publisher.reset()  # the subscriber reached Redis again
    assert publisher.healthy
    third = publisher.publish("room", "ch", "3")
    assert third.wait() == 1


# -- subscriptions -----------------------------------------------------------------------

class ScriptedSubscription(ScriptedConnection):
    """Confirms subscriptions only when the test says so (Redis is slow to answer)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: List[tuple] = []

    def send_packed_command(self, commands, check_health=True) -> None:
        for command in commands:
            if command[0] == "PING":
                self.replies.put([b"pong", b""])
            else:
                self.sent.append(command)

    def confirm(self, kind: bytes, channel: str) -> None:
        self.replies.put([kind, channel.encode(), 1])


def start_subscriber(connection) -> Subscriber:
    subscriber = closed_after_the_test(Subscriber(lambda: connection, "deploy",
                                                  lambda seconds: None, lambda c: True))
    subscriber.ping_interval = 0.05
    threading.Thread(target=lambda: list(subscriber.messages()), daemon=True).start()
    return subscriber


def until(check: Callable[[], object]) -> None:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if check():
            return
        done.wait(0.01)
    raise AssertionError("condition not reached")


def test_a_first_join_waits_for_redis_to_confirm_the_subscription():
    connection = ScriptedSubscription()
    subscriber = start_subscriber(connection)
    until(lambda: subscriber.connected)
    assert connection.sent == [("SUBSCRIBE", "deploy")]
    assert not subscriber.healthy  # the deployment channel is not confirmed yet
    connection.confirm(b"subscribe", "deploy")
    until(lambda: subscriber.healthy)

    pending = subscriber.want("deploy:pr:1")
    assert ("SSUBSCRIBE", "deploy:pr:1") in connection.sent
    assert pending is not None and not pending.is_set()
    assert subscriber.want("deploy:pr:1") is pending  # a second joiner waits for the same
    connection.confirm(b"ssubscribe", "deploy:pr:1")
    assert pending.wait(WAIT)
    assert subscriber.want("deploy:pr:1") is None  # confirmed: nothing to wait for


def test_an_old_confirmation_does_not_release_a_newer_subscription():
    connection = ScriptedSubscription()
    subscriber = start_subscriber(connection)
    until(lambda: subscriber.connected)
    connection.confirm(b"subscribe", "deploy")
    first = subscriber.want("deploy:pr:2")
    subscriber.drop("deploy:pr:2")  # the only member left before Redis answered
    assert first is not None and first.is_set()  # nobody waits on a subscription that is going away
    again = subscriber.want("deploy:pr:2")
    assert again is not None
    assert connection.sent[-3:] == [("SSUBSCRIBE", "deploy:pr:2"),
                                    ("SUNSUBSCRIBE", "deploy:pr:2"),
                                    ("SSUBSCRIBE", "deploy:pr:2")]
    connection.confirm(b"ssubscribe", "deploy:pr:2")  # answers the first SSUBSCRIBE
    connection.confirm(b"sunsubscribe", "deploy:pr:2")
    assert not again.wait(0.2)
    connection.confirm(b"ssubscribe", "deploy:pr:2")  # now the second one
    assert again.wait(WAIT)


def subscribed_to_two_rooms() -> Tuple[ScriptedSubscription, Subscriber]:
    """A healthy subscriber on a scripted connection, in rooms ``deploy:pr:1`` and ``:2``."""
    connection = ScriptedSubscription()
    subscriber = start_subscriber(connection)
    until(lambda: subscriber.connected)
    connection.confirm(b"subscribe", "deploy")
    for room in ("deploy:pr:1", "deploy:pr:2"):
        subscriber.want(room)
        connection.confirm(b"ssubscribe", room)
    until(lambda: subscriber.healthy)
    return connection, subscriber


def test_after_a_reconnect_every_wanted_room_is_subscribed_again_before_healthy():
    connection, subscriber = subscribed_to_two_rooms()
    connection.sent.clear()
    connection.replies.put(redis.ConnectionError("Connection closed by server."))
    until(lambda: connection.sent)  # reconnected
    assert sorted(connection.sent) == [("SSUBSCRIBE", "deploy:pr:1"),
                                       ("SSUBSCRIBE", "deploy:pr:2"), ("SUBSCRIBE", "deploy")]
    connection.confirm(b"subscribe", "deploy")
    connection.confirm(b"ssubscribe", "deploy:pr:1")
    until(lambda: not connection.replies.qsize())
    assert not subscriber.healthy  # one room is not back yet
    connection.confirm(b"ssubscribe", "deploy:pr:2")
    until(lambda: subscriber.healthy)


def test_a_channel_the_cluster_unsubscribed_is_resubscribed_after_a_reconnect():
    connection, subscriber = subscribed_to_two_rooms()
    subscriber.drop("deploy:pr:2")
    connection.confirm(b"sunsubscribe", "deploy:pr:2")  # the answer to our own drop
    until(lambda: not connection.replies.qsize())
    assert subscriber.healthy and subscriber.connected
    connection.sent.clear()
    # Redis Cluster moved the slot away: it unsubscribes us, unasked
    connection.confirm(b"sunsubscribe", "deploy:pr:1")
    until(lambda: connection.sent)  # reconnected, and asking again (of the slot's new owner)
    assert sorted(connection.sent) == [("SSUBSCRIBE", "deploy:pr:1"), ("SUBSCRIBE", "deploy")]
    assert not subscriber.healthy
    connection.confirm(b"subscribe", "deploy")
    connection.confirm(b"ssubscribe", "deploy:pr:1")
    until(lambda: subscriber.healthy)


def test_a_moved_reply_gives_up_the_connection_and_fails_its_batch():
    from redis.exceptions import MovedError

    connection = ScriptedConnection(answer=lambda command: MovedError("866 127.0.0.1:7001"))
    publisher, tasks, made = publisher_with(connection)
    ticket = publisher.publish("room", "ch", "1")
    tasks.run_all()
    with pytest.raises(QueueUnavailable):
        ticket.wait()
    assert connection.closed and not publisher.healthy  # the next batch connects again


# -- against a real Redis: the redis-py calls relied on ----------------------------------

def _parsers():
    # redis-py 4 names them in redis.connection; 5+ in redis._parsers (RESP2's Python parser
    # becomes the RESP3 one when the connection speaks RESP3)
    try:
        from redis._parsers import _HiredisParser as hiredis_parser
        from redis._parsers import _RESP2Parser as python_parser
    except ImportError:
        python_parser = redis.connection.PythonParser  # type: ignore[misc]
        hiredis_parser = redis.connection.HiredisParser  # type: ignore[misc]
    parsers: List[Tuple[str, Any]] = [("python", python_parser)]
    try:
        import hiredis  # noqa: F401
        parsers.append(("hiredis", hiredis_parser))
    except ImportError:
        pass
    return parsers


def _protocols():
    import inspect
    base = getattr(redis.connection, "AbstractConnection", redis.connection.Connection)
    params = inspect.signature(base.__init__).parameters
    return [2, 3] if "protocol" in params else [None]  # redis-py 4 speaks RESP2 only


@pytest.mark.parametrize("reads", ["raw", "redis-py"])
@pytest.mark.parametrize("protocol", _protocols())
@pytest.mark.parametrize("parser", [p for _, p in _parsers()], ids=[n for n, _ in _parsers()])
def test_publisher_and_subscriber_on_a_real_redis(redis_server, parser, protocol, reads,
                                                  monkeypatch):
    monkeypatch.setattr(redis_sockets, "enabled", reads == "raw")  # the seam, or its fallback
    options = {"parser_class": parser}
    if protocol is not None:
        options["protocol"] = protocol
    client = redis.Redis.from_url(redis_server.url, **options)
    connect = client.connection_pool.make_connection

    def start(target):
        threading.Thread(target=target, daemon=True).start()
    mode = pubsub_mode("auto")
    subscriber = closed_after_the_test(Subscriber(connect, "real", lambda seconds: None, mode))
    received: "queue.Queue" = queue.Queue()
    start(lambda: [received.put(message)  # type: ignore[func-returns-value]
                   for message in subscriber.messages()])
    until(lambda: subscriber.healthy and subscriber.connected)
    pending = subscriber.want("real:pr:1")
    assert pending is None or pending.wait(WAIT)

    publisher = closed_after_the_test(Publisher(connect, start, mode))
    tickets = [publisher.publish("room", "real:pr:1", f"m{n}") for n in range(3)]
    tickets.append(publisher.publish("room", "real:pr:elsewhere", "nobody hears this"))
    assert [ticket.wait() for ticket in tickets] == [1, 1, 1, 0]  # receivers per message
    assert [received.get(timeout=WAIT) for _ in range(3)] == [b"m0", b"m1", b"m2"]
    subscriber.drop("real:pr:1")
    until(lambda: publisher.publish("room", "real:pr:1", "late").wait() == 0)


def test_closed_channels_stop_their_tasks_and_refuse_later_publishes(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    connect = client.connection_pool.make_connection
    threads: List[threading.Thread] = []

    def start(target):
        threads.append(threading.Thread(target=target, daemon=True))
        threads[-1].start()
    mode = pubsub_mode("auto")
    subscriber = Subscriber(connect, "closing", lambda seconds: None, mode)
    start(lambda: list(subscriber.messages()))
    until(lambda: subscriber.healthy and subscriber.connected)
    publisher = Publisher(connect, start, mode)
    assert publisher.publish("room", "closing:pr:1", "before").wait() == 0
    assert len(threads) == 3  # the listener, the publisher's writer and its reader

    subscriber.close()
    publisher.close()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive(), thread
    assert not subscriber.connected
    with pytest.raises(QueueUnavailable):
        publisher.publish("room", "closing:pr:1", "after").wait()


def test_redis_7_has_sharded_pubsub(redis_server):
    connection = redis.Redis.from_url(redis_server.url).connection_pool.make_connection()
    connection.connect()
    assert redis_has_sharded_pubsub(connection) is True
    assert pubsub_mode("plain")(connection) is False


def test_the_recovery_script_numbers_keeps_and_publishes_in_one_step(redis_server):
    # the script the clustered manager pipelines for a recoverable broadcast (recovery_redis)
    from prroom.cluster.publisher import ROOM_PUBLISH
    from prroom.cluster.recovery_store import PUBLISH_SCRIPT, RedisRecoveryStore, earlier_ack

    client = redis.Redis.from_url(redis_server.url)
    connect = client.connection_pool.make_connection

    def start(target):
        threading.Thread(target=target, daemon=True).start()
    mode = pubsub_mode("auto")
    subscriber = closed_after_the_test(Subscriber(connect, "script", lambda seconds: None, mode))
    received: "queue.Queue" = queue.Queue()
    start(lambda: [received.put(message)  # type: ignore[func-returns-value]
                   for message in subscriber.messages()])
    until(lambda: subscriber.healthy and subscriber.connected)
    pending = subscriber.want("script:pr:7")
    assert pending is None or pending.wait(WAIT)

    store = RedisRecoveryStore(redis_server.url, "script", window=30, cap=2, max_sessions=10)
    publisher = closed_after_the_test(Publisher(connect, start, mode))
    sha = publisher.load_script(PUBLISH_SCRIPT)
    client.script_flush()  # a Redis that forgot it: loaded again on (re)connect

    def publish(text):
        keys, args = store.publish_args(7, '{"event": "e", "data": ["' + text + '", ', "]}",
                                        ROOM_PUBLISH,
                                        "script:pr:7")
        return publisher.run_script(sha, keys, args)
    assert [publish(f"m{n}").wait() for n in range(3)] == [1, 2, 3]  # the sequence
    epoch = store.epoch()
    assert [received.get(timeout=WAIT) for _ in range(3)] == [
        f'{{"event": "e", "data": ["m{n}", "{epoch}-{n + 1:x}"]}}'.encode() for n in range(3)]
    # the cap keeps the last two, and remembers that the first was dropped
    assert [entry_id for entry_id, _ in client.xrange(store.room_key(7)) or []] == [b"0-2",
                                                                                b"0-3"]
    assert store.missed_by_room([7], 0) is None
    assert [packet.data for packet in (store.missed_by_room([7], 1) or {})[7]] == ["m1", "m2"]
    assert store.parse(f"{epoch}-3") == 3 and store.parse("other-3") is None

    # a send with a clientMessageId: published once, whichever process its retry reaches
    def send(text, client_id, ack):
        keys, args = store.publish_args(7, '{"event": "e", "data": ["' + text + '", ', "]}",
                                        ROOM_PUBLISH, "script:pr:7",
                                        store.first_send("user:alice", 7, client_id, ack))
        return publisher.run_script(sha, keys, args).wait()
    assert send("first", "c1", {"ok": True, "id": "m4"}) == 4
    assert earlier_ack(send("retry", "c1", {"ok": True, "id": "m5"})) == {"ok": True, "id": "m4"}
    assert received.get(timeout=WAIT) == (
        f'{{"event": "e", "data": ["first", "{epoch}-4"]}}'.encode())
    assert send("other", "c2", {"ok": True, "id": "m6"}) == 5  # the retry took no number
    assert b'"other"' in received.get(timeout=WAIT) and received.empty()
    # an ack kept after a failed publish answers a retry too
    store.remember_sent("user:alice", 7, "c3", {"ok": True, "id": "m7", "warning": "w"})
    assert (earlier_ack(send("late", "c3", {"ok": True, "id": "m8"})) or {}).get("id") == "m7"


def test_recovery_sessions_are_one_shot_with_or_without_the_pipeline(redis_server):
    from prroom.cluster.recovery_store import RedisRecoveryStore
    from prroom.core.recovery import Session

    client = redis.Redis.from_url(redis_server.url)
    connect = client.connection_pool.make_connection

    def start(target):
        threading.Thread(target=target, daemon=True).start()
    piped = closed_after_the_test(Publisher(connect, start, pubsub_mode("auto")))
    for via in (None, piped.call):
        store = RedisRecoveryStore(redis_server.url, "oneshot", window=30, cap=5,
                                   max_sessions=2)
        if via is not None:
            store.send_via(via)
        seq, offset = store.marker()
        assert store.parse(offset) == seq and store.fresh_marker()[1].endswith("-0")
        for pid in ("p1", "p2", "p3"):  # at most two kept: p1 is displaced
            store.persist(Session(pid, "alice", {7: "alice"}, None, "sid", seq, 0.0,
                                  {7: seq}, False), [None, 0])
        assert store.take("p1") is None
        assert store.mark_left_announced("p2") is True
        taken = store.take("p2")
        assert taken is not None and taken[0].rooms == {7: "alice"} and taken[0].left_announced
        assert store.take("p2") is None and store.mark_left_announced("p2") is False
        assert store.take("p3") is not None


def test_commands_are_framed_as_redis_py_frames_them():
    packer = redis.connection.Connection()
    for command in [("PUBLISH", "ch", "héllo\r\nworld"), ("EVALSHA", "ab" * 20, 2, "k", b"\x00b",
                                                            -3, 1.5, "")]:
        assert frame(command) == b"".join(packer.pack_command(*command))
    with pytest.raises(TypeError):
        frame(("SET", "k", None))


@pytest.mark.parametrize("kind", ["room", "deployment"])
def test_a_publish_reaches_subscribers_byte_for_byte_as_text_or_utf8(redis_server, kind):
    client = redis.Redis.from_url(redis_server.url)
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(f"framing:{kind}:é")
    assert listener.get_message(timeout=5) is None  # the subscription's confirmation
    publisher = closed_after_the_test(Publisher(
        client.connection_pool.make_connection,
        lambda target: threading.Thread(target=target, daemon=True).start(),
        pubsub_mode("plain")))
    payloads: List[Any] = ["héllo\r\nworld", "héllo\r\nworld".encode(), "", "$3\r\n*1\r\n"]
    tickets = [publisher.publish(kind, f"framing:{kind}:é", payload) for payload in payloads]
    assert [ticket.wait() for ticket in tickets] == [1, 1, 1, 1]  # one subscriber each
    got = [listener.get_message(timeout=5) for _ in payloads]
    assert [message["data"] for message in got if message] == [
        payload if isinstance(payload, bytes) else payload.encode() for payload in payloads]
    listener.close()


@pytest.mark.parametrize("reads", ["raw", "redis-py"])
def test_replies_of_every_shape_and_size_reach_their_callers(redis_server, reads, monkeypatch):
    monkeypatch.setattr(redis_sockets, "enabled", reads == "raw")
    options = {"protocol": 2} if _protocols() != [None] else {}  # redis-py 4: RESP2 only
    client = redis.Redis.from_url(redis_server.url, **options)
    connect = client.connection_pool.make_connection

    def start(target):
        threading.Thread(target=target, daemon=True).start()
    publisher = closed_after_the_test(Publisher(connect, start, pubsub_mode("auto")))
    big = "x" * 300_000  # several reads' worth
    tickets = [publisher.call("SET", "shapes:big", big), publisher.call("GET", "shapes:big"),
               publisher.call("GET", "shapes:none"),
               publisher.call("EVAL", "return {1, 'two', {3}, false}", 0),
               publisher.call("EVAL", "return redis.error_reply('NOPE not today')", 0),
               publisher.call("INCR", f"shapes:n:{reads}")]
    assert [ticket.wait() for ticket in tickets[:4]] == [
        b"OK", big.encode(), None, [1, b"two", [3], None]]
    with pytest.raises(QueueUnavailable, match="NOPE not today"):
        tickets[4].wait()
    assert tickets[5].wait() == 1  # the replies after an error reply still match
