"""How scenario 3 finds a moment when the API worker it kills is serving a request."""

from __future__ import annotations

import os
import socket

import pytest

from tests.acceptance.scenarios.kill_api_trainer import requests_in_flight, socket_inodes

pytestmark = pytest.mark.unit


def test_an_accepted_connection_counts_as_a_request_in_flight_until_it_closes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert requests_in_flight(os.getpid(), port) == 0  # listening is not serving
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        try:
            assert requests_in_flight(os.getpid(), port) == 1
            # Another port's connection is not counted, and neither is one this process
            # does not hold (pid 1 holds none of ours).
            assert requests_in_flight(os.getpid(), port + 1 if port < 65535 else port - 1) == 0
            assert requests_in_flight(1, port) == 0
        finally:
            accepted.close()
            client.close()
        assert requests_in_flight(os.getpid(), port) == 0


def test_the_sockets_of_a_process_are_read_from_its_descriptors() -> None:
    with socket.socket() as held:
        assert os.fstat(held.fileno()).st_ino in socket_inodes(os.getpid())
    assert socket_inodes(2**22 + 12345) == set()  # no such process: nothing, no error
