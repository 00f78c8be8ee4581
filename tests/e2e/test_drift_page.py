"""A stored drift report as a page: the API serves it at
/v1/tenants/{tenant}/drift-reports/{id}.html, `rai drift report ID --html FILE` writes the same
page, `rai drift compare ... --html FILE` writes one for two CSV files; Debian's headless
Chromium renders each with no console message (the check is shown to catch one)."""

from __future__ import annotations

import asyncio
import re
import struct
import sys
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api.server import ApiConfig, running_api
from services.drift import DriftAnalysisService, Window
from services.tokens import create_token
from tests.e2e.support import worker_settings
from tests.e2e.test_cli_json import write_csv
from tests.environment import rai_environment
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.e2e

RAI = Path(sys.executable).with_name("rai")
CHROMIUM = "/usr/bin/chromium"


async def chromium(page: Path, out: Path, *extra: str) -> tuple[str, bytes]:
    """Open ``page`` in headless Chromium with its log on stderr; returns (the log, stdout)."""
    process = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for Chromium's sandbox
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={out.parent / f'chromium-{uuid4()}'}",
        *extra,
        page.as_uri(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, stderr.decode(errors="replace")
    return stderr.decode(errors="replace"), stdout


def console_messages(log: str) -> list[str]:
    return [line for line in log.splitlines() if ":CONSOLE" in line]


async def rendered(page: Path, tmp_path: Path) -> tuple[str, tuple[int, int]]:
    """The page's DOM after Chromium ran it, and its screenshot's size; fails on any console
    message (errors, warnings, failed loads: a self-contained page has none)."""
    shot = tmp_path / f"{page.stem}.png"
    log, _ = await chromium(page, shot, f"--screenshot={shot}", "--window-size=1200,1400")
    assert not console_messages(log), console_messages(log)
    log, dom = await chromium(page, shot, "--dump-dom")
    assert not console_messages(log), console_messages(log)
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    return dom.decode(), (width, height)


async def test_the_console_check_catches_a_page_error(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>missingFunction()</script>", encoding="utf-8")
    log, _ = await chromium(page, tmp_path / "broken.png", "--dump-dom")
    assert any("missingFunction is not defined" in m for m in console_messages(log)), log


async def test_a_stored_drift_report_renders_from_the_api_and_the_cli(
    temporal: WorkflowEnvironment, services_env: ServicesEnv, db_admin_dsn: str, tmp_path: Path
) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1100, seed=1)
    await env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    drift = DriftAnalysisService(env.db, env.store, env.platform, bucket=env.registry_bucket)
    report = await drift.generate_report(tenant, Window("2025"), Window("2026"))
    settings = worker_settings(env, db_admin_dsn, tmp_path, temporal)
    stranger = await env.tenant("stranger")
    token = (await create_token(env.db, tenant, "drift page")).secret
    strangers_token = (await create_token(env.db, stranger, "drift page")).secret
    route = f"/v1/tenants/{tenant}/drift-reports/{report.id}.html"
    async with (
        running_api(settings, ApiConfig(port=0), client=temporal.client) as url,
        httpx.AsyncClient(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as http,
    ):
        answer = await http.get(route)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        missing = await http.get(f"/v1/tenants/{tenant}/drift-reports/{uuid4()}.html")
        assert missing.status_code == 404
        # Behind the tenant's token like the rest of the API: none is 401, another tenant's
        # token 403, and the other tenant's own route does not reach this tenant's report.
        assert (await http.get(route, headers={"Authorization": ""})).status_code == 401
        stranger_auth = {"Authorization": f"Bearer {strangers_token}"}
        assert (await http.get(route, headers=stranger_auth)).status_code == 403
        other = await http.get(
            f"/v1/tenants/{stranger}/drift-reports/{report.id}.html", headers=stranger_auth
        )
        assert other.status_code == 404
        not_an_id = await http.get(f"/v1/tenants/{tenant}/drift-reports/nope.html")
        assert not_an_id.status_code == 422
    served = answer.text
    assert "<script" not in served
    assert "http://" not in served
    assert "https://" not in served  # self-contained: nothing to fetch
    assert served.count('<section class="feature">') == len(report.result.features)
    assert '<span class="sig-ok">verified</span>' in served
    assert f"signed by platform key {env.platform.key_id}" in served
    for feature in report.result.features:
        assert f"{feature.psi:.4f}" in served
        assert f">{feature.verdict.value}</span>" in served

    page = tmp_path / "report.html"
    process = await asyncio.create_subprocess_exec(
        str(RAI), "drift", "report", str(report.id), "--tenant", str(tenant),
        "--html", str(page), "--json",
        env=rai_environment(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert page.read_text(encoding="utf-8") == served  # one page, wherever it is asked for
    assert b'"signature_ok": true' in out

    dom, (width, height) = await rendered(page, tmp_path)
    assert (width, height) == (1200, 1400)
    assert len(re.findall(r'<section class="feature">', dom)) == len(report.result.features)
    assert dom.count("<svg") == len(report.result.features)
    assert "ndvi" in dom


async def test_a_tampered_report_is_shown_as_not_verified(
    temporal: WorkflowEnvironment, services_env: ServicesEnv, db_admin_dsn: str, tmp_path: Path
) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1100, seed=1)
    await env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    drift = DriftAnalysisService(env.db, env.store, env.platform, bucket=env.registry_bucket)
    report = await drift.generate_report(tenant, Window("2025"), Window("2026"))
    # A report rewritten in place (a new object version under the same key) is not the
    # recorded version: the page reads the recorded one. Pinning the trust to another key
    # instead shows the signature status failing.
    settings = worker_settings(env, db_admin_dsn, tmp_path, temporal).model_copy(
        update={"trusted_platform_key": "00" * 32}
    )
    page = tmp_path / "untrusted.html"
    process = await asyncio.create_subprocess_exec(
        str(RAI), "drift", "report", str(report.id), "--tenant", str(tenant),
        "--html", str(page),
        env=rai_environment(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert "signature: NOT VERIFIED" in out.decode()
    assert '<span class="sig-bad">NOT VERIFIED</span>' in page.read_text(encoding="utf-8")
    missing = await asyncio.create_subprocess_exec(
        str(RAI), "drift", "report", str(uuid4()), "--tenant", str(tenant), "--json",
        env=rai_environment(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(missing.communicate(), 120)
    assert missing.returncode == 3, err.decode()


async def test_a_csv_comparison_renders_as_a_page(tmp_path: Path) -> None:
    reference = write_csv(tmp_path / "ref.csv", 0.0)
    current = write_csv(tmp_path / "cur.csv", 0.6)
    page = tmp_path / "compare.html"
    process = await asyncio.create_subprocess_exec(
        str(RAI), "drift", "compare", str(reference), str(current), "--html", str(page),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    dom, _ = await rendered(page, tmp_path)
    assert dom.count('<section class="feature">') == 2  # yield (numeric) and crop (categorical)
    assert "a local comparison of two CSV files" in dom
    assert 'class="verdict DRIFT"' in dom
