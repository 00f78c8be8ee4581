"""The database-held gauges (adapters.metrics.DatabaseState) on a real Postgres: open dead
letters per queue, the retraining cooldown after a rollback, active training runs and tenant
names are read at scrape time as rai_metrics (through the rai.metrics_* aggregate functions,
no privileged login), so a process that just started reports them right; a database that
cannot be read, or a login other than rai_metrics, gives rai_metrics_database_up 0 and none of
them. The functions give aggregates only, to rai_metrics only (migration 0011): rai_app may not
call them, and rai_metrics may read no table, create nothing, and call nothing else."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import DatabaseState, Metrics, process_exposition
from domain.model_status import ModelStatus
from services.pipeline import PipelineService, resolve_dead_letter
from services.registry import ModelRegistryService
from settings import app_dsn_for, metrics_dsn_for
from tests.integration.promotion_support import model_in
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration


async def scrape(dsn: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """What a freshly started process exports (no in-process events at all)."""
    state = DatabaseState(dsn, max_age=0)
    await state.refresh()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    body = process_exposition(Metrics(), state).decode()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
    return found


async def test_gauges_come_from_the_database(services_env: ServicesEnv, db_admin_dsn: str) -> None:
    env = services_env
    quiet = await env.tenant("quiet farm")
    failing = await env.tenant("failing farm")
    rolled = await env.tenant("rolled back farm")
    pipeline = PipelineService(env.db, env.store, datasets_bucket="unused")
    letters = [
        await pipeline.dead_letter(
            failing, workflow_id=f"retrain/{failing}", error="boom", attempts=5,
            training_run_id=None,
        )
        for _ in range(2)
    ]  # fmt: skip
    await model_in(env, rolled, ModelStatus.PRODUCTION)
    await ModelRegistryService(env.db, env.store, env.platform).rollback(rolled, "yield")
    await start_run(env, quiet, running=True)
    await start_run(env, rolled, running=False)

    found = await scrape(metrics_dsn_for(db_admin_dsn))
    assert found["rai_metrics_database_up"] == {(): 1.0}
    assert found["rai_dead_letters_open"] == {(("queue", "training-queue-failed"),): 2.0}
    assert found["rai_retrain_cooldown_active"] == {
        (("tenant", str(quiet)),): 0.0,
        (("tenant", str(failing)),): 0.0,
        (("tenant", str(rolled)),): 1.0,
    }
    assert found["rai_tenant_info"][(("name", "rolled back farm"), ("tenant", str(rolled)))] == 1
    runs = found["rai_training_runs_active"]
    assert runs[(("status", "RUNNING"), ("tenant", str(quiet)))] == 1
    assert runs[(("status", "QUEUED"), ("tenant", str(quiet)))] == 0
    assert runs[(("status", "QUEUED"), ("tenant", str(rolled)))] == 1
    assert runs[(("status", "RUNNING"), ("tenant", str(failing)))] == 0
    oldest = found["rai_training_run_oldest_running_seconds"]
    assert oldest[(("tenant", str(quiet)),)] > 0
    assert oldest[(("tenant", str(rolled)),)] == 0

    await resolve_dead_letter(env.db, failing, letters[0])
    assert (await scrape(metrics_dsn_for(db_admin_dsn)))["rai_dead_letters_open"] == {
        (("queue", "training-queue-failed"),): 1.0
    }


async def start_run(env: ServicesEnv, tenant: UUID, *, running: bool) -> None:
    async with env.db.transaction(tenant) as conn:
        # A run is recorded only by the holder of the tenant's newest fence (RA008).
        await conn.execute(
            "INSERT INTO tenant_fences (tenant_id, fence, holder) VALUES ($1, 1, 'w/r')", tenant
        )
        run: UUID = await conn.fetchval(
            "INSERT INTO training_runs (tenant_id, workflow_id, fencing_token)"
            " VALUES ($1, 'w', 1) RETURNING id",
            tenant,
        )
        if running:
            await conn.execute(
                "UPDATE training_runs SET status = 'RUNNING',"
                " started_at = now() - interval '1 hour' WHERE id = $1",
                run,
            )


async def test_a_database_that_cannot_be_read_withholds_the_gauges(
    services_env: ServicesEnv,
) -> None:
    await services_env.tenant("farm")
    found = await scrape("postgresql://x@127.0.0.1:1/none")
    assert found["rai_metrics_database_up"] == {(): 0.0}
    assert "rai_dead_letters_open" not in found


# What each function returns: counts, flags, ages, a tenant's id and name. Never a dead
# letter's error text, a workflow id, a run's dataset or anything else of a row.
AGGREGATES = {
    "metrics_open_dead_letters()": "TABLE(queue text, open bigint)",
    "metrics_cooldowns(timestamp with time zone,interval)": "TABLE(tenant_id uuid, active boolean)",
    "metrics_tenants()": "TABLE(tenant_id uuid, name text)",
    "metrics_active_training_runs(timestamp with time zone)": (
        "TABLE(tenant_id uuid, status text, runs bigint, oldest_seconds double precision)"
    ),
}


async def test_the_collector_refuses_any_login_but_rai_metrics(
    services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    """rai_app (the services' login, which once read these) and the superuser alike: the
    gauges are withheld, the failure is visible as rai_metrics_database_up 0."""
    await services_env.tenant("farm")
    for dsn in (app_dsn_for(db_admin_dsn), db_admin_dsn):
        found = await scrape(dsn)
        assert found["rai_metrics_database_up"] == {(): 0.0}, dsn
        assert "rai_tenant_info" not in found


async def test_the_metrics_functions_give_aggregates_to_rai_metrics_alone(
    db_admin_dsn: str,
) -> None:
    conn = await asyncpg.connect(db_admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT p.oid::regprocedure::text AS signature,"
            " pg_get_function_result(p.oid) AS result, p.prosecdef, p.proconfig,"
            " pg_get_userbyid(p.proowner) AS owner, p.proacl::text AS acl"
            " FROM pg_proc AS p WHERE p.pronamespace = 'rai'::regnamespace"
            " AND p.proname LIKE 'metrics\\_%'"
        )
        assert {row["signature"]: row["result"] for row in rows} == {
            f"rai.{name}": result for name, result in AGGREGATES.items()
        }
        for row in rows:
            assert row["prosecdef"], row["signature"]
            assert row["owner"] == "rai_owner"
            assert row["proconfig"] == ['search_path=""']
            assert row["acl"] == "{rai_owner=X/rai_owner,rai_metrics=X/rai_owner}"
        # Any other role (PUBLIC) may not call them, even with the schema open to it.
        await conn.execute("BEGIN")  # rolled back: the role never exists outside this test
        try:
            await conn.execute("CREATE ROLE rai_test_outsider NOLOGIN")
            await conn.execute("GRANT USAGE ON SCHEMA rai TO rai_test_outsider")
            await conn.execute("SET LOCAL ROLE rai_test_outsider")
            with pytest.raises(
                asyncpg.InsufficientPrivilegeError, match="function metrics_open_dead_letters"
            ):
                await conn.fetch("SELECT * FROM rai.metrics_open_dead_letters()")
        finally:
            await conn.execute("ROLLBACK")
    finally:
        await conn.close()


async def test_rai_app_may_call_none_of_them(services_env: ServicesEnv, db_admin_dsn: str) -> None:
    tenant = await services_env.tenant("a farm with a name")
    conn = await asyncpg.connect(app_dsn_for(db_admin_dsn))
    try:
        for signature, arguments in SAMPLE_CALLS.items():
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('app.current_tenant_id', $1, true)", str(tenant)
                )
                with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                    await conn.fetch(f"SELECT * FROM rai.{signature.split('(')[0]}({arguments})")
                assert refused.value.sqlstate == "42501", signature
                assert "permission denied for function" in str(refused.value), signature
    finally:
        await conn.close()


# How each aggregate is called (every one of AGGREGATES).
SAMPLE_CALLS = {
    "metrics_open_dead_letters()": "",
    "metrics_cooldowns(timestamp with time zone,interval)": "now(), interval '7 days'",
    "metrics_tenants()": "",
    "metrics_active_training_runs(timestamp with time zone)": "now()",
}


async def test_rai_metrics_gets_the_aggregates(
    services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    env = services_env
    first, second = await env.tenant("first farm"), await env.tenant("second farm")
    pipeline = PipelineService(env.db, env.store, datasets_bucket="unused")
    await pipeline.dead_letter(
        second, workflow_id=f"retrain/{second}", error="secret", attempts=1,
        training_run_id=None,
    )  # fmt: skip
    await start_run(env, first, running=True)
    assert set(SAMPLE_CALLS) == set(AGGREGATES)
    conn = await asyncpg.connect(metrics_dsn_for(db_admin_dsn))
    try:
        assert await conn.fetchval("SELECT current_user") == "rai_metrics"
        tenants = await conn.fetch("SELECT * FROM rai.metrics_tenants()")
        assert sorted((r["tenant_id"], r["name"]) for r in tenants) == sorted(
            [(first, "first farm"), (second, "second farm")]
        )
        letters = await conn.fetch("SELECT * FROM rai.metrics_open_dead_letters()")
        assert [tuple(r) for r in letters] == [("training-queue-failed", 1)]
        cooldowns = await conn.fetch(
            "SELECT * FROM rai.metrics_cooldowns(now(), interval '7 days')"
        )
        assert {r["tenant_id"]: r["active"] for r in cooldowns} == {first: False, second: False}
        runs = await conn.fetch("SELECT * FROM rai.metrics_active_training_runs(now())")
        assert [(r["tenant_id"], r["status"], r["runs"]) for r in runs] == [(first, "RUNNING", 1)]
    finally:
        await conn.close()


async def test_rai_metrics_reads_no_table_and_creates_nothing(
    services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    env = services_env
    tenant = await env.tenant("a farm with events")
    await env.seed_events(tenant, "2025", 5, seed=1)
    conn = await asyncpg.connect(metrics_dsn_for(db_admin_dsn))
    try:
        for table in ("learning_events", "tenants", "dead_letters", "signing_keys"):
            for setting in ("", "on"):  # the functions' own switch opens nothing to it
                async with conn.transaction():
                    await conn.execute(
                        "SELECT set_config('app.current_tenant_id', $1, true)", str(tenant)
                    )
                    await conn.execute(
                        "SELECT set_config('app.metrics_aggregate', $1, true)", setting
                    )
                    with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                        await conn.fetch(f"SELECT * FROM rai.{table}")
                    assert refused.value.sqlstate == "42501", table
                    assert f"permission denied for table {table}" in str(refused.value)
        for statement in (
            "CREATE TABLE rai.stash (x text)",
            "CREATE VIEW rai.peek AS SELECT 1 AS x",
            "SELECT rai.current_tenant_id()",
            "SET ROLE rai_app",
            "SET ROLE rai_owner",
        ):
            async with conn.transaction():
                with pytest.raises(asyncpg.InsufficientPrivilegeError) as refused:
                    await conn.execute(statement)
                assert refused.value.sqlstate == "42501", statement
    finally:
        await conn.close()


async def test_rai_metrics_has_no_power_beyond_the_four_functions(db_admin_dsn: str) -> None:
    owner_conn = await asyncpg.connect(db_admin_dsn)
    try:
        role = await owner_conn.fetchrow("SELECT * FROM pg_roles WHERE rolname = 'rai_metrics'")
        assert role is not None
        assert role["rolcanlogin"]
        assert not role["rolsuper"]
        assert not role["rolbypassrls"]
        assert not role["rolcreaterole"]
        assert not role["rolcreatedb"]
        assert not role["rolinherit"]
        assert not await owner_conn.fetchval(
            "SELECT count(*) FROM pg_auth_members WHERE member = 'rai_metrics'::regrole"
        )
        assert not await owner_conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE relowner = 'rai_metrics'::regrole"
        )
        assert not await owner_conn.fetch(
            "SELECT table_name FROM information_schema.role_table_grants"
            " WHERE grantee = 'rai_metrics'"
        )
        assert not await owner_conn.fetch(
            "SELECT c.relname FROM pg_class AS c WHERE c.relnamespace = 'rai'::regnamespace"
            " AND c.relkind IN ('r', 'v', 'm', 'S', 'p')"
            " AND (has_table_privilege('rai_metrics', c.oid, 'SELECT')"
            " OR has_table_privilege('rai_metrics', c.oid, 'INSERT')"
            " OR has_table_privilege('rai_metrics', c.oid, 'UPDATE')"
            " OR has_table_privilege('rai_metrics', c.oid, 'DELETE'))"
        )
        assert await owner_conn.fetchval(
            "SELECT has_schema_privilege('rai_metrics', 'rai', 'USAGE')"
        )
        assert not await owner_conn.fetchval(
            "SELECT has_schema_privilege('rai_metrics', 'rai', 'CREATE')"
        )
        callable_ = await owner_conn.fetch(
            "SELECT p.oid::regprocedure::text AS signature FROM pg_proc AS p"
            " WHERE p.pronamespace = 'rai'::regnamespace"
            " AND has_function_privilege('rai_metrics', p.oid, 'EXECUTE')"
        )
        assert {row["signature"] for row in callable_} == {f"rai.{name}" for name in AGGREGATES}
    finally:
        await owner_conn.close()


async def test_rai_app_still_sees_one_tenant_when_it_reads_the_tables(
    services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    env = services_env
    mine, theirs = await env.tenant("mine"), await env.tenant("theirs")
    pipeline = PipelineService(env.db, env.store, datasets_bucket="unused")
    for tenant in (mine, theirs):
        await pipeline.dead_letter(
            tenant, workflow_id=f"retrain/{tenant}", error="secret", attempts=1,
            training_run_id=None,
        )  # fmt: skip
    conn = await asyncpg.connect(app_dsn_for(db_admin_dsn))
    collector = await asyncpg.connect(metrics_dsn_for(db_admin_dsn))
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.current_tenant_id', $1, true)", str(mine))
            # The setting the functions use widens nothing for rai_app itself.
            await conn.execute("SELECT set_config('app.metrics_aggregate', 'on', true)")
            for table, key in (
                ("dead_letters", "tenant_id"),
                ("tenants", "id"),
                ("training_runs", "tenant_id"),
                ("model_status_history", "tenant_id"),
            ):
                seen = await conn.fetchval(
                    f"SELECT count(*) FROM rai.{table} WHERE {key} <> $1",
                    mine,
                )
                assert seen == 0, table
            assert await conn.fetchval("SELECT count(*) FROM rai.dead_letters") == 1
        # while the collector's aggregate sees both tenants' letters, and no more than their
        # number
        assert [tuple(r) for r in await collector.fetch(
            "SELECT * FROM rai.metrics_open_dead_letters()"
        )] == [("training-queue-failed", 2)]  # fmt: skip
    finally:
        await conn.close()
        await collector.close()
