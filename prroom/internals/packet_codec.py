"""python-socketio's packet codec without its per-packet setup costs; same bytes, same objects.

Profiled under the rooms benchmark, three pieces of python-socketio's ``Packet`` cost about
a twentieth of the server's CPU, none of it work on the message itself:

* decoding: ``engineio.json.loads`` passes ``parse_int`` to ``json.loads``, so every
  packet built a new ``JSONDecoder`` (and its scanner) before reading a byte; the kept
  decoder's scanner is called directly when the text is one JSON value with no space
  around it;
* encoding: ``json.dumps(data, separators=(",", ":"))`` built a new ``JSONEncoder`` each time,
  and even a kept encoder's ``encode`` builds a new C encoder (``c_make_encoder``, with its
  circular-reference dict and a float formatter) for every call;
* every outgoing packet (each ack, each broadcast) asked ``data_is_binary``, which walks the
  payload building a list and a ``functools.reduce`` per level.

:func:`install` gives ``server`` a ``Packet`` subclass with a codec object that keeps one
decoder and one encoder configured exactly as those calls configure theirs, and a
``data_is_binary`` that answers the same by a plain walk that stops at the first bytes.  It
does so only while the server uses python-socketio's own ``Packet`` and engine.io's JSON
module (a host's ``json=`` or another serializer is left alone).  What it relies on is
checked by ``tests/internals/test_packet_codec.py``, which fails loudly when it changes.
"""
from __future__ import annotations

import json
import json.encoder
from typing import Any, Callable, List, Optional, Tuple

from engineio import json as engineio_json
from socketio import packet as sio_packet

_SEPARATORS = (",", ":")
#: What JSON allows around a value (and the empty string, which only decode refuses right).
_SPACE = frozenset(("", " ", "\t", "\n", "\r"))
_MARK = "_prroom_codec"


class PacketJSON:
    """``loads``/``dumps`` as engine.io's JSON module has them, each with one prebuilt codec."""

    def __init__(self) -> None:
        # read here, not at import: a release without it makes the seam fall back
        # (prroom.internals.seams), it must not make prroom fail to import
        safe_int = getattr(engineio_json, "_safe_int", None)
        self._decoder = json.JSONDecoder(parse_int=safe_int)
        # the scanner decode itself calls (set in JSONDecoder.__init__; typeshed omits it)
        self._scan: Callable[[str, int], Tuple[Any, int]] = \
            self._decoder.scan_once  # type: ignore[attr-defined]
        self._encoder = json.JSONEncoder(separators=_SEPARATORS)
        self._encode: Optional[Callable[[Any, int], Any]] = None  # made on first use

    def _kept_encoder(self) -> Optional[Callable[[Any, int], Any]]:
        """The C encoder ``self._encoder.encode`` builds for each call, built once, and
        without its circular-reference dict (an entry made and removed for every list and
        dict encoded): a structure that holds itself ends in RecursionError instead, and
        :meth:`dumps` then encodes it again with the check, which raises as ``json.dumps``
        does.  None where the C encoder is missing (``encode`` is then used as is).
        """
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is None:
            return None
        encoder = self._encoder
        kept: Callable[[Any, int], Any] = make(
            None, encoder.default, json.encoder.encode_basestring_ascii, None,
            encoder.key_separator, encoder.item_separator, encoder.sort_keys,
            encoder.skipkeys, encoder.allow_nan)
        return kept

    def loads(self, s: Any, **kwargs: Any) -> Any:
        """``engineio.json.loads``: big integers refused, everything else as ``json.loads``."""
        if kwargs or not isinstance(s, str) or s.startswith("\ufeff"):
            return engineio_json.loads(s, **kwargs)  # rare shapes: the library's own path
        if s[:1] not in _SPACE:
            # the decoder's scanner, without decode's two whitespace matches and two calls
            # around it; anything else (surrounding space, extra data, nothing to read) is
            # decoded again by decode, which answers or raises as it always does
            try:
                data, end = self._scan(s, 0)
            except StopIteration:
                end = -1
            if end == len(s):
                return data
        return self._decoder.decode(s)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """``json.dumps``; with only ``separators=(",", ":")``, through the kept encoder."""
        if len(kwargs) == 1 and kwargs.get("separators") == _SEPARATORS:
            encode, self._encode = self._encode, None  # taken: not kept if it raises
            if encode is None:
                encode = self._kept_encoder()
            if encode is None or isinstance(obj, str):  # encode's own shortcut for a str
                text: str = self._encoder.encode(obj)
            else:
                try:
                    text = "".join(encode(obj, 0))
                except RecursionError:  # circular, or too deep: as json.dumps answers it
                    text = self._encoder.encode(obj)
            self._encode = encode
            return text
        dumped: str = engineio_json.dumps(obj, **kwargs)
        return dumped

    def __getattr__(self, name: str) -> Any:
        return getattr(engineio_json, name)  # anything else a caller reaches for


#: Types that hold nothing: the walk below does not call itself for them (most values).
_LEAVES = frozenset({str, int, float, bool, type(None)})


def data_is_binary(data: Any) -> bool:
    """Whether ``data`` holds bytes or a bytearray in its lists and dict values."""
    kind = type(data)
    if kind in _LEAVES:
        return False
    if kind is dict or kind is list:
        leaves = _LEAVES
        for item in (data.values() if kind is dict else data):
            if type(item) not in leaves and data_is_binary(item):
                return True
        return False
    if isinstance(data, (bytes, bytearray)):
        return True
    if isinstance(data, list):
        return any(data_is_binary(item) for item in data)
    if isinstance(data, dict):
        return any(data_is_binary(item) for item in data.values())
    return False


class Packet(sio_packet.Packet):
    """python-socketio's ``Packet`` with the kept codec and the plain binary walk."""

    json = PacketJSON()

    @classmethod
    def data_is_binary(cls, data: Any) -> bool:
        """The same answer as python-socketio's, without its lists and reduces."""
        return data_is_binary(data)


def plain_text(packet_type: int, data: Any, ack_id: Optional[int] = None) -> Optional[str]:
    """``Packet(packet_type, data, namespace="/", id=ack_id).encode()`` when ``data`` holds
    no bytes, without building the packet (or walking ``data`` for bytes first).

    None when the JSON encoder refuses ``data`` -- bytes in it (the packet is a binary one,
    with attachments) or anything else JSON cannot hold: the caller builds the ``Packet``,
    which then answers exactly as it always does.  For servers whose ``packet_class`` is
    :class:`Packet` (the caller checks).
    """
    try:
        body = Packet.json.dumps(data, separators=_SEPARATORS)
    except TypeError:
        return None
    return f"{packet_type}{body}" if ack_id is None else f"{packet_type}{ack_id}{body}"


def event_text(packet_class: Any, namespace: str, data: List[Any]) -> Optional[str]:
    """:func:`plain_text` of an EVENT with ``data`` where ``packet_class`` is this module's
    and ``namespace`` the default one; None elsewhere (the caller builds the packet)."""
    if namespace != "/" or packet_class is not Packet:
        return None
    return plain_text(sio_packet.EVENT, data)


def install(server: Any) -> bool:
    """Give ``server`` the faster packet class; False when it uses another codec."""
    current = getattr(server, "packet_class", None)
    if current is Packet:
        return True
    if current is not sio_packet.Packet or getattr(current, "json", None) is not engineio_json \
            or not hasattr(engineio_json, "_safe_int"):
        return False
    server.packet_class = Packet
    return True


#: The kept codec for Engine.IO packets' own payloads (the handshake's OPEN), made on first use.
_engineio_codec: Optional[PacketJSON] = None


def engineio_text(pkt: Any) -> str:
    """``pkt.encode()`` of an Engine.IO text packet, a dict payload (the handshake's OPEN)
    through the kept encoder: ``Packet.encode`` builds a JSON encoder for it each time.

    Only while engine.io's packets use engine.io's JSON module (a host's ``json=`` is left
    alone); anything else is ``pkt.encode()``.
    """
    global _engineio_codec
    if type(pkt.data) is not dict or pkt.binary or pkt.encode_cache \
            or getattr(type(pkt), "json", None) is not engineio_json:
        text: str = pkt.encode()
        return text
    if _engineio_codec is None:
        _engineio_codec = PacketJSON()
    pkt.encode_cache = text = str(pkt.packet_type) + _engineio_codec.dumps(
        pkt.data, separators=_SEPARATORS)
    return text
