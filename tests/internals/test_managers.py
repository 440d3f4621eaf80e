"""IndexedManager and ClusterManager must deliver exactly what python-socketio's stock Manager
does, only faster."""
from __future__ import annotations

import itertools

import pytest
import socketio
from engineio import packet as eio_packet

from prroom.cluster.managers import ClusterManager
from prroom.cluster.room_index import IndexedManager, IndexedRoomsMixin, member_writer
from prroom.internals import packet_codec
from prroom.transport.framing import websocket_frame

NS = "/"

# Stock behaviour the index must mirror, which older python-socketio releases (still run by
# the compatibility matrix, noxfile.py) do not have yet.
HAS_PRE_CONNECT = hasattr(socketio.Manager, "pre_connect")  # python-socketio 5.18+
REFUSES_SID_ROOMS = hasattr(socketio.Manager, "is_sid_room")  # python-socketio 5.17+


def make_server(manager):
    server = socketio.Server(async_mode="threading", client_manager=manager)
    counter = itertools.count(1)
    # deterministic sids so two servers can be compared call for call
    server.eio.generate_id = lambda: f"sid{next(counter)}"
    manager.initialize()
    return server


@pytest.fixture(params=["indexed", "stock"])
def manager(request):
    mgr = IndexedManager() if request.param == "indexed" else socketio.Manager()
    make_server(mgr)
    return mgr


@pytest.fixture
def indexed():
    mgr = IndexedManager()
    make_server(mgr)
    return mgr


def connect(mgr, eio_sid, namespace=NS):
    sid = mgr.connect(eio_sid, namespace)
    assert sid is not None
    return sid


def traces_of(mgr, sid):
    """Every (namespace, room) in ``mgr.rooms`` that still mentions ``sid``."""
    return [(ns, room) for ns, rooms in mgr.rooms.items() for room, members in rooms.items()
            if sid in members or room == sid]


def participants(mgr, room, namespace=NS):
    return sorted(mgr.get_participants(namespace, room))


def test_is_a_socketio_manager():
    assert issubclass(IndexedManager, socketio.Manager)
    assert issubclass(IndexedManager, IndexedRoomsMixin)


def test_queue_unavailable_is_still_importable_from_the_managers_module():
    # host applications catch it under the path post_message's docstring names, and their
    # type checker must see it exported there
    from prroom.cluster import channels, managers

    assert managers.QueueUnavailable is channels.QueueUnavailable


def test_server_keeps_our_manager(indexed):
    assert indexed.server.manager is indexed


def test_connect_and_get_rooms(manager):
    sid = connect(manager, "eio1")
    assert manager.is_connected(sid, NS)
    assert manager.sid_from_eio_sid("eio1", NS) == sid
    assert manager.get_rooms(sid, NS) == [sid]  # the private room only, never None
    manager.enter_room(sid, NS, "pr:1")
    manager.enter_room(sid, NS, "pr:2")
    assert sorted(manager.get_rooms(sid, NS)) == sorted([sid, "pr:1", "pr:2"])
    # the server API answers the same
    assert sorted(manager.server.rooms(sid, NS)) == sorted([sid, "pr:1", "pr:2"])


def test_enter_room_twice_is_idempotent(manager):
    sid = connect(manager, "eio1")
    manager.enter_room(sid, NS, "pr:1")
    manager.enter_room(sid, NS, "pr:1")
    assert sorted(manager.get_rooms(sid, NS)) == sorted([sid, "pr:1"])
    assert participants(manager, "pr:1") == [(sid, "eio1")]


def test_leave_room(manager):
    a, b = connect(manager, "eio1"), connect(manager, "eio2")
    for sid in (a, b):
        manager.enter_room(sid, NS, "pr:1")
    manager.enter_room(a, NS, "pr:2")
    manager.leave_room(a, NS, "pr:1")
    assert sorted(manager.get_rooms(a, NS)) == sorted([a, "pr:2"])
    assert participants(manager, "pr:1") == [(b, "eio2")]
    manager.leave_room(a, NS, "pr:1")  # not in it any more: harmless
    manager.leave_room(a, NS, "never-joined")
    assert sorted(manager.get_rooms(a, NS)) == sorted([a, "pr:2"])


def test_last_leaver_removes_room(manager):
    sid = connect(manager, "eio1")
    manager.enter_room(sid, NS, "pr:1")
    manager.leave_room(sid, NS, "pr:1")
    assert "pr:1" not in manager.rooms[NS]
    assert participants(manager, "pr:1") == []


def test_disconnect_removes_every_trace_of_the_sid_only(manager):
    a, b, c = (connect(manager, f"eio{i}") for i in (1, 2, 3))
    for room in ("pr:1", "pr:2", "pr:3"):
        manager.enter_room(a, NS, room)
    manager.enter_room(b, NS, "pr:1")
    manager.enter_room(c, NS, "pr:2")
    manager.enter_room(c, NS, "pr:3")

    manager.pre_disconnect(a, NS)  # what the server does before the disconnect handler
    manager.disconnect(a, NS)

    assert traces_of(manager, a) == []
    assert not manager.is_connected(a, NS)
    assert manager.get_rooms(a, NS) == []
    assert manager.sid_from_eio_sid("eio1", NS) is None
    assert NS not in manager.pending_disconnect or a not in manager.pending_disconnect[NS]
    assert participants(manager, "pr:1") == [(b, "eio2")]
    assert participants(manager, "pr:2") == [(c, "eio3")]
    assert participants(manager, "pr:3") == [(c, "eio3")]
    assert "pr:4" not in manager.rooms[NS]
    for sid, eio in ((b, "eio2"), (c, "eio3")):
        assert manager.is_connected(sid, NS)
        assert manager.sid_from_eio_sid(eio, NS) == sid
    assert sorted(manager.get_rooms(b, NS)) == sorted([b, "pr:1"])
    assert sorted(manager.get_rooms(c, NS)) == sorted([c, "pr:2", "pr:3"])


def test_disconnect_last_sid_leaves_no_namespace(manager):
    sid = connect(manager, "eio1")
    manager.enter_room(sid, NS, "pr:1")
    manager.disconnect(sid, NS)
    assert manager.rooms == {}
    assert getattr(manager, "pending_connect", {}) == {} and manager.pending_disconnect == {}


def test_disconnect_forgets_pending_callbacks(manager):
    sid = connect(manager, "eio1")
    manager._generate_ack_id(sid, lambda *args: None)
    assert sid in manager.callbacks
    manager.disconnect(sid, NS)
    assert sid not in manager.callbacks


def test_disconnect_unknown_sid_is_harmless(manager):
    sid = connect(manager, "eio1")
    manager.disconnect("nope", NS)
    manager.disconnect(sid, "/other")
    assert manager.is_connected(sid, NS)
    assert manager.get_rooms(sid, NS) == [sid]


@pytest.mark.skipif(not HAS_PRE_CONNECT, reason="python-socketio < 5.18 has no pre_connect")
def test_disconnect_during_pending_connect(manager):
    # A connection refused by the connect handler is disconnected while still pending.
    sid = manager.pre_connect("eio1", NS)
    assert manager.is_pre_connected(sid, NS)
    manager.disconnect(sid, NS)
    assert traces_of(manager, sid) == []
    assert manager.pending_connect == {}


def test_namespaces_are_independent(manager):
    root = connect(manager, "eio1", NS)
    chat = connect(manager, "eio1", "/chat")
    manager.enter_room(root, NS, "pr:1")
    manager.enter_room(chat, "/chat", "pr:1")
    manager.disconnect(chat, "/chat")
    assert sorted(manager.get_rooms(root, NS)) == sorted([root, "pr:1"])
    assert participants(manager, "pr:1") == [(root, "eio1")]
    assert "/chat" not in manager.rooms


def test_close_room(manager):
    a, b = connect(manager, "eio1"), connect(manager, "eio2")
    for sid in (a, b):
        manager.enter_room(sid, NS, "pr:1")
        manager.enter_room(sid, NS, "pr:2")
    manager.close_room("pr:1", NS)
    assert sorted(manager.get_rooms(a, NS)) == sorted([a, "pr:2"])
    assert sorted(manager.get_rooms(b, NS)) == sorted([b, "pr:2"])
    manager.disconnect(a, NS)
    assert traces_of(manager, a) == []


@pytest.mark.skipif(not REFUSES_SID_ROOMS,
                    reason="python-socketio < 5.17 lets a socket enter another's sid room")
def test_cannot_enter_another_sids_room(manager):
    a, b = connect(manager, "eio1"), connect(manager, "eio2")
    with pytest.raises(ValueError):
        manager.enter_room(a, NS, b)
    assert manager.get_rooms(a, NS) == [a]


def test_get_rooms_before_any_connection():
    mgr = IndexedManager()  # initialize() not called yet: must not blow up
    socketio.Server(async_mode="threading", client_manager=mgr)
    assert mgr.get_rooms("nobody", NS) == []


def test_same_sequence_same_results_as_stock_manager():
    indexed, stock = IndexedManager(), socketio.Manager()
    make_server(indexed)
    make_server(stock)
    rooms = ["pr:1", "pr:2", "pr:3"]
    observed = {}
    for name, mgr in (("indexed", indexed), ("stock", stock)):
        log: list = []
        sids = [connect(mgr, f"eio{i}") for i in range(6)]
        for i, sid in enumerate(sids):
            for room in rooms[: i % 4]:
                mgr.enter_room(sid, NS, room)
        mgr.leave_room(sids[3], NS, "pr:2")
        mgr.disconnect(sids[2], NS)
        mgr.enter_room(sids[0], NS, "pr:3")
        mgr.close_room("pr:1", NS)
        mgr.enter_room(sids[5], NS, "pr:1")
        mgr.pre_disconnect(sids[5], NS)
        mgr.disconnect(sids[5], NS)
        sids.append(connect(mgr, "eio-late"))
        mgr.enter_room(sids[-1], NS, "pr:2")
        for room in rooms + [[ "pr:2", "pr:3"]] + sids:
            log.append(sorted(mgr.get_participants(NS, room)))
        for sid in sids:
            log.append((sid, sorted(mgr.get_rooms(sid, NS)), mgr.is_connected(sid, NS)))
        observed[name] = (log, mgr.rooms)
    assert observed["indexed"][0] == observed["stock"][0]
    assert observed["indexed"][1] == observed["stock"][1]


def test_emit_to_room_reaches_remaining_members():
    mgr = IndexedManager()
    server = make_server(mgr)
    sent = []
    server._send_eio_packet = lambda eio_sid, pkt: sent.append(eio_sid)
    a, b = connect(mgr, "eio1"), connect(mgr, "eio2")
    for sid in (a, b):
        mgr.enter_room(sid, NS, "pr:1")
    mgr.disconnect(a, NS)
    server.emit("pr-room-message", {"x": 1}, to="pr:1")
    assert sent == ["eio2"]


def test_initialize_again_keeps_existing_sockets(indexed):
    sid = connect(indexed, "eio1")
    indexed.enter_room(sid, NS, "pr:1")
    indexed.initialize()
    assert sorted(indexed.get_rooms(sid, NS)) == sorted([sid, "pr:1"])
    indexed.disconnect(sid, NS)
    assert traces_of(indexed, sid) == []


def test_server_disconnect_path_leaves_no_trace(manager):
    # The sequence python-socketio's Server.disconnect() runs: pre_disconnect, disconnect
    # handler, manager.disconnect(..., ignore_queue=True).
    server = manager.server
    server._send_packet = lambda eio_sid, pkt: None
    a, b = connect(manager, "eio1"), connect(manager, "eio2")
    for sid in (a, b):
        manager.enter_room(sid, NS, "pr:1")
    server.disconnect(a, namespace=NS)
    assert traces_of(manager, a) == []
    assert manager.pending_disconnect == {}
    assert participants(manager, "pr:1") == [(b, "eio2")]


def test_the_pubsub_listener_delivers_an_emit_that_names_no_host():
    # ClusterManager.emit_recoverable publishes with host_id None so that its own process,
    # whose members get the broadcast only when it comes back from Redis, delivers it
    message = {"method": "emit", "event": "e", "data": ["x", "epoch-1"], "namespace": "/",
               "room": "pr:1", "skip_sid": None, "callback": None, "host_id": None}

    class Listener(socketio.PubSubManager):
        handled: list = []

        def _publish(self, data):
            pass

        def _listen(self):
            yield message
            yield dict(message, host_id=self.host_id)

        def _handle_emit(self, data):
            self.handled.append(data)

    listener = Listener()
    listener.set_server(socketio.Server(async_mode="threading"))
    listener._thread()  # returns when _listen is exhausted
    assert listener.handled[0] is message


class _Recording:
    """A publisher that keeps what it is given, and a subscriber that hands it back."""

    def __init__(self) -> None:
        self.published: list = []

    def publish(self, kind, channel, payload):
        self.published.append((kind, channel, payload))
        return None

    def batches(self):
        yield [payload if isinstance(payload, bytes) else payload.encode()
               for _, _, payload in self.published]


def cluster_node(codec: bool = False):
    """A ClusterManager on a threading server, no Redis: publishes recorded, sends too;
    with ``codec``, the server has prroom's packet class (as prroom's servers do)."""
    manager = ClusterManager("redis://127.0.0.1:1/0", channel="prroom:test")
    manager._listening = True  # no listener thread: messages are fed by hand
    server = make_server(manager)
    if codec:
        assert packet_codec.install(server)
    manager.publisher = _Recording()  # type: ignore[assignment]
    sent: list = []
    server._send_eio_packet = lambda eio_sid, pkt: sent.append((eio_sid, pkt.encode()))
    return manager, sent


@pytest.mark.parametrize("data", [{"message": "é \n \u2028 \"quoted\"", "n": 1}, ("two", 2),
                                  None, [1, {"x": None}]])
@pytest.mark.parametrize("namespace", ["/", "/chat"])
@pytest.mark.parametrize("codec", [False, True], ids=["library-packets", "prroom-packets"])
def test_a_room_broadcast_is_encoded_once_and_reaches_every_process_as_stock_sends_it(
        data, namespace, codec):
    stock = socketio.Manager()
    stock_server = make_server(stock)
    expected: list = []
    stock_server._send_eio_packet = lambda eio_sid, pkt: expected.append((eio_sid,
                                                                          pkt.encode()))
    here, sent_here = cluster_node(codec)
    there, sent_there = cluster_node(codec)
    for mgr in (stock, here, there):
        sids = [connect(mgr, eio, namespace) for eio in ("eio1", "eio2", "eio3")]
        for sid in sids:  # basic_: no wait for a Redis confirmation of the subscription
            mgr.basic_enter_room(sid, namespace, "pr:7")
    skip = sids[0]  # the same sid on every manager: sids are generated in the same order
    stock.emit("pr-room-message", data, namespace=namespace, room="pr:7", skip_sid=skip)
    here.emit("pr-room-message", data, namespace=namespace, room="pr:7", skip_sid=skip)

    assert sent_here == expected and len(expected) == 2
    [(kind, channel, payload)] = here.publisher.published
    assert (kind, channel) == ("room", "prroom:test:pr:7")
    # the packet's text, once, as members get it
    assert payload.count(expected[0][1][1:].encode()) == 1
    there.subscriber = here.publisher  # what Redis hands the other process
    for message in there._listen():
        there._handle_emit(message)
    assert sent_there == expected


def test_a_binary_room_broadcast_takes_the_stock_path():
    here, sent = cluster_node()
    sid = connect(here, "eio1")
    here.basic_enter_room(sid, NS, "pr:7")
    here.emit("host-event", {"blob": b"\x00\x01"}, namespace=NS, room="pr:7")
    [(_, _, payload)] = here.publisher.published
    assert '"binary": true' in payload or '"binary":true' in payload
    assert len(sent) == 2  # the packet and its attachment


@pytest.mark.parametrize("data", [{"message": "hi"}, ("two", "args"), None, {"blob": b"\x00"},
                                  [1, {"nested": b"\x01\x02"}]])
@pytest.mark.parametrize("skip", [None, "first", ["first", "second"]])
@pytest.mark.parametrize("codec", [False, True], ids=["library-packets", "prroom-packets"])
def test_an_indexed_broadcast_sends_each_member_what_the_stock_manager_sends(data, skip, codec):
    sent: dict = {}
    for name, mgr in (("stock", socketio.Manager()), ("indexed", IndexedManager())):
        server = make_server(mgr)
        if codec and name == "indexed":
            assert packet_codec.install(server)
        out = sent[name] = []
        server._send_eio_packet = lambda eio_sid, pkt, out=out: out.append(
            (eio_sid, pkt.encode()))
        sids = [connect(mgr, f"eio{n}") for n in range(4)]
        for sid in sids:
            mgr.enter_room(sid, NS, "pr:3")
        skip_sid = {None: None, "first": sids[0], "second": sids[1]}
        skipped = [skip_sid[s] for s in skip] if isinstance(skip, list) else skip_sid[skip]
        server.emit("pr-room-message", data, to="pr:3", skip_sid=skipped)
        server.emit("pr-room-message", data, namespace="/elsewhere")  # nobody there
    assert sent["indexed"] == sent["stock"] and sent["stock"]


class _Writer:
    def __init__(self):
        self.packets = []

    def put_frame(self, frame):
        self.packets.append(frame)


class _Queue:
    def __init__(self, writer):
        self.writer = writer


class _Socket:
    def __init__(self, writer=None, closed=False):
        self.queue = _Queue(writer) if writer is not None else object()
        self.closed = closed


def test_a_member_writing_directly_gets_the_packet_from_the_broadcast_itself():
    direct, shadowed = _Writer(), _Writer()
    sockets = {"direct": _Socket(direct), "polling": _Socket(),
               "closed": _Socket(_Writer(), closed=True), "shadowed": _Socket(shadowed)}
    sockets["shadowed"].send = lambda packet: None  # type: ignore[attr-defined]
    fallback = []

    class Server:
        class eio:  # noqa: N801 - stands for server.eio
            pass
        _send_eio_packet = staticmethod(lambda eio_sid, packet: fallback.append(eio_sid))
    Server.eio.sockets = sockets  # type: ignore[attr-defined]
    deliver = member_writer(Server)
    packet = eio_packet.Packet(eio_packet.MESSAGE, '2["m",1]')
    members = [(f"sid-{eio_sid}", eio_sid)
               for eio_sid in ("direct", "polling", "closed", "shadowed", "gone", "skipped")]
    deliver(members, ("sid-skipped",), [packet])
    assert direct.packets == [websocket_frame('42["m",1]')] and shadowed.packets == []
    assert fallback == ["polling", "closed", "shadowed", "gone"]


def test_another_process_s_emit_reaches_handle_emit_which_runs_commands():
    # broadcast_command relies on it: a command is an emit message on the deployment
    # channel, which the stock listener hands to _handle_emit when it comes from another
    # process (its host_id differs)
    import inspect

    from socketio.pubsub_manager import PubSubManager

    from prroom.cluster.managers import COMMAND_EVENT, COMMAND_ROOM, ClusterManager

    source = inspect.getsource(PubSubManager._thread)
    assert "data.get('host_id') != self.host_id" in source
    assert "self._handle_emit(data)" in source
    ran: list = []
    manager = ClusterManager.__new__(ClusterManager)
    manager.commands = {"probe": ran.append}
    manager._handle_emit({"method": "emit", "event": COMMAND_EVENT, "room": COMMAND_ROOM,
                          "data": [{"command": "probe", "args": {"x": 1}}],
                          "namespace": "/", "host_id": "elsewhere"})
    assert ran == [{"x": 1}]


@pytest.mark.parametrize("skip", [None, "sid-1_A", ["a", "b"], 7])
@pytest.mark.parametrize("room", ["pr:1", "pr:é \"\\\n\u2028", 5])
def test_a_broadcast_header_is_the_json_the_encoder_writes(room, skip):
    from prroom.cluster.headers import _HEADER_ENCODER, broadcast_header
    expected = _HEADER_ENCODER.encode([room, skip, "/", "pr-room-message"])
    assert broadcast_header(room, skip, "/", "pr-room-message") == expected
    from prroom.cluster.headers import decoded_header
    header = expected.encode()
    assert decoded_header(header) == (room, skip, "/", "pr-room-message")
    assert decoded_header(header) == (room, skip, "/", "pr-room-message")  # remembered


def test_remembered_headers_are_bounded_and_bad_ones_refused():
    from prroom.cluster import headers
    for n in range(5000):
        headers.decoded_header(headers.broadcast_header("pr:1", f"sid-{n}", "/", "x").encode())
    assert len(headers.HEADERS) <= headers.REMEMBERED
    for bad in (b"not json", b"[1,2]", b"\xff"):
        with pytest.raises(ValueError):
            headers.decoded_header(bad)


@pytest.mark.parametrize("skip", [None, "sid-1_A", ["a", "b"], 7])
def test_a_published_head_is_the_prefix_and_header_and_remembered_only_when_safe(skip):
    from prroom.cluster import headers
    expected = f"host:{headers.broadcast_header('pr:1', skip, '/', 'e')}\n".encode()
    assert headers.published_head("host:", "pr:1", skip, "/", "e") == expected
    assert headers.published_head("host:", "pr:1", skip, "/", "e") == expected
    # 1 == True as a dict key: only str (and None) parts are remembered
    remembered = [key for key in headers.HEADS if key[2] == skip]
    assert bool(remembered) == (skip is None or isinstance(skip, str))
    assert headers.published_head("host:", "pr:1", skip, "/", True) != \
        headers.published_head("host:", "pr:1", skip, "/", 1)


def test_remembered_heads_are_bounded():
    from prroom.cluster import headers
    for n in range(5000):
        headers.published_head("host:", "pr:1", f"sid-{n}", "/", "x")
    assert len(headers.HEADS) <= headers.REMEMBERED


def test_a_broadcast_is_read_from_where_the_host_prefix_ends():
    from prroom.cluster.headers import published_head, read_broadcast
    payload = published_head("h:", "pr:1", None, "/", "e") + '2["e","a\\nb"]'.encode()
    assert read_broadcast(payload, 2) == ("pr:1", None, "/", "e", b'2["e","a\\nb"]')
    for bad in (b"h:no newline", b"h:not json\n2[]"):
        with pytest.raises(ValueError):
            read_broadcast(bad, 2)


def _recoverable(seq: int, text: str, skip_sid=None) -> dict:
    """A recoverable room packet as it comes back from Redis, its offset filled in."""
    return {"method": "emit", "event": "pr-room-message", "data": [{"message": text},
                                                                   f"e1-{seq:x}"],
            "binary": False, "namespace": NS, "room": "pr:7", "skip_sid": skip_sid,
            "callback": None, "host_id": None, "recoverable": True}


def _texts(sent, eio_sid):
    return [pkt.split('"message":"')[1].split('"')[0] for eio, pkt in sent if eio == eio_sid]


def test_a_packet_a_restore_replayed_is_not_delivered_again_when_its_live_copy_comes():
    # A restore reads what a session missed from Redis on one connection while the live
    # copies arrive on another: the read may be ahead of the listener.  The restored
    # socket already has those packets; the other members still need them.
    manager, sent = cluster_node()
    alice, bob = connect(manager, "eio1"), connect(manager, "eio2")
    manager.basic_enter_room(alice, NS, "pr:7")
    manager._handle_emit(_recoverable(4, "m4"))
    manager.basic_enter_room(bob, NS, "pr:7")  # restored: replayed m5 and m6 from Redis
    manager.replayed("pr:7", bob, 6)
    manager.replayed("pr:7", "gone", 3)  # at or before what was delivered: no mark
    for seq in (5, 6, 7):
        manager._handle_emit(_recoverable(seq, f"m{seq}"))
    manager._handle_emit(_recoverable(7, "m7"))  # a duplicate of the stream's: dropped
    assert _texts(sent, "eio1") == ["m4", "m5", "m6", "m7"]
    assert _texts(sent, "eio2") == ["m7"]
    assert manager._replayed == {}  # caught up: nothing left to remember


def test_a_replayed_socket_is_skipped_beside_the_packet_s_own_skip():
    manager, sent = cluster_node()
    alice, bob, carol = (connect(manager, eio) for eio in ("eio1", "eio2", "eio3"))
    for sid in (alice, bob, carol):
        manager.basic_enter_room(sid, NS, "pr:7")
    delivered: list = []
    manager.on_delivered = delivered.append
    manager.counted_event = "pr-room-message"
    manager.replayed("pr:7", bob, 9)
    manager._handle_emit(_recoverable(9, "typed", skip_sid=alice))
    assert [eio for eio, _ in sent] == ["eio3"]
    assert delivered == [1]  # the metrics count what was sent
