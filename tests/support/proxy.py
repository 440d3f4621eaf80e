"""A loopback TCP proxy whose connections can be cut, as a network blip would, or stalled.

:meth:`TcpProxy.cut` drops every connection through it and refuses new ones (the port
stays bound, connections are reset at once) until :meth:`TcpProxy.reopen`.
:meth:`TcpProxy.stall` is a silent loss: the connections open at that moment stay open at
both ends, but nothing crosses any more (data and closes are swallowed), as when a Wi-Fi
switch or a NAT timeout loses the path; connections made afterwards work.
"""
from __future__ import annotations

import socket
import threading
from typing import List, Optional, Set


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``127.0.0.1:<target_port>``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._open = True
        self._closed = False
        self._sockets: List[socket.socket] = []
        self._stalled: Set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if not self._open:
                    _reset(client)
                    continue
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target_port), 5)
                except OSError:
                    _reset(client)
                    continue
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if source not in self._stalled:  # a stalled path loses what is sent
                    sink.sendall(data)
        except OSError:
            pass
        # a close does not cross a stalled path either: the other end never hears of it
        for sock in (source,) if source in self._stalled else (source, sink):
            _shut(sock)

    def cut(self) -> None:
        """Drop every connection (both ends see it closed) and refuse new ones."""
        with self._lock:
            self._open = False
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def stall(self) -> None:
        """Lose everything the open connections send, in both directions, closes included,
        without closing them; new connections are forwarded as usual."""
        with self._lock:
            self._stalled.update(self._sockets)
            self._sockets = []

    def reopen(self) -> None:
        """Accept and forward connections again."""
        with self._lock:
            self._open = True

    def close(self) -> None:
        """Cut everything and stop listening."""
        self._closed = True
        self.cut()
        with self._lock:
            stalled, self._stalled = list(self._stalled), set()
        for sock in stalled:
            _shut(sock)
        self._listener.close()


def _shut(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: the client sees a reset at once, as from a host that is away
    import struct
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
