"""The refusing port holds its number: connections are refused and nobody else can bind it."""

from __future__ import annotations

import socket

import pytest

from tests.ports import refusing_port

pytestmark = pytest.mark.unit


def test_a_refusing_port_refuses_connections_and_cannot_be_taken_while_held() -> None:
    with refusing_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with socket.socket() as other:  # what a server started by another test would do
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError, match="in use"):
                other.bind(("127.0.0.1", port))
    with socket.socket() as after:  # released at the end of the block
        after.bind(("127.0.0.1", port))
