"""Engine.IO v4 / Socket.IO v5 spoken by hand, over real sockets, for protocol-level tests.

:class:`RawWebSocket` speaks raw WebSocket frames (websocket-client); :class:`PollingSession`
speaks HTTP long-polling (requests).  Neither hides anything a server does: every packet,
status code and close is there to assert on.
"""
from __future__ import annotations

import json
import socket
import time
from typing import Any, List, Optional, Tuple

import requests
import websocket
from websocket import ABNF

#: An Engine.IO or Socket.IO packet: text, or bytes for a binary one.  Any rather than
#: ``Union[str, bytes]``: tests read the text they expect (``startswith``...) and fail on
#: bytes by themselves, without an isinstance check each.
Packet = Any
TIMEOUT = 5.0
SEPARATOR = "\x1e"  # between packets of a long-polling payload


class Closed(Exception):
    """The server closed the connection (or the session)."""


def engineio_url(base: str, transport: str = "polling", sid: Optional[str] = None,
                 path: str = "/socket.io/", **query: Any) -> str:
    """``base`` + path + Engine.IO v4 query (``ws://`` for ``transport="websocket"``)."""
    if transport == "websocket":
        base = base.replace("http://", "ws://", 1)
    params = {"EIO": 4, "transport": transport, **({"sid": sid} if sid else {}), **query}
    return base + path + "?" + "&".join(f"{key}={value}" for key, value in params.items())


class RawWebSocket:
    """One Engine.IO session over a WebSocket, frame by frame.

    :meth:`recv` returns Engine.IO packets (text as ``str``, binary frames as ``bytes``);
    pings are answered on the way unless ``answer_pings`` is False.
    """

    def __init__(self, base: str, timeout: float = TIMEOUT, answer_pings: bool = True,
                 sid: Optional[str] = None, handshake: bool = True,
                 rcvbuf: Optional[int] = None) -> None:
        self.answer_pings = answer_pings
        # rcvbuf: a small kernel receive buffer, to play a client too slow to read
        options = ((socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf),) if rcvbuf else ()
        self.ws = websocket.create_connection(engineio_url(base, "websocket", sid),
                                              timeout=timeout, sockopt=options)
        self.handshake: Optional[dict] = None
        if handshake:
            opening = self.recv()
            assert isinstance(opening, str) and opening.startswith("0"), opening
            self.handshake = json.loads(opening[1:])

    @property
    def sid(self) -> str:
        assert self.handshake is not None, "opened without the handshake"
        sid: str = self.handshake["sid"]
        return sid

    def send(self, packet: Packet) -> None:
        """Send one frame: text for ``str``, binary for ``bytes``."""
        if isinstance(packet, bytes):
            self.ws.send_binary(packet)
        else:
            self.ws.send(packet)

    def recv(self, timeout: float = TIMEOUT) -> Packet:
        """The next Engine.IO packet; :class:`Closed` when the server hangs up."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise websocket.WebSocketTimeoutException("nothing received")
            self.ws.settimeout(remaining)
            try:
                opcode, data = self.ws.recv_data()
            except (websocket.WebSocketConnectionClosedException, ConnectionError) as exc:
                raise Closed(str(exc)) from None
            if opcode == ABNF.OPCODE_CLOSE:
                raise Closed("close frame")
            if opcode == ABNF.OPCODE_BINARY:
                return bytes(data)
            text = data.decode()
            if text == "2" and self.answer_pings:
                self.ws.send("3")
                continue
            return text

    def recv_socketio(self, timeout: float = TIMEOUT) -> Packet:
        """The next Socket.IO packet (an Engine.IO message without its ``4``, or bytes)."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(packet, bytes):
                return packet
            if packet.startswith("4"):
                return packet[1:]
            if packet == "1":
                raise Closed("Engine.IO close packet")

    def connect(self, namespace: str = "/", auth: Any = None) -> str:
        """Send a Socket.IO CONNECT; return the very next Socket.IO packet (the reply)."""
        prefix = "" if namespace == "/" else namespace + ","
        self.send("40" + prefix + (json.dumps(auth) if auth is not None else ""))
        return self.recv_socketio()

    def closed_within(self, timeout: float) -> bool:
        """True if the server closes the connection within ``timeout`` seconds."""
        try:
            while True:
                self.recv_socketio(timeout)
        except Closed:
            return True
        except websocket.WebSocketTimeoutException:
            return False

    def close(self) -> None:
        try:
            self.ws.close(timeout=1)
        except Exception:  # already closed by the server: nothing to do
            pass


class RawSocket(RawWebSocket):
    """A :class:`RawWebSocket` to a test server that also speaks prroom's events, for frames
    no real client sends and ends no real client makes."""

    def __init__(self, server: Any, rcvbuf: Optional[int] = None, timeout: float = 5.0,
                 answer_pings: bool = True) -> None:
        super().__init__(server.url, timeout=timeout, rcvbuf=rcvbuf, answer_pings=answer_pings)
        self.eio_sid = super().sid
        self.socketio_sid: Optional[str] = None
        self._ack_ids = iter(range(1, 1_000_000))

    @property
    def sid(self) -> str:  # the Socket.IO session id, once connected
        assert self.socketio_sid is not None, "connect_namespace() first"
        return self.socketio_sid

    def connect_namespace(self, auth: Any = None) -> str:
        reply = self.connect(auth=auth)
        assert reply.startswith("0{"), reply
        self.socketio_sid = json.loads(reply[1:])["sid"]
        return self.socketio_sid

    def next_packet(self, timeout: float = 5.0) -> Packet:
        """The next Socket.IO packet (text without the Engine.IO ``4``, or bytes)."""
        return self.recv_socketio(timeout)

    def emit(self, event: str, payload: Any) -> None:
        self.ws.send("42" + json.dumps([event, payload]))

    def call(self, event: str, payload: Any, timeout: float = 5.0) -> Tuple[Any, List[list]]:
        """Emit with an ack id; return the ack and the events that arrived before it."""
        ack_id = next(self._ack_ids)
        self.ws.send(f"42{ack_id}" + json.dumps([event, payload]))
        before: list = []
        while True:
            packet = self.next_packet(timeout)
            if isinstance(packet, str) and packet.startswith(f"3{ack_id}["):
                return json.loads(packet[len(f"3{ack_id}"):])[0], before
            before.append(packet)

    def join(self, pull_request_id: int, username: str) -> dict:
        ack, _ = self.call("join-pr-room", {"pullRequestId": pull_request_id,
                                            "username": username})
        assert ack["ok"] is True, ack
        return ack


def socketio_event(packet: Packet) -> list:
    """``2["name",...]`` (or ``2/ns,["name",...]``) -> ``["name", ...]``."""
    assert isinstance(packet, str) and packet[:1] == "2", packet
    return json.loads(packet[packet.index("["):])


class PollingSession:
    """One Engine.IO session over HTTP long-polling; each request on a fresh connection."""

    def __init__(self, base: str, timeout: float = TIMEOUT) -> None:
        self.base = base
        self.timeout = timeout
        response = requests.get(engineio_url(base), timeout=timeout)
        assert response.status_code == 200, (response.status_code, response.text)
        assert response.text.startswith("0"), response.text
        self.handshake = json.loads(response.text[1:])

    @property
    def sid(self) -> str:
        return self.handshake["sid"]

    @property
    def url(self) -> str:
        return engineio_url(self.base, sid=self.sid)

    def get(self, timeout: Optional[float] = None) -> requests.Response:
        """One poll: waits until the server has packets (or closes the session)."""
        return requests.get(self.url, timeout=timeout or self.timeout)

    def post(self, body: str) -> requests.Response:
        return requests.post(self.url, data=body.encode(), timeout=self.timeout,
                             headers={"Content-Type": "text/plain;charset=UTF-8"})

    def packets(self, timeout: Optional[float] = None) -> List[str]:
        """Poll once and split the payload into its packets; :class:`Closed` on a 400."""
        response = self.get(timeout)
        if response.status_code == 400:
            raise Closed(response.text)
        assert response.status_code == 200, (response.status_code, response.text)
        return response.text.split(SEPARATOR)


def still_open(conn: socket.socket) -> bool:
    """True while the server has neither closed nor answered ``conn`` (nothing to read)."""
    conn.setblocking(False)
    try:
        conn.recv(1)  # b"": closed; anything else: an answer
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
