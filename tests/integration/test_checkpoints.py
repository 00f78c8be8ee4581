"""Signed checkpoints of the audit chain, on the real stack: a superuser who edits a row,
rewrites and recomputes the chain from some row on, or deletes its last rows is caught by
``rai db verify-chain``; an honest chain with checkpoints verifies."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
import pytest

from adapters.objectstore import AccessDeniedError
from cli.main import main
from db.integrity import record_check, verify_chain
from db.tenants import create_tenant
from domain.checkpoint import Checkpoint, sign_checkpoint, tenant_prefix
from domain.signing import Signer
from domain.trust import TrustedKeys
from services.checkpoints import ChainBrokenError, CheckpointService
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration


def checkpoints(env: ServicesEnv) -> CheckpointService:
    return CheckpointService(
        env.db,
        env.store,
        TrustedKeys.of(env.platform.public_key),
        bucket=env.settings.s3_datasets_bucket,
        retention_days=1,
        platform=env.platform,
    )


async def append(env: ServicesEnv, tenant: UUID, n: int) -> None:
    for i in range(n):
        async with env.db.transaction(tenant) as conn:
            await record_check(conn, tenant, "test.step", f"s-{i}", "OK", {"i": i})


async def plain_tenant(env: ServicesEnv, name: str = "farm") -> UUID:
    """A tenant whose audit chain starts empty (``env.tenant`` also registers its platform key,
    which is a row of the chain): the positions below count from the first row."""
    return (await create_tenant(env.db, name)).id


async def as_superuser(dsn: str, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run statements as the database superuser with every trigger switched off."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for statement, args in statements:
                await conn.execute(statement, *args)
    finally:
        await conn.close()


async def rewrite_from(dsn: str, tenant: UUID, seq: int) -> None:
    """What a superuser covering their tracks does: change row ``seq`` and recompute every
    hash after it, so the chain is consistent again on its own."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            head = await conn.fetchval(
                "SELECT max(seq) FROM rai.integrity_checks WHERE tenant_id = $1", tenant
            )
            for current in range(seq, head + 1):
                await conn.execute(
                    "UPDATE rai.integrity_checks AS c SET"
                    " outcome = CASE WHEN c.seq = $3 THEN 'FORGED' ELSE c.outcome END,"
                    " prev_hash = p.row_hash,"
                    " row_hash = rai.integrity_row_hash(p.row_hash, c.tenant_id, c.seq,"
                    "   c.check_type, c.subject_id,"
                    "   CASE WHEN c.seq = $3 THEN 'FORGED' ELSE c.outcome END, c.details,"
                    "   c.created_at)"
                    " FROM rai.integrity_checks AS p"
                    " WHERE c.tenant_id = $1 AND c.seq = $2 AND p.tenant_id = $1"
                    "   AND p.seq = $2 - 1",
                    tenant,
                    current,
                    seq,
                )
    finally:
        await conn.close()


async def test_an_honest_chain_with_checkpoints_verifies(services_env: ServicesEnv) -> None:
    env, service = services_env, checkpoints(services_env)
    tenant = await plain_tenant(env)
    await append(env, tenant, 4)
    first = await service.checkpoint(tenant)
    assert first.written
    assert (first.checkpoint.size, first.checkpoint.tenant_id) == (5, tenant)
    info = await env.store.head(env.settings.s3_datasets_bucket, first.key)
    assert info is not None
    assert info.retention is not None
    assert info.retention.mode == "COMPLIANCE"
    assert info.retention.retain_until > datetime.now(UTC) + timedelta(hours=23)
    # Nothing new: the newest checkpoint already says it.
    again = await service.checkpoint(tenant)
    assert (again.written, again.key) == (False, first.key)

    await append(env, tenant, 3)
    assessment = await service.assess(tenant)
    assert assessment.ok
    assert assessment.uncovered_rows == 3
    assert [f.holds for f in assessment.findings] == [True]
    second = await service.checkpoint(tenant)
    assert second.checkpoint.size == 8
    assessment = await service.assess(tenant)
    assert (assessment.ok, assessment.checkpoints, assessment.uncovered_rows) == (True, 2, 0)
    assert assessment.findings[0].key == second.key


async def test_a_checkpoint_cannot_be_deleted(services_env: ServicesEnv) -> None:
    tenant = await plain_tenant(services_env)
    stored = await checkpoints(services_env).checkpoint(tenant)
    info = await services_env.store.head(services_env.settings.s3_datasets_bucket, stored.key)
    assert info is not None
    assert info.version_id is not None
    with pytest.raises(AccessDeniedError):
        await services_env.store.delete_version(
            services_env.settings.s3_datasets_bucket, stored.key, info.version_id
        )


async def test_an_edited_row_is_named(services_env: ServicesEnv, db_admin_dsn: str) -> None:
    env, service = services_env, checkpoints(services_env)
    tenant = await plain_tenant(env)
    await append(env, tenant, 5)
    stored = await service.checkpoint(tenant)
    await as_superuser(
        db_admin_dsn,
        (
            "UPDATE rai.integrity_checks SET outcome = 'FORGED' WHERE tenant_id = $1 AND seq = 3",
            (tenant,),
        ),
    )
    assessment = await service.assess(tenant)
    assert not assessment.ok
    assert assessment.verdict.problems == ("seq 3: row_hash does not match the row's content",)
    assert [f.holds for f in assessment.findings] == [False]
    assert assessment.findings[0].detail.startswith(
        f"edited: the chain breaks at seq 3, inside the 6 rows {stored.key}"
    )
    with pytest.raises(ChainBrokenError, match="seq 3: row_hash does not match"):
        await service.checkpoint(tenant)


async def test_a_recomputed_suffix_is_named(services_env: ServicesEnv, db_admin_dsn: str) -> None:
    env, service = services_env, checkpoints(services_env)
    tenant = await plain_tenant(env)
    await append(env, tenant, 3)
    older = await service.checkpoint(tenant)  # size 4
    await append(env, tenant, 3)
    newer = await service.checkpoint(tenant)  # size 7
    await append(env, tenant, 2)  # 9 rows, the last two not yet checkpointed
    await rewrite_from(db_admin_dsn, tenant, 6)
    # The chain alone cannot tell: every link and every hash is consistent again.
    assert (await verify_chain(env.db, tenant)).ok
    assessment = await service.assess(tenant)
    assert not assessment.ok
    failing, holding = assessment.findings
    assert (failing.key, failing.holds, holding.key, holding.holds) == (
        newer.key,
        False,
        older.key,
        True,
    )
    assert failing.detail.startswith("rewritten: row seq 7 has hash")
    assert failing.detail.endswith("the chain was changed at or before seq 7")
    with pytest.raises(ChainBrokenError, match="no longer reaches its newest checkpoint"):
        await service.checkpoint(tenant)


async def test_a_cut_tail_is_named(services_env: ServicesEnv, db_admin_dsn: str) -> None:
    env, service = services_env, checkpoints(services_env)
    tenant = await plain_tenant(env)
    await append(env, tenant, 5)
    stored = await service.checkpoint(tenant)  # size 6
    await as_superuser(
        db_admin_dsn,
        ("DELETE FROM rai.integrity_checks WHERE tenant_id = $1 AND seq > 4", (tenant,)),
    )
    assert (await verify_chain(env.db, tenant)).ok  # what is left is a perfect chain
    assessment = await service.assess(tenant)
    assert not assessment.ok
    assert assessment.findings[0].detail == (
        f"truncated: the chain ends at seq 4 but {stored.key}"
        f" ({stored.checkpoint.describe()}) covers seq 6; rows 5..6 were removed"
    )
    # Rows appended after the cut do not hide it: seq 6 is now another row.
    await append(env, tenant, 3)
    assessment = await service.assess(tenant)
    assert assessment.findings[0].detail.startswith("rewritten: row seq 6 has hash")


async def test_a_forged_checkpoint_in_the_bucket_is_named_not_trusted(
    services_env: ServicesEnv,
) -> None:
    env, service = services_env, checkpoints(services_env)
    tenant = await plain_tenant(env)
    stored = await service.checkpoint(tenant)
    await append(env, tenant, 2)
    intruder = Signer.generate()
    forged = Checkpoint(tenant, 3, "ab" * 32, datetime.now(UTC))
    await env.store.put_bytes(
        env.settings.s3_datasets_bucket, forged.object_key(), sign_checkpoint(intruder, forged)
    )
    assessment = await service.assess(tenant)
    assert not assessment.ok
    bad, good = assessment.findings
    assert bad.detail.endswith("not signed by a trusted key " + f"({env.platform.key_id})")
    assert (good.key, good.holds) == (stored.key, True)
    # A writer is not stopped by whoever can put objects into the bucket.
    assert (await service.checkpoint(tenant)).checkpoint.size == 3


async def test_cli_checkpoint_and_verify_chain(
    services_env: ServicesEnv,
    db_admin_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = services_env
    tenant = await plain_tenant(env)
    await append(env, tenant, 4)
    monkeypatch.setenv("RAI_DATABASE_URL", db_admin_dsn)
    monkeypatch.delenv("RAI_APP_DATABASE_URL", raising=False)
    monkeypatch.setenv("RAI_S3_ENDPOINT_URL", env.settings.s3_endpoint_url)
    monkeypatch.setenv("RAI_S3_ACCESS_KEY", env.settings.s3_access_key or "")
    assert env.settings.s3_secret_key is not None
    monkeypatch.setenv("RAI_S3_SECRET_KEY", env.settings.s3_secret_key.get_secret_value())
    monkeypatch.setenv("RAI_S3_DATASETS_BUCKET", env.settings.s3_datasets_bucket)
    monkeypatch.setenv("RAI_PLATFORM_SIGNING_KEY", env.platform.seed_hex())
    monkeypatch.delenv("RAI_TRUSTED_PLATFORM_KEY", raising=False)  # derived from the above

    async def rai(*argv: str) -> tuple[int, str]:
        code = await asyncio.to_thread(main, list(argv))
        return code, capsys.readouterr().out

    code, out = await rai("db", "verify-chain", "--tenant", str(tenant), "--require-checkpoint")
    assert code == 1
    assert "BROKEN  no checkpoint yet" in out
    other = await plain_tenant(env, "other farm")
    code, out = await rai("audit", "checkpoint", "--all", "--json")
    assert code == 0
    report = json.loads(out)
    assert sorted(c["tenant_id"] for c in report["checkpoints"]) == sorted(
        [str(tenant), str(other)]
    )
    assert report["failed"] == []
    code, out = await rai("audit", "checkpoint", "--tenant", str(tenant), "--json")
    assert code == 0
    written = json.loads(out)["checkpoints"][0]
    assert written["written"] is False  # --all just wrote it
    assert written["size"] == 5
    assert written["key"].startswith(tenant_prefix(tenant))
    code, out = await rai("db", "verify-chain", "--tenant", str(tenant), "--require-checkpoint")
    assert code == 0, out
    assert "ok      checkpoint " in out
    assert "chain intact, 5 rows" in out

    await as_superuser(
        db_admin_dsn,
        ("DELETE FROM rai.integrity_checks WHERE tenant_id = $1 AND seq > 3", (tenant,)),
    )
    code, out = await rai("db", "verify-chain", "--tenant", str(tenant))
    assert code == 1
    assert f"BROKEN  checkpoint truncated: the chain ends at seq 3 but {written['key']}" in out
    code, out = await rai("db", "verify-chain", "--tenant", str(tenant), "--json")
    report = json.loads(out)
    assert (code, report["ok"], report["rows"]) == (1, False, 3)
    assert report["checkpoints"]["findings"][0]["holds"] is False
    code, out = await rai("audit", "checkpoint", "--tenant", str(tenant))
    assert code == 1
    assert f"FAIL  tenant {tenant}: the audit chain of tenant {tenant} no longer reaches" in out
    unknown = "00000000-0000-4000-8000-000000000000"
    assert (await rai("audit", "checkpoint", "--tenant", unknown))[0] == 3
