"""``rai verify model``: honest provenance verifies; tampering with any one part is named."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from uuid import UUID, uuid4

import asyncpg
import pytest

from adapters.objectstore import S3Uri
from cli.main import main
from domain.canonical import canonical_sha256
from domain.signing import DocumentKind, Signer
from domain.trust import TrustedKeys
from services.bias import BiasAuditService, Evaluation
from services.drift import DriftAnalysisService, Window
from services.registry import ModelRegistryService, RegisterModel, bias_audit_document
from services.verify import ProvenanceVerifier
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Provenance:
    tenant: UUID
    parent: UUID
    model: UUID
    drift_report_uri: str
    artifact_uri: str
    artifact_version_id: str


def verifier(env: ServicesEnv) -> ProvenanceVerifier:
    """The verifier with the platform key pinned, as configuration gives it."""
    return ProvenanceVerifier(env.db, env.store, TrustedKeys.of(env.platform.public_key))


async def dataset_snapshot(env: ServicesEnv, tenant: UUID) -> tuple[str, str]:
    """A snapshot in the WORM datasets bucket; its version-pinned URI and SHA-256."""
    body = b'{"field_id":"f-1","outcome":4.2}\n'
    stored = await env.store.put_bytes(
        env.settings.s3_datasets_bucket, f"snapshots/{tenant}/{uuid4()}.jsonl", body
    )
    return str(stored.uri), hashlib.sha256(body).hexdigest()


async def honest_provenance(env: ServicesEnv, *, dataset_sha256: str | None = None) -> Provenance:
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1100, seed=1)
    await env.seed_events(tenant, "2026", 1100, shift=0.2, seed=2)
    report = await DriftAnalysisService(
        env.db, env.store, env.platform, bucket=env.registry_bucket
    ).generate_report(tenant, Window("2025"), Window("2026"))
    registry = ModelRegistryService(env.db, env.store, env.platform)
    audits = BiasAuditService(env.db, env.platform)
    ids = []
    for _ in range(2):
        uri, sha = await env.artifact(tenant)
        dataset_uri, dataset_sha = await dataset_snapshot(env, tenant)
        model = await registry.register_model(
            tenant,
            RegisterModel(
                model_name="yield",
                artifact_uri=uri,
                dataset_uri=dataset_uri,
                dataset_sha256=dataset_sha256 or dataset_sha,
                expected_artifact_sha256=sha,
                drift_report_id=report.id,
            ),
        )
        evaluations = [Evaluation(g, 5.0, 5.1) for g in ("north", "south") for _ in range(40)]
        await audits.audit(tenant, model.id, evaluations, group_by="region")
        ids.append(model)
    return Provenance(
        tenant,
        ids[0].id,
        ids[1].id,
        report.report_uri,
        ids[1].artifact_uri,
        ids[1].artifact_version_id or "",
    )


async def superuser(dsn: str, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(statement, *args)
    finally:
        await conn.close()


async def failures(env: ServicesEnv, p: Provenance) -> dict[str, str]:
    checks = await verifier(env).verify_model(p.tenant, p.model)
    return {c.name: c.detail for c in checks if not c.ok}


async def test_honest_provenance_verifies(services_env: ServicesEnv) -> None:
    p = await honest_provenance(services_env)
    checks = await verifier(services_env).verify_model(p.tenant, p.model)
    assert [(c.name, c.ok) for c in checks] == [
        ("model version", True),
        ("artifact sha256", True),
        ("model signature", True),
        ("lineage chain", True),
        ("drift report", True),
        ("bias audit", True),
        ("dataset sha256", True),
    ]
    assert "2 version(s)" in checks[3].detail


async def test_a_key_the_database_trusts_is_not_trusted(
    services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    """Whoever administers the database can register a platform key of their own (rai_app
    cannot: RA010) and re-sign a record with it; the verifier trusts only the key pinned in its
    configuration."""
    p = await honest_provenance(services_env)
    intruder = Signer.generate()
    await superuser(
        db_admin_dsn,
        "INSERT INTO rai.signing_keys (tenant_id, key_id, public_key, purpose)"
        " VALUES ($1, $2, $3, 'platform')",
        p.tenant,
        intruder.key_id,
        intruder.public_key,
    )
    async with services_env.db.transaction(p.tenant) as conn:
        audit = await conn.fetchrow(
            "SELECT * FROM bias_audits WHERE model_version_id = $1", p.model
        )
    assert audit is not None
    forged = {**bias_audit_document(audit).document(), "passed": not audit["passed"]}
    await superuser(
        db_admin_dsn,
        "UPDATE rai.bias_audits SET passed = $2, signature = $3, key_id = $4,"
        " report_sha256 = $5 WHERE id = $1",
        audit["id"],
        forged["passed"],
        intruder.sign(DocumentKind.BIAS_AUDIT, forged),
        intruder.key_id,
        canonical_sha256(forged),
    )
    found = await failures(services_env, p)
    assert list(found) == ["bias audit"]
    assert (
        f"signed by key {intruder.key_id}, which is not a trusted platform key"
        in (found["bias audit"])
    )


async def test_a_dataset_that_does_not_hash_to_its_record_is_named(
    services_env: ServicesEnv,
) -> None:
    p = await honest_provenance(services_env, dataset_sha256="e" * 64)
    found = await failures(services_env, p)
    assert list(found) == ["dataset sha256"]
    assert found["dataset sha256"].endswith(f"recorded {'e' * 64}")


async def test_unreadable_artifact_is_named(services_env: ServicesEnv) -> None:
    p = await honest_provenance(services_env)
    uri = S3Uri.parse(p.artifact_uri)
    # a newer upload at the same key does not fool it: the recorded version is what counts
    await services_env.store.put_bytes(uri.bucket, uri.key, b"a different model")
    assert await failures(services_env, p) == {}
    await services_env.store.delete_version(uri.bucket, uri.key, p.artifact_version_id)
    found = await failures(services_env, p)
    assert list(found) == ["artifact sha256"]
    assert "cannot read the recorded artifact" in found["artifact sha256"]


@pytest.mark.parametrize(
    ("tamper", "named"),
    [
        (
            "UPDATE rai.model_versions SET signature = decode(repeat('cd', 64), 'hex')"
            " WHERE id = $1",
            {"model signature"},
        ),
        (
            "UPDATE rai.model_versions SET artifact_sha256 = repeat('f', 64) WHERE id = $1",
            {"artifact sha256", "model signature", "lineage chain"},
        ),
        (
            "UPDATE rai.model_versions SET signature = decode(repeat('cd', 64), 'hex')"
            " WHERE id = (SELECT parent_version_id FROM rai.model_versions WHERE id = $1)",
            {"lineage chain"},
        ),
        (
            "UPDATE rai.bias_audits SET metrics = jsonb_set(metrics, '{error_ratio}', '0.5')"
            " WHERE model_version_id = $1",
            {"bias audit"},
        ),
        (
            "UPDATE rai.bias_audits SET passed = NOT passed WHERE model_version_id = $1",
            {"bias audit"},
        ),
        (
            "UPDATE rai.drift_reports SET summary = '{}', report_sha256 = repeat('0', 64)"
            " WHERE id = (SELECT drift_report_id FROM rai.model_versions WHERE id = $1)",
            {"drift report"},
        ),
    ],
)
async def test_tampering_is_named(
    services_env: ServicesEnv, db_admin_dsn: str, tamper: str, named: set[str]
) -> None:
    p = await honest_provenance(services_env)
    await superuser(db_admin_dsn, tamper, p.model)
    assert set(await failures(services_env, p)) == named


async def test_edited_drift_report_object_is_named(services_env: ServicesEnv) -> None:
    p = await honest_provenance(services_env)
    uri = S3Uri.parse(p.drift_report_uri)
    assert uri.version_id is not None
    body = await services_env.store.get_bytes(uri.bucket, uri.key, uri.version_id)
    edited = body.replace(b'"verdict":"DRIFT"', b'"verdict":"NO_DRIFT"')
    assert edited != body
    await services_env.store.delete_version(uri.bucket, uri.key, uri.version_id)
    await services_env.store.put_bytes(uri.bucket, uri.key, edited)
    found = await failures(services_env, p)
    assert list(found) == ["drift report"]


async def test_cli_prints_a_checklist_and_fails_on_tampering(
    services_env: ServicesEnv,
    db_admin_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = await honest_provenance(services_env)
    env = services_env.settings
    monkeypatch.setenv("RAI_DATABASE_URL", db_admin_dsn)
    monkeypatch.delenv("RAI_APP_DATABASE_URL", raising=False)
    monkeypatch.setenv("RAI_S3_ENDPOINT_URL", env.s3_endpoint_url)
    monkeypatch.setenv("RAI_S3_ACCESS_KEY", env.s3_access_key or "")
    assert env.s3_secret_key is not None
    monkeypatch.setenv("RAI_S3_SECRET_KEY", env.s3_secret_key.get_secret_value())
    monkeypatch.setenv("RAI_TRUSTED_PLATFORM_KEY", services_env.platform.public_key.hex())
    argv = ["verify", "model", str(p.model), "--tenant", str(p.tenant)]
    assert await asyncio.to_thread(main, argv) == 0
    out = capsys.readouterr().out
    assert out.count("ok  ") == 7
    assert out.rstrip().endswith(": VERIFIED")
    await superuser(
        db_admin_dsn,
        "UPDATE rai.model_versions SET signature = decode(repeat('cd', 64), 'hex') WHERE id = $1",
        p.model,
    )
    assert await asyncio.to_thread(main, argv) == 1
    out = capsys.readouterr().out
    assert "FAIL  model signature  signature does not verify" in out
    assert out.rstrip().endswith("NOT VERIFIED")
