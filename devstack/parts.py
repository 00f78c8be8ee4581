"""The four parts of the stack as ``rai dev`` sees them: what runs, who started it, and how
to bring it up or down.

Temporal and S3 are always ours. PostgreSQL and Redis have an ``External`` alternative: the
configured server is reused when it answers, and a private one runs only when it does not.
A private one we already run wins over the configured URL, so ``eval "$(rai dev env)"`` (which
points that URL at the private server) changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from devstack.process import ProcessRecord
from devstack.server import DetachedServer
from settings import redacted_dsn

logger = logging.getLogger(__name__)


class PartState(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    DOWN = "down"
    STOPPED = "stopped"


class Owner(StrEnum):
    OURS = "started by rai dev"
    EXTERNAL = "external"
    NOBODY = "not running"


class Action(StrEnum):
    """What ``up`` does about a part."""

    KEEP = "already running"
    REUSE = "reused"
    START = "started"


@dataclass(frozen=True)
class PartStatus:
    """One line of ``rai dev up|status|down``. ``url`` is what clients connect to (it may
    carry a password); ``display`` is its printable form."""

    name: str
    state: PartState
    owner: Owner
    url: str = field(repr=False)
    display: str
    pid: int | None = None
    note: str = ""

    @property
    def healthy(self) -> bool:
        return self.state is PartState.HEALTHY

    def line(self) -> str:
        detail = self.owner.value
        if self.pid is not None:
            detail += f", pid {self.pid}"
        if self.note:
            detail += f"; {self.note}"
        return f"{self.name:<9}{self.state.value:<10}{self.display}  [{detail}]"


@dataclass(frozen=True)
class External:
    """A server configured in the settings, used instead of ours when ``probe`` finds it
    answering (``probe`` returns None then, else why not)."""

    url: str
    probe: Callable[[str], Awaitable[str | None]]

    async def problem(self) -> str | None:
        return await self.probe(self.url)


@dataclass(frozen=True)
class Plan:
    action: Action
    note: str = ""


class Part:
    """One part of the stack: our server, and for PostgreSQL and Redis the configured one."""

    def __init__(self, server: DetachedServer, external: External | None = None) -> None:
        self.server = server
        self.external = external
        self.name = server.name

    def _ours(self, state: PartState, record: ProcessRecord, note: str) -> PartStatus:
        return PartStatus(
            self.name,
            state,
            Owner.OURS,
            self.server.url(record),
            self.server.display(record),
            record.pid,
            note,
        )

    def _not_ours(self, state: PartState, owner: Owner, note: str) -> PartStatus:
        if self.external is not None:
            url, display = self.external.url, redacted_dsn(self.external.url)
        else:
            url, display = self.server.url(None), self.server.display(None)
        return PartStatus(self.name, state, owner, url, display, None, note)

    async def status(self) -> PartStatus:
        record, problem = await self.server.health()
        if record is not None:
            state = PartState.HEALTHY if problem is None else PartState.UNHEALTHY
            return self._ours(state, record, problem or "")
        if self.external is not None:
            problem = await self.external.problem()
            if problem is None:
                return self._not_ours(PartState.HEALTHY, Owner.EXTERNAL, "")
            return self._not_ours(PartState.DOWN, Owner.NOBODY, f"not reachable: {problem}")
        busy = self.server.busy_ports()
        note = f"port {', '.join(map(str, busy))} in use by another process" if busy else ""
        return self._not_ours(PartState.DOWN, Owner.NOBODY, note)

    async def plan(self) -> Plan:
        """Decide what ``up`` will do; raises StackError if starting is needed but would fail
        (missing program, port taken), before anything is started."""
        if self.server.live() is not None:
            return Plan(Action.KEEP)
        self.server.clear_stale()
        note = ""
        if self.external is not None:
            problem = await self.external.problem()
            if problem is None:
                return Plan(Action.REUSE)
            note = f"{redacted_dsn(self.external.url)} not reachable"
            logger.info("%s: %s (%s); starting a private one", self.name, note, problem)
        self.server.preflight()
        return Plan(Action.START, note)

    async def up(self, plan: Plan) -> PartStatus:
        if plan.action is Action.REUSE:
            return self._not_ours(PartState.HEALTHY, Owner.EXTERNAL, Action.REUSE.value)
        record = await self.server.ensure_running()
        note = plan.action.value + (f" ({plan.note})" if plan.note else "")
        return self._ours(PartState.HEALTHY, record, note)

    async def down(self) -> PartStatus:
        """Stop our process; an external server is left alone."""
        record = self.server.live()
        if await self.server.stop() and record is not None:
            return self._ours(PartState.STOPPED, record, "stopped")
        if self.external is not None and await self.external.problem() is None:
            return self._not_ours(PartState.HEALTHY, Owner.EXTERNAL, "left running")
        return self._not_ours(PartState.DOWN, Owner.NOBODY, "")
