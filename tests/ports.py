"""A port every connection to is refused, for as long as a test needs it.

Picking a free port, closing it and then connecting to it races with the other pytest workers:
one of their servers (a SeaweedFS, a Temporal) may bind it in between, and the "unreachable"
service answers. Here the port stays bound by this process without listening: the kernel
refuses every connection to it (no listener) and no other process can bind it (the socket
has neither SO_REUSEADDR nor SO_REUSEPORT), until the ``with`` block ends.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def refusing_port(host: str = "127.0.0.1") -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind((host, 0))
        yield int(held.getsockname()[1])
