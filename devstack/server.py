"""What every part the stack runs itself has in common: one detached process in its own
directory, recorded in ``process.json``, started once, health-checked, stopped by PID."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from pathlib import Path

from devstack.errors import StackError
from devstack.net import port_in_use
from devstack.process import ProcessRecord, ProcessSlot, is_alive, tail, terminate
from settings import redacted_dsn

logger = logging.getLogger(__name__)

_HEALTH_POLL_SECONDS = 0.25


class DetachedServer(ABC):
    """A server process of our own under ``root``.

    Subclasses say how to launch it (``_launch``) and how to tell it is serving (``_check``);
    this class keeps the record, waits for health, and stops it.
    """

    #: The part's name in messages and status lines.
    name: str
    #: Environment variable that moves the part to another port, for "port in use" hints.
    port_setting: str

    def __init__(self, root: Path, *, start_timeout: float, stop_grace: float) -> None:
        # Absolute: the process runs with ``root`` as its working directory.
        self.root = root.absolute()
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.slot = ProcessSlot(root)

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}.log"

    @abstractmethod
    def configured_ports(self) -> dict[str, int]:
        """The ports the server is configured to listen on, by purpose."""

    @abstractmethod
    def url(self, record: ProcessRecord | None) -> str:
        """What clients connect to: of the running process, or of the configured ports."""

    def display(self, record: ProcessRecord | None) -> str:
        """The printable address (no secrets)."""
        return redacted_dsn(self.url(record))

    @abstractmethod
    def _require_programs(self) -> None:
        """Raise BinaryNotFoundError if a program the server needs is missing."""

    def preflight(self) -> None:
        """Raise a StackError now if a start would fail for a reason known in advance:
        a missing program, a port someone else uses."""
        self._require_programs()
        self.require_free_ports(self.configured_ports())

    @abstractmethod
    async def _launch(self) -> ProcessRecord:
        """Start the process; return its record (not yet saved)."""

    @abstractmethod
    async def _check(self, record: ProcessRecord) -> str | None:
        """None if the server answers as it should, else why not (one line)."""

    def live(self) -> ProcessRecord | None:
        """The record of our running process, if there is one."""
        record = self.slot.live()
        if record is None:
            record = self._adopt()
            if record is not None:
                logger.info(
                    "%s: found our server running unrecorded (pid %d)", self.name, record.pid
                )
                self.slot.save(record)
        return record

    def _adopt(self) -> ProcessRecord | None:
        """A record of our server if it runs although nothing recorded it (a start that was
        interrupted before the record was written); only where that can be told for sure."""
        return None

    async def health(self) -> tuple[ProcessRecord | None, str | None]:
        """(our running process or None, None if healthy else the reason)."""
        record = self.live()
        if record is None:
            return None, "not running"
        return record, await self._check(record)

    def busy_ports(self) -> list[int]:
        """Configured ports that something (not our process) listens on."""
        return [port for port in self.configured_ports().values() if port_in_use(port)]

    def require_free_ports(self, ports: dict[str, int]) -> None:
        for purpose, port in ports.items():
            if port_in_use(port):
                raise StackError(
                    f"{self.name}: port {port} ({purpose}) is already in use by another "
                    f"process; stop it or choose another port with {self.port_setting}"
                )

    async def ensure_running(self) -> ProcessRecord:
        """Make sure our process runs and is healthy; start it if it does not run."""
        record = self.live()
        if record is not None:
            await self.wait_healthy(record)
            return record
        self.clear_stale()
        self.preflight()
        record = await self._launch()
        self.slot.save(record)
        try:
            await self.wait_healthy(record)
        except StackError:
            # A part that failed to come up must not linger half-started.
            await self.stop()
            raise
        logger.info("%s is healthy (pid %d)", self.name, record.pid)
        return record

    def clear_stale(self) -> None:
        """Forget a record whose process is gone (or whose PID now belongs to another)."""
        record = self.slot.load()
        if record is not None and not is_alive(record.pid, record.start_time):
            logger.info("%s: removing stale record of pid %d", self.name, record.pid)
            self.slot.clear()

    async def wait_healthy(self, record: ProcessRecord) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        while True:
            if not is_alive(record.pid, record.start_time):
                raise StackError(
                    f"{self.name} exited during start-up (see {record.log})",
                    log_tail=tail(Path(record.log)),
                )
            reason = await self._check(record)
            if reason is None:
                return
            if loop.time() >= deadline:
                raise StackError(
                    f"{self.name} did not become healthy within {self.start_timeout:.0f} s: "
                    f"{reason} (see {record.log})",
                    log_tail=tail(Path(record.log)),
                )
            await asyncio.sleep(_HEALTH_POLL_SECONDS)

    async def stop(self) -> bool:
        """Stop our process if it runs; True if there was one. Forgets the record."""
        record = self.live()
        if record is not None:
            await terminate(record, self.stop_grace)
        self.slot.clear()
        return record is not None
