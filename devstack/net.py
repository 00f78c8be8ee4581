"""Ports and a small HTTP client for health checks."""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

LOCALHOST = "127.0.0.1"
HTTP_TIMEOUT_SECONDS = 3.0


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def port_in_use(port: int, host: str = LOCALHOST) -> bool:
    """True if something listens on ``host:port`` (or the port cannot be bound at all)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a connection lingering in TIME_WAIT does not make the port busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
        return False


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _request(
    method: str, url: str, headers: Mapping[str, str], body: bytes, timeout: float
) -> HttpResponse:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"only plain http URLs are supported here, not {url!r}")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection.request(method, path, body=body or None, headers=dict(headers))
        response = connection.getresponse()
        return HttpResponse(
            status=response.status,
            headers={name.lower(): value for name, value in response.getheaders()},
            body=response.read(),
        )
    except http.client.HTTPException as exc:
        raise ConnectionError(f"bad HTTP response from {url}: {exc!r}") from exc
    finally:
        connection.close()


async def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    socket_timeout: float = HTTP_TIMEOUT_SECONDS,
) -> HttpResponse:
    """One HTTP request (http.client, on a worker thread, so the limit is the socket's).

    Raises OSError when nobody answers in time or the answer is not HTTP.
    """
    return await asyncio.to_thread(_request, method, url, headers or {}, body, socket_timeout)
