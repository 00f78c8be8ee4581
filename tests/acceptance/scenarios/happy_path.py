"""Scenario 1, the happy path (M28), once per job runner: Kubernetes (``rai worker`` with
``RAI_JOB_RUNNER=kubernetes`` against the in-test API server of ``tests/k8s_fake.py``, whose
kubelet runs each Job's trainer as a local process) and the local runner. Each cycle goes
through the operator's commands (``rai ... --json``), in a world (database, buckets, queues)
of its own:

1. ``rai tenant create``, ``rai keys platform register``, ``rai keys generate`` + ``register``
   (the gateway's device key), ``rai token create``;
2. ``rai api`` on a free port; a reference season and a drifted season of signed events sent to
   it with the token (``tests.acceptance.ingest.deliver``);
3. ``rai worker`` (training callbacks to that API) and ``rai pipeline start --wait
   --canary-dwell 1m``: drift -> snapshot -> training -> registered, bias-audited, SHADOW;
4. the version's shadow evaluation (started by the pipeline) waits for an approval, there being
   no PRODUCTION champion: ``rai model approve`` -> CANARY. The evaluation keeps a version in
   CANARY for the canary dwell the pipeline gave it (24 h by default; the battery cannot wait a
   day, hence 1m) and then, without a rejection, promotes it -> PRODUCTION (``rai evaluation
   status`` reads the outcome from Temporal);
5. ``rai provenance export`` and ``rai model download``, then ``rai provenance verify BUNDLE
   --trusted-key HEX --artifact FILE`` in an empty environment (``env -i``: no RAI_* settings,
   so no database, S3 or Temporal address) in a directory holding only those files -> verified.

Then the counts, from the database (and the cluster / the job directories): the events stored,
one drift report, one training run SUCCEEDED, one job, one model version (PRODUCTION), one bias
audit, and an audit chain that verifies (``rai db verify-chain``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from api.server import training_callback_url
from devstack.net import free_port
from services.demo import season_events
from tests.acceptance.ingest import (
    GatewayTenant,
    batches,
    deliver,
    event_body,
    gateway_tenant,
    rai_json,
    start_api,
)
from tests.acceptance.report import ScenarioResult
from tests.acceptance.stack import Stack, World
from tests.k8s_fake import FakeKubernetes
from tests.rai_process import start_worker, stop_process

NAME = "1-happy-path"
RUNNERS = ("kubernetes", "local")
IMAGE = "registry.example/rai-trainer:1.0"
NAMESPACE = "rai-training-jobs"
EVENTS_PER_SEASON = 1200
SEASONS = (("2025", 0.0, 2025), ("2026", 0.15, 2026))
CANARY_DWELL = "1m"
STEP_LIMIT = 300.0


async def poll(
    read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], *, within: float, what: str
) -> Any:
    deadline = time.monotonic() + within
    while True:
        found = await read()
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {within:.0f} s for {what}; last seen: {found}")
        await asyncio.sleep(0.5)


async def verify_offline(
    directory: Path, bundle: Path, artifact: Path, public_key: str
) -> tuple[int, Any]:
    """``env -i rai provenance verify``: no environment at all, run where only the files are."""
    rai = Path(sys.executable).parent / "rai"
    process = await asyncio.create_subprocess_exec(
        "/usr/bin/env",
        "-i",
        str(rai),
        "provenance",
        "verify",
        bundle.name,
        "--trusted-key",
        public_key,
        "--artifact",
        artifact.name,
        "--json",
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    code = process.returncode if process.returncode is not None else -1
    return code, json.loads(out) if out.strip() else {"stderr": err.decode()[-300:]}


async def send_seasons(url: str, tenant: GatewayTenant) -> dict[str, Any]:
    events = [
        event_body(event)
        for season, shift, seed in SEASONS
        for event in season_events(
            tenant.id, season, EVENTS_PER_SEASON, tenant.device, ndvi_shift=shift, seed=seed
        )
    ]
    delivery = await deliver(url, tenant, batches(events, 300))
    return delivery.summary()


async def counted(world: World, tenant: GatewayTenant) -> dict[str, Any]:
    conn = await world.admin()
    try:
        events = {
            r["season_id"]: r["n"]
            for r in await conn.fetch(
                "SELECT season_id, count(*) AS n FROM rai.learning_events WHERE tenant_id = $1"
                " GROUP BY season_id ORDER BY season_id",
                tenant.id,
            )
        }
        out: dict[str, Any] = {"events stored": events}
        for table in ("drift_reports", "bias_audits"):
            out[table] = await conn.fetchval(
                f"SELECT count(*) FROM rai.{table} WHERE tenant_id = $1", tenant.id
            )
        runs = await conn.fetch(
            "SELECT status, job_name FROM rai.training_runs WHERE tenant_id = $1", tenant.id
        )
        out["training runs"] = [r["status"] for r in runs]
        out["job names"] = [r["job_name"] for r in runs]
        out["model versions"] = [
            r["status"]
            for r in await conn.fetch(
                "SELECT status FROM rai.model_versions WHERE tenant_id = $1", tenant.id
            )
        ]
    finally:
        await conn.close()
    return out


async def one_cycle(stack: Stack, runner: str) -> dict[str, Any]:
    timings: dict[str, float] = {}
    mark = time.monotonic()

    def lap(step: str) -> None:
        nonlocal mark
        now = time.monotonic()
        timings[step] = round(now - mark, 1)
        mark = now

    async with stack.world(f"happy-{runner}") as world, AsyncExitStack() as running:
        settings = world.settings.model_copy(update={"worker_metrics_port": 0})
        cluster: FakeKubernetes | None = None
        if runner == "kubernetes":
            cluster = await running.enter_async_context(
                FakeKubernetes(world.state / "cluster", kubelet=True, kill_grace=5)
            )
            settings = settings.model_copy(
                update={
                    "job_runner": "kubernetes",
                    "kubeconfig": cluster.kubeconfig(world.state / "kubeconfig"),
                    "trainer_image": IMAGE,
                }
            )
        world.settings = settings
        tenant = await gateway_tenant(world, f"happy path ({runner} runner)")
        tenant_id = str(tenant.id)
        await rai_json(settings, "keys", "platform", "register", "--tenant", tenant_id)
        api, url = await start_api(settings, free_port(), world.state / "api.log")
        running.push_async_callback(stop_process, api)
        lap("tenant, keys, token, api")
        sent = await send_seasons(url, tenant)
        lap("events over HTTP")

        settings = settings.model_copy(update={"callback_url": training_callback_url(url)})
        worker = await start_worker(settings, world.state / "worker.log")
        running.push_async_callback(stop_process, worker)
        pipeline = await asyncio.wait_for(
            rai_json(
                settings,
                "pipeline",
                "start",
                "--tenant",
                tenant_id,
                "--wait",
                "--canary-dwell",
                CANARY_DWELL,
            ),
            STEP_LIMIT,
        )
        result = pipeline["result"]
        version = str(result["model_version_id"])
        lap("pipeline (drift -> training -> SHADOW)")

        async def evaluation() -> Any:
            return await rai_json(settings, "evaluation", "status", "--model-version", version)

        await poll(
            evaluation,
            lambda found: bool(found["progress"] and found["progress"]["awaiting_approval"]),
            within=STEP_LIMIT,
            what="the shadow evaluation to wait for an approval",
        )
        approved = await rai_json(
            settings,
            "model",
            "approve",
            "--model-version",
            version,
            "--reason",
            "acceptance battery: happy path",
            "--approver",
            "acceptance",
        )
        after_approval = await rai_json(settings, "model", "list", "--tenant", tenant_id)
        lap("shadow evaluation -> approval -> CANARY")
        concluded = await poll(
            evaluation,
            lambda found: found["state"] != "RUNNING",
            within=STEP_LIMIT,
            what="the evaluation to promote the CANARY version",
        )
        lap(f"CANARY dwell {CANARY_DWELL} -> PRODUCTION")

        exported = world.state / "verifier"
        exported.mkdir()
        bundle, artifact = exported / "bundle.dsse.json", exported / "model.json"
        await rai_json(
            settings, "provenance", "export", version, "--tenant", tenant_id, "--out", str(bundle)
        )
        downloaded = await rai_json(
            settings, "model", "download", version, "--tenant", tenant_id, "--out", str(artifact)
        )
        platform = await rai_json(settings, "keys", "platform")
        code, verified = await verify_offline(exported, bundle, artifact, platform["public_key"])
        lap("export, download, offline verify")

        chain = await rai_json(settings, "db", "verify-chain", "--tenant", tenant_id)
        counts = await counted(world, tenant)
        if cluster is not None:
            jobs = [job["metadata"]["name"] for job in cluster.list_objects("jobs", NAMESPACE)]
            rejected = list(cluster.rejected)
        else:
            jobs = sorted(p.name for p in (settings.state_dir / "jobs").iterdir() if p.is_dir())
            rejected = []
    statuses_after_approval = [v["status"] for v in after_approval["model_versions"]]
    checks = verified.get("checks", [])
    evaluation_result = concluded.get("result") or {}
    expected_events = {season: EVENTS_PER_SEASON for season, _, _ in SEASONS}
    passed = (
        sent["undelivered batches"] == 0
        and counts["events stored"] == expected_events
        and result["outcome"] == "SUCCEEDED_SHADOW"
        and result["drift_verdict"] == "DRIFT"
        and statuses_after_approval == ["CANARY"]
        and evaluation_result.get("outcome") == "ACCEPTED"
        and counts["model versions"] == ["PRODUCTION"]
        and counts["drift_reports"] == 1
        and counts["bias_audits"] == 1
        and counts["training runs"] == ["SUCCEEDED"]
        and len(jobs) == 1
        and not rejected
        and (runner == "local" or counts["job names"] == jobs)
        and chain["ok"]
        and code == 0
        and verified.get("verified") is True
        and verified.get("artifact_checked") is True
        and downloaded["sha256"] == result["artifact_sha256"]
    )
    return {
        "runner": runner,
        "passed": passed,
        "outcome": result["outcome"],
        "drift": result["drift_verdict"],
        "approved": approved.get("detail", approved),
        "evaluation": f"{concluded['state']} {evaluation_result.get('outcome')}",
        "model versions": counts["model versions"],
        "training runs": counts["training runs"],
        "jobs": len(jobs),
        "drift reports": counts["drift_reports"],
        "bias audits": counts["bias_audits"],
        "events stored": counts["events stored"],
        "chain ok": chain["ok"],
        "offline verify": f"exit {code}, verified {verified.get('verified')},"
        f" {sum(bool(c.get('ok')) for c in checks)}/{len(checks)} checks",
        "seconds": timings,
    }


async def run(stack: Stack, options: dict[str, Any]) -> ScenarioResult:
    started = time.monotonic()
    details: list[dict[str, Any]] = []
    for runner in RUNNERS:
        began = time.monotonic()
        try:
            row = await one_cycle(stack, runner)
        except Exception as exc:  # one runner's crash fails its cycle, the other still runs
            row = {"runner": runner, "passed": False, "outcome": f"{type(exc).__name__}: {exc}"}
        row["total s"] = round(time.monotonic() - began, 1)
        details.append(row)
    cycles = sum(bool(d["passed"]) for d in details)
    return ScenarioResult(
        name=NAME,
        passed=cycles == len(RUNNERS),
        expected={
            f"{r}: outcome -> evaluation -> status -> offline verify": "SUCCEEDED_SHADOW ->"
            " ACCEPTED -> PRODUCTION -> verified"
            for r in RUNNERS
        },
        observed={
            f"{d['runner']}: outcome -> evaluation -> status -> offline verify": (
                f"{d.get('outcome')} -> {d.get('evaluation')} -> {d.get('model versions')}"
                f" -> {d.get('offline verify')}"
            )
            for d in details
        },
        seconds=time.monotonic() - started,
        key_figure=f"{cycles}/{len(RUNNERS)} runners: SHADOW -> approved -> PRODUCTION,"
        " verified offline",
        details=details,
    )
