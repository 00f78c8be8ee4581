"""The metrics against a real Prometheus (Debian's): it scrapes the worker's endpoint (the
Temporal SDK's metrics included) and the API's /metrics while a drifted tenant's pipeline ends
SUCCEEDED_SHADOW, an always-failing tenant's is dead-lettered and a tenant with too few events
ends INSUFFICIENT_DATA. Then every panel query of the three dashboards and every alert
expression is evaluated through Prometheus' HTTP API: each returns data, except the panels
that need cluster exporters (listed below, and still checked by Prometheus and promtool); the
dead-letter alert fires."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
import yaml
from temporalio.testing import WorkflowEnvironment

from adapters.metrics import Metrics
from api.server import ApiConfig, running_api
from devstack.net import free_port
from domain.pipeline import PipelineOutcome, PipelineResult
from domain.promotion import shadow_evaluation_workflow_id
from domain.signing import Signer
from services.keys import register_key
from services.tokens import create_token
from starter import start_pipeline
from tests.e2e.support import worker_settings
from tests.e2e.test_api import payload, signed_event
from tests.integration.services_env import ServicesEnv
from tests.polling import wait_until
from worker import running_workers, worker_metrics

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"
RULES = ROOT / "grafana" / "alerts" / "rai-level-d.rules.yml"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"

# Panels whose series come from cluster exporters (kube-state-metrics, cAdvisor, DCGM), which
# a test machine has none of: they must parse and evaluate, not return data.
CLUSTER_EXPORTER_PANELS = {
    ("rai-level-d-tenant-isolation", "Top tenants: GPUs requested by training pods"),
    ("rai-level-d-tenant-isolation", "Top tenants: GPU utilisation of training pods"),
    ("rai-level-d-tenant-isolation", "Top tenants: CPU requested by training pods"),
    ("rai-level-d-tenant-isolation", "Top tenants: CPU used by training pods"),
    ("rai-level-d-tenant-isolation", "Top tenants: memory requested by training pods"),
    ("rai-level-d-tenant-isolation", "Top tenants: memory used by training pods"),
}
# A tenant name found nowhere else in a scrape.
FIELD_OFFICE = "Quetzalcoatl field office"
# What the scraped run must make fire.
FIRING = {"RaiDeadLettersOpen", "RaiPipelineFailed", "RaiDriftPsiAboveThreshold"}


def grafana_to_promql(expr: str) -> str:
    """A panel query as Grafana sends it with every tenant selected."""
    return expr.replace("$tenant", ".*").replace("$__rate_interval", "1m")


def panel_queries() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = yaml.safe_load(path.read_text(encoding="utf-8"))
        for panel in board["panels"]:
            for target in panel["targets"]:
                found.append((board["uid"], panel["title"], grafana_to_promql(target["expr"])))
    return found


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in rules["groups"] for rule in group["rules"]]


async def start_prometheus(
    directory: Path, url: str, worker: str, api: str
) -> asyncio.subprocess.Process:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "rai-worker", "static_configs": [{"targets": [worker]}]},
            {"job_name": "rai-api", "static_configs": [{"targets": [api]}]},
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    log = (directory / "prometheus.log").open("wb")
    try:
        return await asyncio.create_subprocess_exec(
            PROMETHEUS,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={url.removeprefix('http://')}",
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


async def query(http: httpx.AsyncClient, url: str, expr: str) -> dict[str, Any]:
    answer = await http.get(f"{url}/api/v1/query", params={"query": expr})
    body: dict[str, Any] = answer.json()
    assert body["status"] == "success", (expr, body)
    return body


def host_port(metrics_url: str) -> str:
    return metrics_url.removeprefix("http://").removesuffix("/metrics")


async def seeded(env: ServicesEnv, name: str, n: int, shift: float) -> UUID:
    tenant = await env.tenant(name)
    await env.seed_events(tenant, "2025", n, seed=1)
    await env.seed_events(tenant, "2026", n, shift=shift, seed=2)
    return tenant


async def test_dashboards_and_alerts_against_a_real_prometheus(
    temporal: WorkflowEnvironment,
    services_env: ServicesEnv,
    db_admin_dsn: str,
    tmp_path: Path,
) -> None:
    env = services_env
    drifted = await seeded(env, "drifted farm", 1100, 0.15)
    failing = await seeded(env, "failing farm", 1100, 0.15)
    sparse = await seeded(env, "sparse farm", 400, 0.15)
    # ingests over HTTP, runs no pipeline; its name must reach the worker's endpoint only
    field_office = await env.tenant(FIELD_OFFICE)
    device = Signer.generate()
    await register_key(env.db, field_office, device.public_key, "device")
    token = (await create_token(env.db, field_office, "prometheus test")).secret
    settings = worker_settings(env, db_admin_dsn, tmp_path, temporal)
    directory = tmp_path / "prometheus"
    directory.mkdir()
    prom_url = f"http://127.0.0.1:{free_port()}"
    metrics = Metrics()
    outcomes: dict[UUID, PipelineResult] = {}
    async with (
        worker_metrics(settings, metrics, port=0) as (client, worker_url),
        running_api(settings, ApiConfig(port=0), client=client) as api_url,
        httpx.AsyncClient(timeout=30) as http,
    ):
        process = await start_prometheus(
            directory, prom_url, host_port(worker_url), api_url.removeprefix("http://")
        )
        try:
            # Ingest through the API: accepted, a duplicate and a forged (rejected) event.
            events = [
                signed_event(device, field_office, "2027", f"f-{i}", payload(0.5)) for i in (1, 2)
            ]
            forged = signed_event(Signer.generate(), field_office, "2027", "f-3", payload(0.5))
            forged["key_id"] = device.key_id
            batch = await http.post(
                f"{api_url}/v1/tenants/{field_office}/events",
                json={"events": [*events, events[0], forged]},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert batch.status_code == 200, batch.text
            assert batch.json()["counts"] == {
                "ACCEPTED": 2,
                "DUPLICATE": 1,
                "CONFLICT": 0,
                "REJECTED": 1,
            }
            healthy = settings
            async with running_workers(healthy, client, metrics=metrics):
                for tenant in (drifted, sparse):
                    started = await start_pipeline(client, healthy, tenant)
                    outcomes[tenant] = await started.handle.result()
            shadow = outcomes[drifted].model_version_id
            assert shadow is not None, outcomes[drifted]
            await client.get_workflow_handle(shadow_evaluation_workflow_id(shadow)).terminate()
            broken = settings.model_copy(update={"training_extra_seconds": -1.0})
            async with running_workers(broken, client, metrics=metrics):
                started = await start_pipeline(client, broken, failing)
                outcomes[failing] = await started.handle.result()
            assert outcomes[drifted].outcome is PipelineOutcome.SUCCEEDED_SHADOW
            assert outcomes[failing].outcome is PipelineOutcome.FAILED_DEAD_LETTERED
            assert outcomes[sparse].outcome is PipelineOutcome.INSUFFICIENT_DATA

            async def alerts() -> set[str]:
                body = (await http.get(f"{prom_url}/api/v1/alerts")).json()
                return {
                    a["labels"]["alertname"]
                    for a in body["data"]["alerts"]
                    if a["state"] == "firing"
                }

            firing = await wait_until(
                alerts, lambda names: names >= FIRING, within=120, every=1,
                failure="the run's alerts did not fire",
            )  # fmt: skip
            assert not firing & {"RaiWorkerDown", "RaiApiDown", "RaiMetricsDatabaseDown"}

            async def targets_up() -> list[str]:
                body = await query(http, prom_url, 'up{job=~"rai-worker|rai-api"} == 1')
                return sorted(r["metric"]["job"] for r in body["data"]["result"])

            await wait_until(
                targets_up, lambda jobs: jobs == ["rai-api", "rai-worker"], within=60, every=1,
                failure="Prometheus does not scrape both targets",
            )  # fmt: skip
            await check_seed_metrics(http, prom_url, [drifted, failing, sparse, field_office])
            await check_tenant_names(http, prom_url, worker_url, api_url, field_office)
            await check_panels(http, prom_url, directory)
            await check_alert_expressions(http, prom_url)
        finally:
            process.terminate()
            await process.wait()


async def check_seed_metrics(http: httpx.AsyncClient, url: str, tenants: list[UUID]) -> None:
    """The seed's four, as Prometheus stored them, with the run's values."""
    drifted, failing, sparse, _ = tenants
    body = await query(http, url, 'rai_pipeline_status_total{job="rai-worker"}')
    seen = {
        (r["metric"]["tenant"], r["metric"]["outcome"]): r["value"][1]
        for r in body["data"]["result"]
    }
    assert seen == {
        (str(drifted), "SUCCEEDED_SHADOW"): "1",
        (str(failing), "FAILED_DEAD_LETTERED"): "1",
        (str(sparse), "INSUFFICIENT_DATA"): "1",
    }
    body = await query(http, url, "rai_training_duration_seconds_count")
    durations = {(r["metric"]["tenant"], r["metric"]["outcome"]) for r in body["data"]["result"]}
    assert durations == {(str(drifted), "SUCCEEDED"), (str(failing), "FAILED")}
    body = await query(http, url, f'rai_drift_psi_value{{tenant="{drifted}",feature="ndvi"}}')
    assert float(body["data"]["result"][0]["value"][1]) > 0.1
    body = await query(http, url, 'rai_retrain_cooldown_active{job="rai-worker"}')
    cooldowns = {r["metric"]["tenant"]: r["value"][1] for r in body["data"]["result"]}
    assert cooldowns == {str(t): "0" for t in tenants}
    body = await query(http, url, "max by (queue) (rai_dead_letters_open)")
    assert [(r["metric"]["queue"], r["value"][1]) for r in body["data"]["result"]] == [
        ("training-queue-failed", "1")
    ]
    body = await query(http, url, 'sum by (outcome) (rai_ingest_events_total{job="rai-api"})')
    ingested = {r["metric"]["outcome"]: r["value"][1] for r in body["data"]["result"]}
    assert ingested == {"ACCEPTED": "2", "DUPLICATE": "1", "REJECTED": "1"}


async def check_tenant_names(
    http: httpx.AsyncClient, url: str, worker_url: str, api_url: str, field_office: UUID
) -> None:
    """Tenant names come from the worker's endpoint alone (rai_tenant_info, which the
    dashboards' tenant variable reads); the API's public /metrics names no tenant, and the
    database-held gauges are the worker's."""
    body = await query(http, url, f'rai_tenant_info{{tenant="{field_office}"}}')
    assert [(r["metric"]["job"], r["metric"]["name"]) for r in body["data"]["result"]] == [
        ("rai-worker", FIELD_OFFICE)
    ]
    for family in ("rai_tenant_info", "rai_retrain_cooldown_active", "rai_dead_letters_open"):
        body = await query(http, url, f'count({family}{{job="rai-api"}})')
        assert body["data"]["result"] == [], family
    api_text = (await http.get(f"{api_url}/metrics")).text
    assert f'tenant="{field_office}"' in api_text  # its ingest counters, by id
    assert "Quetzalcoatl" not in api_text
    assert "Quetzalcoatl" in (await http.get(worker_url)).text


async def check_panels(http: httpx.AsyncClient, url: str, directory: Path) -> None:
    queries = panel_queries()
    titles = {(uid, title) for uid, title, _ in queries}
    assert titles >= CLUSTER_EXPORTER_PANELS  # the list names real panels
    empty = []
    for uid, title, expr in queries:
        body = await query(http, url, expr)
        if (uid, title) in CLUSTER_EXPORTER_PANELS:
            continue
        if not body["data"]["result"]:
            empty.append((uid, title, expr))
    assert not empty, "panel queries without data:\n" + "\n".join(map(str, empty))
    # promtool parses the cluster-exporter queries too (as recording rules).
    recorded = {
        "groups": [
            {
                "name": "cluster-exporter-panels",
                "rules": [
                    {"record": f"rai:cluster_panel_{n}", "expr": expr}
                    for n, (uid, title, expr) in enumerate(queries)
                    if (uid, title) in CLUSTER_EXPORTER_PANELS
                ],
            }
        ]
    }
    path = directory / "cluster-panels.rules.yml"
    path.write_text(yaml.safe_dump(recorded), encoding="utf-8")
    check = await asyncio.create_subprocess_exec(
        PROMTOOL, "check", "rules", str(path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await check.communicate()
    assert check.returncode == 0, out.decode()


async def check_alert_expressions(http: httpx.AsyncClient, url: str) -> None:
    """Every alert expression evaluates, Prometheus' own evaluation of every rule is healthy,
    and every series an alert reads has data (an alert that is quiet is quiet on real data)."""
    body = (await http.get(f"{url}/api/v1/rules")).json()
    health = {
        rule["name"]: (rule["health"], rule.get("lastError", ""))
        for group in body["data"]["groups"]
        for rule in group["rules"]
    }
    for rule in alert_rules():
        await query(http, url, rule["expr"])
        assert health[rule["alert"]] == ("ok", ""), rule["alert"]
        for name in set(re.findall(r"\b(rai_[a-z_]+|up)\b", rule["expr"])):
            found = await query(http, url, f"count({name})")
            assert found["data"]["result"], (rule["alert"], name)
