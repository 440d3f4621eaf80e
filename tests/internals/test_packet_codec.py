"""prroom.internals.packet_codec: python-socketio's packets, encoded and decoded to the same
bytes and objects with kept codecs.

The first tests fail loudly when python-socketio or python-engineio change what the faster
class relies on (prroom would then quietly use the library's codec, or a wrong one).
"""
import inspect
import json
import math
import re

import pytest
import socketio
from engineio import json as engineio_json
from socketio import packet as sio_packet

from prroom.internals import packet_codec

# -- what the codec stands in for ---------------------------------------------------------


def test_engineio_json_still_refuses_big_integers_through_parse_int():
    source = inspect.getsource(engineio_json.loads)
    assert "kwargs['parse_int'] = _safe_int" in source
    assert engineio_json._safe_int("12") == 12
    with pytest.raises(ValueError):
        engineio_json._safe_int("1" * 101)


def test_socketio_packets_still_use_their_json_attribute_and_data_is_binary():
    assert sio_packet.Packet.json is engineio_json
    assert "self.json.dumps(data, separators=(',', ':'))" in \
        inspect.getsource(sio_packet.Packet.encode)
    assert "self.json.loads(ep)" in inspect.getsource(sio_packet.Packet.decode)
    assert "self.data_is_binary(" in inspect.getsource(sio_packet.Packet.__init__)
    assert isinstance(inspect.getattr_static(sio_packet.Packet, "data_is_binary"), classmethod)


def test_servers_and_their_managers_build_packets_from_packet_class():
    server = socketio.Server()
    assert server.packet_class is sio_packet.Packet
    assert "self.server.packet_class(" in inspect.getsource(socketio.Manager.emit)
    assert "self.packet_class(encoded_packet=data)" in \
        inspect.getsource(socketio.Server._handle_eio_message)


def test_install_takes_only_the_default_codec():
    server = socketio.Server()
    assert packet_codec.install(server) is True
    assert server.packet_class is packet_codec.Packet
    assert packet_codec.install(server) is True
    class OwnPacket(sio_packet.Packet):
        pass
    assert packet_codec.install(socketio.Server(serializer=OwnPacket)) is False


def test_a_hosts_own_json_module_is_left_alone():
    try:
        server = socketio.Server(json=json)  # python-socketio sets it on Packet itself
        assert packet_codec.install(server) is False
        assert server.packet_class is sio_packet.Packet
    finally:
        sio_packet.Packet.json = engineio_json


# -- same results ------------------------------------------------------------------------

PAYLOADS = [
    ["join-pr-room", {"pullRequestId": 123, "username": "johndoe"}],
    ["send-message-to-pr-room", {"pullRequestId": 9007199254740991, "username": "é ü 漢字 🙂",
                                 "message": "line\nnext\t\"quoted\" \\ </script>"}],
    ["typing", {"pullRequestId": 1.5, "nested": [1, [2, {"a": None, "b": True}]]}],
    ["e", {"x": -0.0, "y": 1e300, "z": False}, "second", 3],
    ["e", "\u2028\u2029\x00\x1f"],
    [{"ok": False, "error": {"code": "invalid-field", "field": "pullRequestId"}}],
    [],
    ["e", {}],
]


@pytest.mark.parametrize("data", PAYLOADS)
def test_packets_encode_to_the_same_text(data):
    for kind in (sio_packet.EVENT, sio_packet.ACK):
        for namespace in (None, "/", "/other"):
            theirs = sio_packet.Packet(kind, data=data, namespace=namespace, id=7)
            ours = packet_codec.Packet(kind, data=data, namespace=namespace, id=7)
            assert ours.encode() == theirs.encode()
            assert ours.packet_type == theirs.packet_type


@pytest.mark.parametrize("data", PAYLOADS)
def test_plain_text_is_the_packets_text_on_the_default_namespace(data):
    for kind, ack_id in ((sio_packet.EVENT, None), (sio_packet.ACK, 7), (sio_packet.ACK, 0)):
        packet = sio_packet.Packet(kind, data=data, namespace="/", id=ack_id)
        assert packet_codec.plain_text(kind, data, ack_id) == packet.encode()


@pytest.mark.parametrize("data", [["e", b"x"], ["e", {"a": [bytearray(b"x")]}], ["e", {1j}],
                                  ("tuple", b"x"), ["e", memoryview(b"x")]])
def test_plain_text_leaves_binary_and_non_json_data_to_the_packet(data):
    assert packet_codec.plain_text(sio_packet.EVENT, data) is None
    assert packet_codec.plain_text(sio_packet.ACK, data, 7) is None
    # and the encoder it keeps is right for the next packet
    assert packet_codec.plain_text(sio_packet.EVENT, ["e", 1]) == '2["e",1]'


@pytest.mark.parametrize("data", PAYLOADS)
def test_packets_decode_to_the_same_objects(data):
    encoded = sio_packet.Packet(sio_packet.EVENT, data=data, id=12).encode()
    theirs = sio_packet.Packet(encoded_packet=encoded)
    ours = packet_codec.Packet(encoded_packet=encoded)
    assert (ours.packet_type, ours.namespace, ours.id, ours.data) == \
        (theirs.packet_type, theirs.namespace, theirs.id, theirs.data)
    assert json.dumps(ours.data) == json.dumps(theirs.data)  # -0.0, floats, order


@pytest.mark.parametrize("text", [
    '2["e",' + "1" * 101 + "]",  # engine.io's big-integer refusal
    '2["e",{"a":1',
    '2["e",NaN]',
    '2["e",\ufeff1]',
    '2["e",1]trailing',
])
def test_bad_or_odd_input_fails_or_passes_exactly_as_before(text):
    def outcome(cls):
        try:
            return "ok", cls(encoded_packet=text).data
        except Exception as exc:
            return "error", type(exc)
    theirs, ours = outcome(sio_packet.Packet), outcome(packet_codec.Packet)
    assert (ours[0], str(ours[1])) == (theirs[0], str(theirs[1]))


def test_nan_and_infinity_encode_as_before():
    data = ["e", {"a": math.nan, "b": math.inf}]
    assert packet_codec.Packet(data=data).encode() == sio_packet.Packet(data=data).encode()


@pytest.mark.parametrize("data,binary", [
    (None, False), ("text", False), (1, False), ([], False), ({}, False),
    (b"x", True), (bytearray(b"x"), True), (["e", {"a": [1, {"b": b"x"}]}], True),
    (["e", {"a": [1, {"b": "x"}]}], False), (("tuple", b"x"), False),  # as python-socketio
    ({"k": b"x"}, True), ([["deep", [[[b""]]]]], True),
    (type("Sub", (list,), {})([b"x"]), True), (type("Sub", (dict,), {})(k=b"x"), True),
    (["e", {"id": "m1", "n": 1.5, "ok": True, "no": None, "tags": ["a", 2]}], False),
    (memoryview(b"x"), False),  # as python-socketio: not a binary type to it
])
def test_binary_detection_answers_the_same(data, binary):
    assert sio_packet.Packet.data_is_binary(data) is binary
    assert packet_codec.Packet.data_is_binary(data) is binary
    if binary and isinstance(data, list):
        assert packet_codec.Packet(data=data).packet_type == sio_packet.BINARY_EVENT


def test_the_codec_falls_back_to_engineio_json_for_other_calls():
    codec = packet_codec.PacketJSON()
    assert codec.loads(b'{"a": 1}') == {"a": 1}
    assert codec.loads('{"a": 1}', parse_float=str) == {"a": 1}
    assert codec.dumps({"a": 1}) == '{"a": 1}'
    assert codec.dumps({"a": 1}, separators=(",", ":")) == '{"a":1}'
    assert codec.JSONDecodeError is json.JSONDecodeError


def test_json_still_builds_its_c_encoder_per_call_from_these_arguments():
    # the codec keeps one encoder built exactly so (json.encoder.JSONEncoder.iterencode)
    # (Python 3.13 passes the indent it normalised first; prroom's encoder has none)
    source = " ".join(inspect.getsource(json.encoder.JSONEncoder.iterencode).split())
    assert re.search(r"c_make_encoder\( markers, self\.default, _encoder, (self\.)?indent, "
                     r"self\.key_separator, self\.item_separator, self\.sort_keys, "
                     r"self\.skipkeys, self\.allow_nan\)", source)


def test_an_encode_that_fails_leaves_the_next_ones_right():
    codec = packet_codec.PacketJSON()
    loop: dict = {}
    loop["self"] = loop
    shared = {"k": [1]}
    for bad, error in ((loop, ValueError), ({"b": b"x"}, TypeError), ([shared, loop], ValueError)):
        with pytest.raises(error) as theirs:
            json.dumps(bad, separators=(",", ":"))
        with pytest.raises(error) as ours:
            codec.dumps(bad, separators=(",", ":"))
        assert str(ours.value) == str(theirs.value)
        for good in ([shared, shared], {"a": [shared, {"b": shared}]}, "text", 1.5):
            assert codec.dumps(good, separators=(",", ":")) == \
                json.dumps(good, separators=(",", ":"))


@pytest.mark.parametrize("text", [
    '["e",1]', ' ["e",1]', '["e",1] ', '["e",1]x', '', ' ', '[', '["e",' + "9" * 101 + ']',
    '"s"', '1', 'NaN', '{"a":[1,2.5,null,true]}', '["e"]["f"]', '\n{}', '{}\t',
])
def test_loads_answers_and_refuses_as_engineio_json(text):
    def outcome(loads):
        try:
            return "ok", json.dumps(loads(text))
        except Exception as exc:
            return "error", type(exc), str(exc)
    assert outcome(packet_codec.PacketJSON().loads) == outcome(engineio_json.loads)


def test_json_still_decodes_with_the_scanner_it_keeps():
    assert "self.scan_once(s, idx)" in inspect.getsource(json.JSONDecoder.raw_decode)
    assert "self.scan_once = scanner.make_scanner(self)" in \
        inspect.getsource(json.JSONDecoder.__init__)


@pytest.mark.parametrize("module", [engineio_json, json])
def test_engineio_packets_encode_a_dict_payload_as_the_kept_encoder_does(module, monkeypatch):
    from engineio import packet as eio_packet

    assert "self.json.dumps(self.data,\n" in inspect.getsource(eio_packet.Packet.encode)
    # engine.io's own JSON module (the kept encoder), or a host's json= (its own encode)
    monkeypatch.setattr(eio_packet.Packet, "json", module)
    handshake = {"sid": "AbC-_1", "upgrades": [], "pingTimeout": 20000,
                 "pingInterval": 25000, "maxPayload": 1000000, "text": "caf\u00e9 \"q\""}
    for data in (handshake, {}, "3probe", None):
        kept = eio_packet.Packet(eio_packet.OPEN, data)
        assert packet_codec.engineio_text(kept) == \
            eio_packet.Packet(eio_packet.OPEN, data).encode()
        assert kept.encode() == packet_codec.engineio_text(kept)  # its cache agrees


def test_circular_and_too_deep_data_fail_as_json_dumps_fails_and_the_codec_goes_on():
    loop: list = []
    loop.append(loop)
    deep: list = []
    for _ in range(5000):
        deep = [deep]

    def outcome(dumps):
        try:
            return "ok", dumps()
        except (ValueError, RecursionError) as exc:
            return "error", type(exc), str(exc)[:40]
    for data in (loop, {"k": [1, loop]}, deep):
        ours = outcome(lambda data=data: packet_codec.Packet.json.dumps(data,
                                                                       separators=(",", ":")))
        theirs = outcome(lambda data=data: json.dumps(data, separators=(",", ":")))
        assert ours == theirs
        # circular data always fails; how deep a structure may go is the interpreter's
        # (Python 3.13 encodes this one)
        assert ours[0] == "error" or data is deep
    assert packet_codec.plain_text(sio_packet.EVENT, ["e", {"a": [1]}]) == '2["e",{"a":[1]}]'
