"""Scenario 6, RLS penetration (M30): attacks on tenant B's rows by someone who holds a
``rai_app`` connection acting for tenant A (or for nobody), and by someone who holds the
worker's metrics login, ``rai_metrics``. Every attack must be refused (its SQLSTATE is listed)
or see/change nothing; afterwards B's rows are fingerprinted again, as the administrator, and
must be exactly what they were.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from db.integrity import record_check
from db.repository import Database
from settings import app_dsn_for, metrics_dsn_for
from tests.acceptance.report import ScenarioResult
from tests.acceptance.scenarios import rls_http
from tests.acceptance.stack import Stack, World

NAME = "6-rls-penetration"

# Tables whose B rows are fingerprinted before and after the attacks.
TENANT_TABLES = (
    "tenants",
    "signing_keys",
    "learning_events",
    "training_runs",
    "model_versions",
    "model_status_history",
    "drift_reports",
    "bias_audits",
    "integrity_checks",
    "dead_letters",
)

Attack = Callable[[asyncpg.Connection, "Targets"], Awaitable[str]]


@dataclass(frozen=True)
class Targets:
    a: UUID
    b: UUID
    b_event_id: UUID
    b_key_id: str
    a_event_id: UUID


class Leak(Exception):
    """The attack got something: a row, a changed row, an object."""


async def _as(conn: asyncpg.Connection, tenant: str | None) -> None:
    if tenant is not None:
        await conn.execute("SELECT set_config('app.current_tenant_id', $1, true)", tenant)


def _nothing(count: int, what: str) -> str:
    if count:
        raise Leak(f"{count} {what}")
    return f"0 {what}"


def _rowcount(status: str) -> int:
    return int(status.split()[-1])


# --- the attacks: each runs inside a transaction acting for A (unless it says otherwise) ---


async def read_events_without_tenant(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("SELECT set_config('app.current_tenant_id', '', true)")
    return _nothing(await conn.fetchval("SELECT count(*) FROM learning_events"), "events seen")


async def read_tenants_without_tenant(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("SELECT set_config('app.current_tenant_id', '', true)")
    return _nothing(await conn.fetchval("SELECT count(*) FROM tenants"), "tenants seen")


async def read_b_events_by_tenant_id(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    n = await conn.fetchval("SELECT count(*) FROM learning_events WHERE tenant_id = $1", t.b)
    return _nothing(n, "of B's events seen")


async def read_b_event_by_replayed_id(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    n = await conn.fetchval("SELECT count(*) FROM learning_events WHERE id = $1", t.b_event_id)
    return _nothing(n, "rows for B's event id")


async def read_b_keys(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    n = await conn.fetchval("SELECT count(*) FROM signing_keys WHERE tenant_id = $1", t.b)
    return _nothing(n, "of B's keys seen")


async def read_b_audit_chain(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    n = await conn.fetchval("SELECT count(*) FROM integrity_checks WHERE tenant_id = $1", t.b)
    return _nothing(n, "of B's audit rows seen")


async def insert_event_as_b(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute(
        "INSERT INTO learning_events (tenant_id, season_id, field_id, payload, payload_sha256,"
        " signature, key_id) VALUES ($1, 'x', 'y', '{}', repeat('0', 64),"
        " decode(repeat('00', 64), 'hex'), $2)",
        t.b,
        t.b_key_id,
    )
    raise Leak("an event was written into B")


async def insert_audit_row_as_b(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute(
        "INSERT INTO integrity_checks (tenant_id, seq, check_type, subject_id, outcome,"
        " prev_hash, row_hash)"
        " VALUES ($1, 0, 'forged', 'x', 'ok', repeat('0', 64), repeat('0', 64))",
        t.b,
    )
    raise Leak("an audit row was appended to B's chain")


async def update_b_events(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    status = await conn.execute(
        "UPDATE learning_events SET payload = '{}' WHERE tenant_id = $1", t.b
    )
    return _nothing(_rowcount(status), "of B's events updated")


async def update_b_tenant_name(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    status = await conn.execute("UPDATE tenants SET name = 'owned' WHERE id = $1", t.b)
    return _nothing(_rowcount(status), "of B's tenant rows updated")


async def delete_b_events(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    status = await conn.execute("DELETE FROM learning_events WHERE tenant_id = $1", t.b)
    return _nothing(_rowcount(status), "of B's events deleted")


async def delete_b_event_by_id(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    status = await conn.execute("DELETE FROM learning_events WHERE id = $1", t.b_event_id)
    return _nothing(_rowcount(status), "of B's events deleted")


async def move_own_event_to_b(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    status = await conn.execute(
        "UPDATE learning_events SET tenant_id = $1 WHERE id = $2", t.b, t.a_event_id
    )
    return _nothing(_rowcount(status), "events moved to B")


async def foreign_key_to_b_key(conn: asyncpg.Connection, t: Targets) -> str:
    """An A event signed with B's key id: the composite foreign key has to refuse it."""
    await _as(conn, str(t.a))
    await conn.execute(
        "INSERT INTO learning_events (tenant_id, season_id, field_id, payload, payload_sha256,"
        " signature, key_id) VALUES ($1, 'x', 'y', '{}', repeat('0', 64),"
        " decode(repeat('00', 64), 'hex'), $2)",
        t.a,
        t.b_key_id,
    )
    raise Leak("an A event references B's signing key")


async def invalid_tenant_setting(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("SELECT set_config('app.current_tenant_id', 'not-a-uuid OR true', true)")
    return _nothing(await conn.fetchval("SELECT count(*) FROM learning_events"), "events seen")


async def nil_uuid_tenant_setting(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute(
        "SELECT set_config('app.current_tenant_id', '00000000-0000-0000-0000-000000000000', true)"
    )
    return _nothing(await conn.fetchval("SELECT count(*) FROM learning_events"), "events seen")


async def reset_tenant_setting(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("RESET app.current_tenant_id")
    n = await conn.fetchval("SELECT count(*) FROM learning_events WHERE tenant_id = $1", t.b)
    return _nothing(n, "of B's events seen after RESET")


async def row_security_off(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("SET LOCAL row_security = off")
    n = await conn.fetchval("SELECT count(*) FROM learning_events WHERE tenant_id = $1", t.b)
    return _nothing(n, "of B's events seen with row_security off")


async def call_trigger_function(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("SELECT rai.record_model_status_change()")
    raise Leak("a SECURITY DEFINER trigger function ran on request")


async def security_definer_functions(conn: asyncpg.Connection, t: Targets) -> str:
    """Call every SECURITY DEFINER function rai_app may execute (listed from the catalog) as A;
    an answer that names tenant B is a leak."""
    await _as(conn, str(t.a))
    rows = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS signature FROM pg_proc p"
        " JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND has_function_privilege(p.oid, 'EXECUTE')"
        " AND p.prorettype <> 'trigger'::regtype ORDER BY 1"
    )
    leaking, unknown = [], []
    for row in rows:
        signature = row["signature"]
        arguments = SAMPLE_ARGUMENTS.get(signature)
        if arguments is None:
            unknown.append(signature)
            continue
        name = signature.split("(")[0]
        answer = await conn.fetch(f"SELECT * FROM rai.{name}({arguments})")
        if str(t.b) in str([dict(r) for r in answer]):
            leaking.append(f"{name} names B")
    if unknown:
        raise Leak("callable SECURITY DEFINER functions not probed: " + ", ".join(unknown))
    if leaking:
        raise Leak("; ".join(leaking))
    return f"{len(rows)} functions called, none names B"


# How the penetration test calls each SECURITY DEFINER function rai_app may execute; a new
# one fails the attack above until it is added here.
SAMPLE_ARGUMENTS = {
    "api_token_valid_elsewhere(text)": "repeat('0', 64)",
}

# The metrics aggregates (migrations 0010 and 0011): every tenant's id, name and counts, for
# the worker's metrics collector (rai_metrics) alone.
METRICS_AGGREGATES = {
    "metrics_open_dead_letters": "",
    "metrics_cooldowns": "now(), interval '7 days'",
    "metrics_tenants": "",
    "metrics_active_training_runs": "now()",
}


async def call_metrics_aggregates(conn: asyncpg.Connection, t: Targets) -> str:
    """Call each metrics aggregate by name as A: every call must be refused (42501); one that
    answers is a leak, whether or not it names B today."""
    await _as(conn, str(t.a))
    answered, refusal = [], None
    for name, arguments in METRICS_AGGREGATES.items():
        try:
            async with conn.transaction():  # a savepoint: one refusal does not end the attack
                answer = await conn.fetch(f"SELECT * FROM rai.{name}({arguments})")
        except asyncpg.InsufficientPrivilegeError as exc:
            refusal = exc
            continue
        names_b = str(t.b) in str([dict(r) for r in answer])
        answered.append(f"{name} answered{' (names B)' if names_b else ''}")
    if answered:
        raise Leak("; ".join(answered))
    assert refusal is not None
    raise refusal  # all four refused: reported with the SQLSTATE they were refused with


async def temporary_view(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute(
        f"CREATE TEMPORARY VIEW peek AS SELECT * FROM rai.learning_events WHERE tenant_id = '{t.b}'"
    )
    return _nothing(await conn.fetchval("SELECT count(*) FROM peek"), "of B's events via a view")


async def create_view_in_schema(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("CREATE VIEW rai.peek AS SELECT * FROM rai.learning_events")
    raise Leak("a view was created in schema rai")


async def create_table_in_public(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("CREATE TABLE public.stash (x text)")
    raise Leak("a table was created in schema public")


async def copy_table_to_stdout(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    sink = _Sink()
    await conn.copy_from_table("learning_events", output=sink, schema_name="rai")
    rows = bytes(sink.data).decode().splitlines()
    return _nothing(sum(str(t.b) in row for row in rows), f"of B's rows among {len(rows)} copied")


async def copy_query_to_stdout(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    out = await conn.copy_from_query(
        "SELECT * FROM rai.learning_events WHERE tenant_id = $1", t.b, output=_Sink()
    )
    return _nothing(_rowcount(out), "of B's rows copied out")


async def copy_to_server_file(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("COPY rai.learning_events TO '/tmp/rai-stolen.csv'")
    raise Leak("a server-side file was written")


async def copy_from_program(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("COPY rai.learning_events FROM PROGRAM 'true'")
    raise Leak("a server-side program ran")


async def copy_into_b(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    line = f"{uuid4()}\t{t.b}\tx\ty\t{{}}\t{'0' * 64}\t\\\\x{'00' * 64}\t{t.b_key_id}\t2026-01-01\n"
    await conn.copy_to_table("learning_events", source=_Source(line.encode()), schema_name="rai")
    raise Leak("COPY FROM wrote into B")


async def read_server_file(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("SELECT pg_read_file('/etc/passwd')")
    raise Leak("a server file was read")


async def large_object_import(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("SELECT lo_import('/etc/passwd')")
    raise Leak("a server file was imported as a large object")


async def large_objects_of_others(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    n = await conn.fetchval("SELECT count(*) FROM pg_largeobject_metadata")
    return _nothing(n, "large objects to read")


async def planner_statistics(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    n = await conn.fetchval(
        "SELECT count(*) FROM pg_stats WHERE schemaname = 'rai' AND tablename = 'learning_events'"
    )
    return _nothing(n, "pg_stats rows (most common values) of an RLS table")


async def take_b_tenant_lock(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("SELECT rai.lock_tenant($1, 'integrity_checks')", t.b)
    raise Leak("A took B's audit-chain lock")


async def lock_b_lock_rows(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    rows = await conn.fetch("SELECT * FROM tenant_locks WHERE tenant_id = $1 FOR UPDATE", t.b)
    return _nothing(len(rows), "of B's lock rows locked")


async def truncate_table(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("TRUNCATE rai.learning_events")
    raise Leak("a tenant table was truncated")


async def disable_rls(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("ALTER TABLE rai.learning_events DISABLE ROW LEVEL SECURITY")
    raise Leak("row-level security was disabled")


async def no_force_rls(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("ALTER TABLE rai.learning_events NO FORCE ROW LEVEL SECURITY")
    raise Leak("FORCE row-level security was dropped")


async def drop_policy(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.a))
    await conn.execute("DROP POLICY tenant_isolation_select ON rai.learning_events")
    raise Leak("a policy was dropped")


async def set_role_owner(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("SET LOCAL ROLE rai_owner")
    raise Leak("rai_app became rai_owner")


async def set_role_superuser(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("SET LOCAL ROLE postgres")
    raise Leak("rai_app became postgres")


async def set_session_authorization(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("SET SESSION AUTHORIZATION postgres")
    raise Leak("session authorization changed")


async def create_extension_dblink(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS dblink")
    raise Leak("an extension was created")


async def update_fsm_table(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("INSERT INTO model_status_transitions VALUES ('REGISTERED', 'PRODUCTION')")
    raise Leak("the status machine was changed")


async def write_status_history(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.b))
    await conn.execute("UPDATE model_status_history SET reason = 'forged'")
    raise Leak("status history was written")


# --- as rai_metrics: the worker's metrics login may call the aggregates and nothing else ---


async def metrics_read_b_events(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.b))
    n = await conn.fetchval("SELECT count(*) FROM learning_events WHERE tenant_id = $1", t.b)
    raise Leak(f"rai_metrics read {n} of B's events")


async def metrics_read_tenants_with_aggregate_switch(conn: asyncpg.Connection, t: Targets) -> str:
    """The setting the aggregates turn on for rai_owner's policy, turned on by the caller."""
    await conn.execute("SELECT set_config('app.metrics_aggregate', 'on', true)")
    rows = await conn.fetch("SELECT id, name FROM tenants")
    raise Leak(f"rai_metrics read {len(rows)} tenant rows")


async def metrics_read_b_audit_chain(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.b))
    n = await conn.fetchval("SELECT count(*) FROM integrity_checks WHERE tenant_id = $1", t.b)
    raise Leak(f"rai_metrics read {n} of B's audit rows")


async def metrics_insert_event_as_b(conn: asyncpg.Connection, t: Targets) -> str:
    await _as(conn, str(t.b))
    await conn.execute(
        "INSERT INTO learning_events (tenant_id, season_id, field_id, payload, payload_sha256,"
        " signature, key_id) VALUES ($1, 'x', 'y', '{}', repeat('0', 64),"
        " decode(repeat('00', 64), 'hex'), $2)",
        t.b,
        t.b_key_id,
    )
    raise Leak("rai_metrics wrote an event into B")


async def metrics_copy_b_events(conn: asyncpg.Connection, t: Targets) -> str:
    sink = _Sink()
    await conn.copy_from_table("learning_events", output=sink, schema_name="rai")
    raise Leak(f"rai_metrics copied {len(bytes(sink.data).splitlines())} event rows")


async def metrics_create_view(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("CREATE VIEW rai.peek AS SELECT 1 AS x")
    raise Leak("rai_metrics created a view in schema rai")


async def metrics_call_tenant_lock(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("SELECT rai.lock_tenant($1, 'integrity_checks')", t.b)
    raise Leak("rai_metrics took B's audit-chain lock")


async def metrics_set_role_app(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("SET LOCAL ROLE rai_app")
    raise Leak("rai_metrics became rai_app")


async def metrics_set_role_owner(conn: asyncpg.Connection, t: Targets) -> str:
    await conn.execute("SET LOCAL ROLE rai_owner")
    raise Leak("rai_metrics became rai_owner")


class _Sink:
    def __init__(self) -> None:
        self.data = bytearray()

    async def __call__(self, chunk: bytes) -> None:
        self.data += chunk


class _Source:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> _Source:
        return self

    async def __anext__(self) -> bytes:
        if not self._data:
            raise StopAsyncIteration
        data, self._data = self._data, b""
        return data


SQL_ATTACKS: tuple[tuple[str, str, Attack], ...] = (
    ("read", "events with no tenant set", read_events_without_tenant),
    ("read", "tenants with no tenant set", read_tenants_without_tenant),
    ("read", "B's events by tenant_id as A", read_b_events_by_tenant_id),
    ("read", "B's event by replayed id as A", read_b_event_by_replayed_id),
    ("read", "B's signing keys as A", read_b_keys),
    ("read", "B's audit chain as A", read_b_audit_chain),
    ("write", "INSERT an event into B as A", insert_event_as_b),
    ("write", "append to B's audit chain as A", insert_audit_row_as_b),
    ("write", "UPDATE B's events as A", update_b_events),
    ("write", "rename tenant B as A", update_b_tenant_name),
    ("write", "DELETE B's events as A", delete_b_events),
    ("write", "DELETE B's event by replayed id", delete_b_event_by_id),
    ("move", "move A's event to B", move_own_event_to_b),
    ("move", "A's event signed with B's key id", foreign_key_to_b_key),
    ("settings", "tenant setting not a UUID", invalid_tenant_setting),
    ("settings", "tenant setting the nil UUID", nil_uuid_tenant_setting),
    ("settings", "RESET the tenant setting", reset_tenant_setting),
    ("settings", "SET row_security = off", row_security_off),
    ("functions", "call a SECURITY DEFINER trigger function", call_trigger_function),
    ("functions", "SECURITY DEFINER functions callable", security_definer_functions),
    ("functions", "call the metrics aggregates as rai_app", call_metrics_aggregates),
    ("views", "temporary view over B's rows", temporary_view),
    ("views", "CREATE VIEW in schema rai", create_view_in_schema),
    ("create", "CREATE TABLE in schema public", create_table_in_public),
    ("copy", "COPY table TO STDOUT", copy_table_to_stdout),
    ("copy", "COPY (query on B) TO STDOUT", copy_query_to_stdout),
    ("copy", "COPY TO a server file", copy_to_server_file),
    ("copy", "COPY FROM PROGRAM", copy_from_program),
    ("copy", "COPY FROM STDIN into B", copy_into_b),
    ("files", "pg_read_file", read_server_file),
    ("large objects", "lo_import a server file", large_object_import),
    ("large objects", "read others' large objects", large_objects_of_others),
    ("catalog", "pg_stats most common values", planner_statistics),
    ("locks", "take B's audit-chain lock (rai.lock_tenant)", take_b_tenant_lock),
    ("locks", "SELECT B's lock rows FOR UPDATE", lock_b_lock_rows),
    ("ddl", "TRUNCATE", truncate_table),
    ("ddl", "DISABLE ROW LEVEL SECURITY", disable_rls),
    ("ddl", "NO FORCE ROW LEVEL SECURITY", no_force_rls),
    ("ddl", "DROP POLICY", drop_policy),
    ("ddl", "CREATE EXTENSION dblink", create_extension_dblink),
    ("ddl", "change the status machine", update_fsm_table),
    ("ddl", "rewrite status history", write_status_history),
    ("roles", "SET ROLE rai_owner", set_role_owner),
    ("roles", "SET ROLE postgres", set_role_superuser),
    ("roles", "SET SESSION AUTHORIZATION", set_session_authorization),
)

# Run over a rai_metrics connection (the worker's metrics login).
METRICS_LOGIN_ATTACKS: tuple[tuple[str, str, Attack], ...] = (
    ("metrics login", "rai_metrics reads B's events", metrics_read_b_events),
    (
        "metrics login",
        "rai_metrics reads tenants with the aggregates' switch on",
        metrics_read_tenants_with_aggregate_switch,
    ),
    ("metrics login", "rai_metrics reads B's audit chain", metrics_read_b_audit_chain),
    ("metrics login", "rai_metrics INSERTs an event into B", metrics_insert_event_as_b),
    ("metrics login", "rai_metrics COPYs the events out", metrics_copy_b_events),
    ("metrics login", "rai_metrics CREATEs a view in schema rai", metrics_create_view),
    ("metrics login", "rai_metrics takes B's tenant lock", metrics_call_tenant_lock),
    ("metrics login", "rai_metrics SET ROLE rai_app", metrics_set_role_app),
    ("metrics login", "rai_metrics SET ROLE rai_owner", metrics_set_role_owner),
)


async def _attack(conn: asyncpg.Connection, targets: Targets, attack: Attack) -> dict[str, Any]:
    """Run one attack in a transaction that is always rolled back."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        observed = await attack(conn, targets)
        outcome, sqlstate = "returned nothing", ""
    except Leak as leak:
        outcome, sqlstate, observed = "SUCCEEDED", "", str(leak)
    except asyncpg.PostgresError as exc:
        outcome, sqlstate = "refused", exc.sqlstate or "?"
        observed = str(exc).splitlines()[0][:120]
    finally:
        await transaction.rollback()
    return {"outcome": outcome, "sqlstate": sqlstate, "observed": observed}


async def pooled_session_setting_leak(world: World, targets: Targets) -> dict[str, Any]:
    """A transaction acting for B sets the tenant *session*-wide; the pooled connection goes
    back and is handed to the next caller, who reads with no tenant of its own."""
    db = await Database.connect(app_dsn_for(world.admin_dsn), min_size=1, max_size=1)
    try:
        async with db.transaction(targets.b) as conn:
            await conn.execute(
                "SELECT set_config('app.current_tenant_id', $1, false)", str(targets.b)
            )
        async with db._pool.acquire() as conn:  # the next user of the same connection
            seen = await conn.fetchval("SELECT count(*) FROM rai.learning_events")
            setting = await conn.fetchval("SELECT current_setting('app.current_tenant_id', true)")
    finally:
        await db.close()
    if seen:
        return {"outcome": "SUCCEEDED", "sqlstate": "", "observed": f"{seen} of B's events seen"}
    return {
        "outcome": "returned nothing",
        "sqlstate": "",
        "observed": f"0 events; setting {setting!r}",
    }


async def listen_while_b_writes(world: World, targets: Targets) -> dict[str, Any]:
    """A's connection LISTENs on channels named after B while B's events are written."""
    heard: list[str] = []

    def hear(*args: object) -> None:
        heard.append(str(args[2:]))

    channels = [str(targets.b), f"tenant_{targets.b}", "rai", "learning_events", "training_runs"]
    conn = await asyncpg.connect(app_dsn_for(world.admin_dsn))
    try:
        for channel in channels:
            await conn.add_listener(channel, hear)
        await world.env.seed_events(targets.b, "2027", 10, seed=3)
        await conn.execute("SELECT pg_sleep(0.5)")
        for channel in channels:
            await conn.remove_listener(channel, hear)
    finally:
        await conn.close()
    if heard:
        return {"outcome": "SUCCEEDED", "sqlstate": "", "observed": f"{len(heard)} heard"}
    return {"outcome": "returned nothing", "sqlstate": "", "observed": "0 notifications heard"}


async def advisory_keys_stall_b(world: World, targets: Targets) -> dict[str, Any]:
    """A holds, session-wide, the advisory keys that once serialised B's audit appends and
    training runs; B appends to its chain meanwhile, with a 3 s lock timeout."""
    attacker = await asyncpg.connect(app_dsn_for(world.admin_dsn))
    try:
        for domain in ("integrity_checks", "training_runs"):
            await attacker.execute(
                "SELECT pg_advisory_lock(hashtextextended($1 || $2, 0))",
                f"rai.{domain}:",
                str(targets.b),
            )
        try:
            async with world.env.db.transaction(targets.b) as conn:
                await conn.execute("SET LOCAL lock_timeout = 3000")
                await record_check(conn, targets.b, "acceptance.rls", "probe", "OK", {})
        except asyncpg.LockNotAvailableError:
            return {"outcome": "SUCCEEDED", "sqlstate": "", "observed": "B's append stalled"}
    finally:
        await attacker.close()
    return {
        "outcome": "returned nothing",
        "sqlstate": "",
        "observed": "B appended while A held the advisory keys",
    }


async def fingerprint(world: World, tenant: UUID) -> dict[str, str]:
    """md5 over every row of ``tenant`` in every tenant table, as the administrator."""
    conn = await world.admin()
    try:
        out = {}
        for table in TENANT_TABLES:
            column = "id" if table == "tenants" else "tenant_id"
            out[table] = await conn.fetchval(
                "SELECT count(*) || ':'"
                " || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '')"
                f" FROM rai.{table} t WHERE {column} = $1",
                tenant,
            )
        return out
    finally:
        await conn.close()


async def run(stack: Stack, options: dict[str, Any]) -> ScenarioResult:
    started = time.monotonic()
    async with stack.world("rls") as world:
        env = world.env
        a, b = await env.tenant("tenant A"), await env.tenant("tenant B")
        await env.seed_events(a, "2025", 20, seed=1)
        await env.seed_events(b, "2025", 20, seed=2)
        admin = await world.admin()
        try:
            b_event = await admin.fetchrow(
                "SELECT id, key_id FROM learning_events WHERE tenant_id = $1 LIMIT 1", b
            )
            a_event = await admin.fetchval(
                "SELECT id FROM learning_events WHERE tenant_id = $1 LIMIT 1", a
            )
        finally:
            await admin.close()
        assert b_event is not None
        targets = Targets(a, b, b_event["id"], b_event["key_id"], a_event)
        details = []
        # First, as it makes B append to its own chain: B's writers are not stalled by A.
        stalled = await advisory_keys_stall_b(world, targets)
        details.append(
            {
                "via": "sql",
                "category": "locks",
                "attack": "hold B's former advisory keys",
                **stalled,
            }
        )
        http_targets = await rls_http.setup(world, a, b)  # writes B's rows: before the print
        before = await fingerprint(world, b)
        conn = await asyncpg.connect(
            app_dsn_for(world.admin_dsn), server_settings={"search_path": "rai"}
        )
        try:
            for category, name, attack in SQL_ATTACKS:
                row = await _attack(conn, targets, attack)
                details.append({"via": "sql", "category": category, "attack": name, **row})
        finally:
            await conn.close()
        conn = await asyncpg.connect(
            metrics_dsn_for(world.admin_dsn), server_settings={"search_path": "rai"}
        )
        try:
            for category, name, attack in METRICS_LOGIN_ATTACKS:
                row = await _attack(conn, targets, attack)
                details.append({"via": "sql", "category": category, "attack": name, **row})
        finally:
            await conn.close()
        leak = await pooled_session_setting_leak(world, targets)
        details.append(
            {
                "via": "sql",
                "category": "settings",
                "attack": "session set_config kept by a pooled connection",
                **leak,
            }
        )
        details += await rls_http.run_attacks(world, http_targets)
        after = await fingerprint(world, b)
        listened = await listen_while_b_writes(world, targets)
        details.append(
            {"via": "sql", "category": "listen", "attack": "LISTEN while B writes", **listened}
        )
    succeeded = [d["attack"] for d in details if d["outcome"] == "SUCCEEDED"]
    changed = sorted(t for t in TENANT_TABLES if before[t] != after[t])
    refused = sum(d["outcome"] == "refused" for d in details)
    return ScenarioResult(
        name=NAME,
        passed=not succeeded and not changed and len(details) >= 30,
        expected={"attacks": ">= 30", "succeeded": 0, "B tables changed": []},
        observed={
            "attacks": len(details),
            "refused": refused,
            "returned nothing": len(details) - refused - len(succeeded),
            "succeeded": len(succeeded),
            "succeeded attacks": succeeded,
            "B tables changed": changed,
        },
        seconds=time.monotonic() - started,
        key_figure=f"{len(details)} attacks, {len(succeeded)} succeeded",
        details=details,
    )
