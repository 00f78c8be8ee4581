"""DriftAnalysisService against real Postgres and S3: statistics, signed report, isolation."""

from __future__ import annotations

import hashlib
import json

import pytest

from adapters.objectstore import S3Uri
from domain.drift import Verdict
from domain.signing import DocumentKind, verify
from services.drift import DriftAnalysisService, Window
from services.errors import GovernanceRefusal
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration


def service(env: ServicesEnv) -> DriftAnalysisService:
    return DriftAnalysisService(env.db, env.store, env.platform, bucket=env.registry_bucket)


async def test_drifted_season_gives_a_signed_drift_report(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1200, seed=1)
    await env.seed_events(tenant, "2026", 1200, shift=0.15, seed=2)
    record = await service(env).generate_report(tenant, Window("2025"), Window("2026"))
    assert record.result.verdict is Verdict.DRIFT
    verdicts = {f.name: f.verdict for f in record.result.features}
    assert verdicts == {
        "ndvi": Verdict.DRIFT,
        "rain_mm": Verdict.NO_DRIFT,
        "soil": Verdict.NO_DRIFT,
    }

    uri = S3Uri.parse(record.report_uri)
    assert uri.version_id
    body = await env.store.get_bytes(uri.bucket, uri.key, uri.version_id)
    assert hashlib.sha256(body).hexdigest() == record.report_sha256
    report = json.loads(body)
    async with env.db.transaction(tenant) as conn:
        row = await conn.fetchrow("SELECT * FROM drift_reports WHERE id = $1", record.id)
    assert row is not None
    assert row["report_sha256"] == record.report_sha256
    assert row["summary"]["verdict"] == "DRIFT"
    assert verify(env.platform.public_key, DocumentKind.DRIFT_REPORT, report, row["signature"])
    report["result"]["verdict"] = "NO_DRIFT"
    assert not verify(env.platform.public_key, DocumentKind.DRIFT_REPORT, report, row["signature"])


async def test_small_samples_are_never_drift(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 300, seed=1)
    await env.seed_events(tenant, "2026", 300, shift=0.5, seed=2)
    result = await service(env).calculate_drift(tenant, Window("2025"), Window("2026"))
    assert result.verdict is Verdict.INSUFFICIENT_DATA


async def test_another_tenants_events_are_invisible(services_env: ServicesEnv) -> None:
    env = services_env
    owner, other = await env.tenant("owner"), await env.tenant("other")
    await env.seed_events(owner, "2025", 50)
    with pytest.raises(GovernanceRefusal, match="no learning events in season 2025"):
        await service(env).generate_report(other, Window("2025"), Window("2025"))
    async with env.db.transaction(other) as conn:
        assert await conn.fetchval("SELECT count(*) FROM drift_reports") == 0
