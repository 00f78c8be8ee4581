"""PostgreSQL: the configured server if it answers, otherwise a private cluster of our own.

The private cluster lives in ``<root>/data`` (``initdb``: trust authentication, superuser
``postgres``), listens on 127.0.0.1 only, keeps its Unix socket in ``<root>/run``, and is
started and stopped with ``pg_ctl``. PostgreSQL refuses to run as root, so when we are root
it runs as the ``postgres`` OS user, which then owns ``<root>`` and must be able to reach it.

Usable on its own, without the rest of the stack::

    dsn = await ensure_postgres(settings)       # the configured server, or a private one
    server = PrivatePostgres(tmp_dir)           # a throw-away cluster on a free port
    dsn = await server.start()
    await server.stop()
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from devstack.binaries import find_postgres_bindir
from devstack.errors import StackError
from devstack.net import LOCALHOST, free_port
from devstack.process import ProcessRecord, new_record, process_identity, tail
from devstack.server import DetachedServer
from settings import Settings, database_name, with_database

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
SERVER_ACCOUNT = "postgres"
PROBE_TIMEOUT_SECONDS = 2.0
# sizeof(sockaddr_un.sun_path) on Linux, including the terminating NUL.
_UNIX_SOCKET_PATH_MAX = 107


async def postgres_problem(dsn: str) -> str | None:
    """None if the server of ``dsn`` accepts a connection to its ``postgres`` maintenance
    database, else why not. (The database ``dsn`` names may not exist yet.)"""
    try:
        connection = await asyncpg.connect(
            with_database(dsn, "postgres"), timeout=PROBE_TIMEOUT_SECONDS
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        await connection.fetchval("SELECT 1")
    finally:
        await connection.close()
    return None


@dataclass(frozen=True)
class OsAccount:
    """The OS user a private cluster runs as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def named(cls, name: str) -> OsAccount:
        entry = pwd.getpwnam(name)
        return cls(name, entry.pw_uid, entry.pw_gid, tuple(os.getgrouplist(name, entry.pw_gid)))


def server_account() -> OsAccount | None:
    """The account to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return OsAccount.named(SERVER_ACCOUNT)
    except KeyError:
        raise StackError(
            f"PostgreSQL refuses to run as root and there is no {SERVER_ACCOUNT!r} OS user to "
            f"run it as: create one (adduser --system --group {SERVER_ACCOUNT}) or run rai as "
            "an ordinary user"
        ) from None


def can_search(info: os.stat_result, account: OsAccount) -> bool:
    """May ``account`` pass through a directory with this ``stat``? (Mode bits only.)"""
    if info.st_uid == account.uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid in account.groups:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def blocked_ancestor(path: Path, account: OsAccount) -> Path | None:
    """The first existing directory above ``path`` that ``account`` may not enter, if any."""
    for directory in reversed(path.parents):
        try:
            info = directory.stat()
        except FileNotFoundError:
            return None
        if not can_search(info, account):
            return directory
    return None


def require_reachable(root: Path, account: OsAccount) -> None:
    blocked = blocked_ancestor(root, account)
    if blocked is not None:
        raise StackError(
            f"the private PostgreSQL runs as the OS user {account.name!r} (PostgreSQL refuses "
            f"to run as root), which cannot reach {root}: {blocked} is not searchable by it; "
            f"use a state directory it can reach (RAI_STATE_DIR) or `chmod o+x {blocked}`"
        )


def _hand_over(root: Path, account: OsAccount) -> None:
    """Make ``account`` the owner of everything under ``root`` (only if it is not already)."""
    if root.stat().st_uid == account.uid and (
        not (root / "data").exists() or (root / "data").stat().st_uid == account.uid
    ):
        return
    for directory, _, files in os.walk(root):
        os.chown(directory, account.uid, account.gid)
        for name in files:
            os.chown(os.path.join(directory, name), account.uid, account.gid)


def _remove_if_stale(lock: Path) -> None:
    """Remove a PostgreSQL lock file (PID on its first line) whose process is gone.

    A killed postmaster leaves them behind; PostgreSQL cleans them up itself unless the PID
    still exists, which it does as a zombie where nothing reaps orphans (some containers).
    """
    try:
        pid = int(lock.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return
    identity = process_identity(pid)
    if identity is None or identity[0] in ("Z", "X"):
        logger.info("removing stale %s of pid %d", lock, pid)
        lock.unlink(missing_ok=True)


class PrivatePostgres(DetachedServer):
    """A PostgreSQL cluster of our own under ``root``; ``port=None`` picks a free port."""

    name = "postgres"
    port_setting = "RAI_DEV_POSTGRES_PORT"

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        database: str = "postgres",
        start_timeout: float = 60.0,
        stop_grace: float = 10.0,
    ) -> None:
        super().__init__(root, start_timeout=start_timeout, stop_grace=stop_grace)
        self.port = port
        self.database = database

    @classmethod
    def for_settings(cls, settings: Settings, *, start_timeout: float = 60.0) -> PrivatePostgres:
        """The stack's cluster: ``<state>/postgres`` on ``dev_postgres_port``, DSNs naming the
        database ``database_url`` names."""
        return cls(
            settings.state_dir / "postgres",
            port=settings.dev_postgres_port,
            database=database_name(settings.database_url),
            start_timeout=start_timeout,
            stop_grace=settings.dev_stop_grace_seconds,
        )

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def configured_ports(self) -> dict[str, int]:
        return {} if self.port is None else {"PostgreSQL": self.port}

    def url(self, record: ProcessRecord | None) -> str:
        """The administrative DSN (superuser, trust authentication)."""
        port = record.ports["port"] if record else self.port
        host = LOCALHOST if port is None else f"{LOCALHOST}:{port}"
        return f"postgresql://{SUPERUSER}@{host}/{self.database}"

    async def start(self) -> str:
        """Start the cluster unless it runs (``initdb`` on first use); its DSN."""
        return self.url(await self.ensure_running())

    def _require_programs(self) -> None:
        find_postgres_bindir()

    def preflight(self) -> None:
        super().preflight()
        account = server_account()
        if account is not None:
            require_reachable(self.root, account)
        if self.port is not None:
            socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
            if len(os.fsencode(socket_path)) > _UNIX_SOCKET_PATH_MAX:
                raise StackError(
                    f"the PostgreSQL socket path {socket_path} is longer than the "
                    f"{_UNIX_SOCKET_PATH_MAX} bytes Unix sockets allow; use a shorter "
                    "RAI_STATE_DIR"
                )

    def _prepare_directories(self, account: OsAccount | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if account is not None:
            # Again, now that every directory on the way exists.
            require_reachable(self.root, account)
            _hand_over(self.root, account)
        for lock in [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]:
            _remove_if_stale(lock)

    async def _run(self, argv: list[str], account: OsAccount | None, limit: float) -> int:
        """Run a PostgreSQL tool to completion, as ``account``, for at most ``limit`` seconds;
        its output goes to ``<root>/pg_ctl.log``. Returns the exit status."""
        logger.info("running %s", shlex.join(argv))
        output = await asyncio.to_thread((self.root / "pg_ctl.log").open, "ab")
        with output as out:
            tool = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=list(account.groups) if account else None,
            )
            try:
                async with asyncio.timeout(limit):
                    return await tool.wait()
            except TimeoutError:
                tool.kill()
                await tool.wait()
                raise StackError(
                    f"{Path(argv[0]).name} did not finish within {limit:.0f} s "
                    f"(see {self.root / 'pg_ctl.log'})",
                    log_tail=tail(self.root / "pg_ctl.log"),
                ) from None

    def _failure(self, what: str) -> StackError:
        log_tail = tail(self.log_path) or tail(self.root / "pg_ctl.log")
        return StackError(f"postgres: {what} (see {self.log_path})", log_tail=log_tail)

    async def _launch(self) -> ProcessRecord:
        bindir = find_postgres_bindir()
        account = server_account()
        port = self.port if self.port is not None else free_port()
        await asyncio.to_thread(self._prepare_directories, account)
        if not (self.data_dir / "PG_VERSION").exists():
            initdb = [
                str(bindir / "initdb"),
                "--pgdata",
                str(self.data_dir),
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-locale",
                # The cluster's first files; the running server fsyncs as usual.
                "--no-sync",
            ]
            if await self._run(initdb, account, self.start_timeout) != 0:
                raise self._failure("initdb failed")
        server_options = f"-h {LOCALHOST} -p {port} -k {shlex.quote(str(self.socket_dir))}"
        pg_ctl = [
            str(bindir / "pg_ctl"),
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_path),
            "--wait",
            "--timeout",
            str(max(1, round(self.start_timeout))),
            "-o",
            server_options,
        ]
        if await self._run(pg_ctl, account, self.start_timeout + 5) != 0:
            raise self._failure("pg_ctl start failed")
        postmaster_pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        return new_record(postmaster_pid, pg_ctl, self.log_path, {"port": port})

    async def _check(self, record: ProcessRecord) -> str | None:
        return await postgres_problem(self.url(record))

    def _adopt(self) -> ProcessRecord | None:
        """The postmaster named in ``postmaster.pid``, if that process works in our data
        directory (a reused PID would not)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
            working_dir = Path(os.readlink(f"/proc/{pid}/cwd"))
        except (OSError, IndexError, ValueError):
            return None
        if working_dir != self.data_dir.resolve():
            return None
        try:
            return new_record(pid, ["postgres", str(self.data_dir)], self.log_path, {"port": port})
        except StackError:  # it exited just now
            return None

    async def stop(self) -> bool:
        """``pg_ctl stop -m fast``; SIGTERM/SIGKILL by PID if that does not do it."""
        record = self.live()
        if record is not None:
            try:
                bindir = find_postgres_bindir()
                stop = [
                    str(bindir / "pg_ctl"),
                    "stop",
                    "--pgdata",
                    str(self.data_dir),
                    "--mode",
                    "fast",
                    "--wait",
                    "--timeout",
                    str(max(1, round(self.stop_grace))),
                ]
                await self._run(stop, server_account(), self.stop_grace + 5)
            except StackError as exc:
                logger.warning("pg_ctl stop did not work (%s); stopping by PID", exc)
        await super().stop()
        return record is not None


async def ensure_postgres(settings: Settings, *, start_timeout: float = 60.0) -> str:
    """An administrative DSN of a running PostgreSQL: ``settings.database_url`` if its server
    answers, else the stack's private cluster (started if it does not run yet)."""
    private = PrivatePostgres.for_settings(settings, start_timeout=start_timeout)
    if private.live() is None and await postgres_problem(settings.database_url) is None:
        return settings.database_url
    return await private.start()


async def stop_private_postgres(settings: Settings) -> bool:
    """Stop the stack's private cluster if it runs; True if it did."""
    return await PrivatePostgres.for_settings(settings).stop()
