"""The port a test or benchmark server is started on: never one an outgoing connection can
take meanwhile."""
import socket
from pathlib import Path

from harness.processes import free_port


def test_ports_are_below_the_range_outgoing_connections_take_theirs_from() -> None:
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    ports = [free_port() for _ in range(20)]
    assert all(1024 <= port < low for port in ports), ports
    assert len(set(ports)) == len(ports), "a port was handed out twice"
    with socket.socket() as server:  # and a server can listen on one
        server.bind(("127.0.0.1", ports[-1]))
        server.listen()
