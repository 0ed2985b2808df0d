"""`streams.ports.free_port`, the one free-port helper of streams/ and deploy/engines."""

from __future__ import annotations

import socket

from streams.ports import LOOPBACK, free_port


def test_free_port_can_be_bound_and_avoids_what_it_is_told() -> None:
    first = free_port()
    second = free_port(avoid=[first])
    assert first != second
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, second))  # nothing listens there
