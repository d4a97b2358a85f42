"""The test suite's port picker: children bind what it hands out, so it must not race outgoing connections."""

from __future__ import annotations

import socket

from tests.processes import _ephemeral_ports, free_port


def test_ports_lie_outside_the_ephemeral_range_are_free_and_never_handed_out_twice() -> None:
    ephemeral = _ephemeral_ports()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert not [port for port in ports if port in ephemeral]
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # raises if something already holds it
