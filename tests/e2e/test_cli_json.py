"""``rai --json`` and the exit codes, driven as a script would: the venv's ``rai`` as a
subprocess against one shared set of real parts for the file (a migrated database, the run's
SeaweedFS buckets, the Temporal dev server, Redis, and an in-process worker on the real
activities). Every reporting command is run with ``--json`` and its stdout parsed as exactly one
JSON document; "not found" exits 3, an unreachable service 4, bad usage 2. ``rai provenance
verify`` runs with every service unreachable."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import hashlib
import json
import os
import secrets
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import numpy as np
import pytest
from temporalio.testing import WorkflowEnvironment

from adapters.objectstore import ObjectStore
from cli.main import build_parser
from db.repository import Database
from domain.model_status import ModelStatus
from domain.signing import Signer
from services.pipeline import PipelineService
from services.promotion import enter_canary, promote_challenger
from settings import Settings, app_dsn_for
from tests.e2e.support import worker_settings
from tests.environment import rai_environment
from tests.integration.promotion_support import model_in
from tests.integration.services_env import ServicesEnv
from tests.pg import cloned_database
from tests.polling import wait_until
from tests.rai_process import RAI, run_rai
from worker import running_workers

pytestmark = pytest.mark.e2e

COMMAND_TIMEOUT = 240.0  # seconds; a pipeline run with training included
VISIBILITY_WAIT = 15.0  # seconds Temporal's listings may lag a write
# Long-running servers, not reports: they take no --json.
SERVERS = {"worker", "api"}


@dataclass(frozen=True)
class Ran:
    argv: tuple[str, ...]
    code: int
    out: str
    err: str

    def document(self) -> dict[str, Any]:
        """Stdout as exactly one JSON object (json.loads refuses anything after it)."""
        assert self.out.strip(), f"rai {' '.join(self.argv)}: nothing on stdout; stderr: {self.err}"
        found = json.loads(self.out)
        assert isinstance(found, dict), self.out
        return found

    def error(self) -> str:
        """Stderr as exactly ``{"error": "..."}``, one line."""
        assert self.out == "", f"rai {' '.join(self.argv)} printed on stdout: {self.out}"
        assert self.err.count("\n") == 1, self.err
        found = json.loads(self.err)
        assert list(found) == ["error"], self.err
        message: str = found["error"]
        return message


async def rai(env: dict[str, str], *argv: str, fresh: bool = False) -> Ran:
    """``rai ARGV``: forked from the preloaded fork server (tests/rai_process.py), or
    (``fresh``) the venv's console script started as a new interpreter."""
    if not fresh:
        try:
            finished = await run_rai(env, argv, within=COMMAND_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"rai {' '.join(argv)} did not finish within {COMMAND_TIMEOUT:.0f} s")
        return Ran(tuple(argv), finished.code, finished.out, finished.err)
    process = await asyncio.create_subprocess_exec(
        str(RAI),
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"rai {' '.join(argv)} did not finish within {COMMAND_TIMEOUT:.0f} s")
    assert process.returncode is not None
    return Ran(tuple(argv), process.returncode, out.decode(), err.decode())


async def ok(env: dict[str, str], *argv: str, code: int = 0, fresh: bool = False) -> dict[str, Any]:
    """Run ``rai ARGV --json``; expect ``code`` and one JSON document."""
    ran = await rai(env, *argv, "--json", fresh=fresh)
    assert ran.code == code, f"rai {' '.join(ran.argv)} exited {ran.code}: {ran.err or ran.out}"
    return ran.document()


async def refused(env: dict[str, str], code: int, *argv: str, fresh: bool = False) -> str:
    """Run ``rai ARGV --json``; expect exit ``code`` and ``{"error": ...}`` on stderr."""
    ran = await rai(env, *argv, "--json", fresh=fresh)
    assert ran.code == code, f"rai {' '.join(ran.argv)} exited {ran.code}: {ran.err or ran.out}"
    return ran.error()


def reporting_commands() -> set[tuple[str, ...]]:
    """Every leaf command of ``rai``, by its words, that accepts ``--json``; asserts every
    leaf but the servers does."""

    def leaves(
        parser: argparse.ArgumentParser, words: tuple[str, ...]
    ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
        if parser.get_default("handler") is not None:
            yield words, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from leaves(sub, (*words, name))

    found = set()
    for words, parser in leaves(build_parser(), ()):
        has_json = any("--json" in action.option_strings for action in parser._actions)
        assert has_json != (words[0] in SERVERS), f"rai {' '.join(words)}: --json {has_json}"
        if has_json:
            found.add(words)
    return found


@dataclass(frozen=True)
class World:
    settings: Settings
    env: dict[str, str]
    services: ServicesEnv
    temporal: WorkflowEnvironment
    state: Path


@pytest.fixture(scope="module")
async def world(
    pg_server_dsn: str,
    template_db: str,
    service_storage: Settings,
    temporal: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    state = tmp_path_factory.mktemp("cli-json")
    async with cloned_database(pg_server_dsn, template_db) as dsn:
        db = await Database.connect(app_dsn_for(dsn), max_size=4)
        try:
            async with ObjectStore.from_settings(service_storage) as store:
                services = ServicesEnv(db, store, service_storage, Signer.generate(), dsn)
                settings = worker_settings(services, dsn, state, temporal)
                async with running_workers(settings, client=temporal.client):
                    yield World(settings, rai_environment(settings), services, temporal, state)
        finally:
            await db.close()


def write_csv(path: Path, shift: float) -> Path:
    rng = np.random.default_rng(7)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["yield", "crop"])
        crops = ["wheat", "corn"]
        writer.writerows(
            [f"{rng.normal(shift):.6f}", crops[int(rng.integers(2))]] for _ in range(1500)
        )
    return path


async def listed_within(
    env: dict[str, str], key: str, *argv: str, present: bool = True
) -> dict[str, Any]:
    """The listing once ``key`` is non-empty (or empty), within Temporal's visibility lag."""
    deadline = asyncio.get_running_loop().time() + VISIBILITY_WAIT
    while True:
        found = await ok(env, *argv)
        if bool(found[key]) == present:
            return found
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"rai {' '.join(argv)}: {key} still {found[key]!r} after the wait")
        await asyncio.sleep(0.5)


async def test_every_reporting_command_prints_one_json_document(
    world: World, refused_port: int
) -> None:
    env, commands, covered = world.env, reporting_commands(), set()

    async def run(*argv: str, fresh: bool = False) -> dict[str, Any]:
        """``ok``, noting which command ran."""
        covered.add(max((c for c in commands if argv[: len(c)] == c), key=len))
        return await ok(env, *argv, fresh=fresh)

    # One as the console script in a new interpreter; the rest forked (tests/rai_process.py).
    migrated = await run("db", "migrate", fresh=True)
    assert migrated["applied"] == []
    assert migrated["current_version"] >= 1
    tenant_doc = await run("tenant", "create", "json farm")
    tenant = UUID(tenant_doc["id"])
    assert tenant_doc["name"] == "json farm"
    chain = await run("db", "verify-chain", "--tenant", str(tenant))
    assert (chain["ok"], chain["rows"], chain["problems"]) == (True, 1, [])

    platform = await run("keys", "platform")
    assert platform["key_id"] == world.services.platform.key_id
    # The administrative path (RAI_DATABASE_URL): services refuse to sign without it.
    platform_registered = await run("keys", "platform", "register", "--tenant", str(tenant))
    assert platform_registered == {
        "key_id": platform["key_id"],
        "tenant_id": str(tenant),
        "purpose": "platform",
    }
    device = await run("keys", "generate", "--out", str(world.state / "device.key"))
    assert set(device) == {"key_id", "public_key", "seed_file"}
    registered = await run(
        "keys", "register", "--tenant", str(tenant), "--public-key", device["public_key"]
    )
    assert registered["key_id"] == device["key_id"]
    revoked = await run("keys", "revoke", "--tenant", str(tenant), device["key_id"])
    assert revoked["revoked"] is True

    token = await run("token", "create", "--tenant", str(tenant), "--name", "ci", "--expires", "7")
    assert token["token"].startswith("rai_")
    assert (token["name"], token["tenant_id"], token["revoked_at"]) == ("ci", str(tenant), None)
    assert token["expires_at"] > token["created_at"]
    tokens = await run("token", "list", "--tenant", str(tenant))
    assert [t["id"] for t in tokens["tokens"]] == [token["id"]]
    assert token["token"] not in json.dumps(tokens)  # shown once, never again
    token_revoked = await run("token", "revoke", "--tenant", str(tenant), token["id"])
    assert (token_revoked["id"], token_revoked["revoked_at"] is not None) == (token["id"], True)

    init = await run("storage", "init")
    assert init["changed"] == 0  # the run's buckets are initialised already
    assert all(step["changed"] is False for step in init["settings"])
    check = await run("storage", "check")
    assert check["ok"] is True
    assert len(check["checks"]) == 14

    reference = write_csv(world.state / "ref.csv", 0.0)
    current = write_csv(world.state / "cur.csv", 1.0)
    compared = await run("drift", "compare", str(reference), str(current))
    assert compared["features"]["yield"]["verdict"] == "DRIFT"
    bench = await run("bench", "drift", "--features", "2", "--rows", "3000")
    assert (bench["features"], bench["rows"]) == (2, 3000)
    # Starts its own API (`rai api --workers 2`: two processes on one port), sends signed
    # events with a token, counts them in the database.
    ingest = await run(
        "bench", "ingest", "--seconds", "2", "--rate", "300", "--batch", "50",
        "--concurrency", "2", "--workers", "2",
    )  # fmt: skip
    # At most 2 s at 300/s; a loaded machine answers more slowly and so sends fewer.
    assert 0 < ingest["sent"] == ingest["stored"] <= 600, ingest
    assert (ingest["lost"], ingest["errors_5xx"], ingest["duplicates"]) == (0, 0, 0)
    assert ingest["events_per_s"] > 0
    assert ingest["verify_ceiling_per_s"] > 0
    assert {"p50_ms", "p99_ms", "ratio"} <= set(ingest)
    assert ingest["api_workers"] == 2

    # The retraining pipeline, for real: a drifted tenant ends with a verified SHADOW model.
    await world.services.seed_events(tenant, "2025", 1100, seed=1)
    await world.services.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    started = await run("pipeline", "start", "--tenant", str(tenant), "--wait")
    assert started["workflow_id"] == f"retrain/{tenant}"
    assert started["result"]["outcome"] == "SUCCEEDED_SHADOW", started["result"]
    model = started["result"]["model_version_id"]
    status = await run("pipeline", "status", "--tenant", str(tenant))
    assert (status["run_id"], status["state"]) == (started["run_id"], "COMPLETED")
    assert status["progress"]["result"] == status["result"] == started["result"]
    runs = await listed_within(env, "runs", "pipeline", "list", "--tenant", str(tenant))
    covered.add(("pipeline", "list"))
    reaped = await run("pipeline", "reap", "--tenant", str(tenant))
    assert reaped == {
        "tenants": [{"tenant_id": str(tenant), "failed_runs": [], "lease_broken": None}]
    }
    assert [(r["workflow_id"], r["status"]) for r in runs["runs"]] == [
        (f"retrain/{tenant}", "COMPLETED")
    ]
    verified = await run("verify", "model", model, "--tenant", str(tenant))
    assert verified["verified"] is True
    report_id = started["result"]["drift_report_id"]
    page = world.state / "drift-report.html"
    drift_report = await run(
        "drift", "report", report_id, "--tenant", str(tenant), "--html", str(page)
    )
    assert (drift_report["report_id"], drift_report["verdict"]) == (report_id, "DRIFT")
    assert (drift_report["signature_ok"], drift_report["html"]) == (True, str(page))
    assert drift_report["features"]["ndvi"]["verdict"] == "DRIFT"
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert all(check["ok"] for check in verified["checks"])
    versions = await run("model", "list", "--tenant", str(tenant))
    assert [(v["id"], v["status"]) for v in versions["model_versions"]] == [(model, "SHADOW")]

    # Provenance: a signed bundle and the artifact, checked with nothing else reachable.
    artifact_sha256 = started["result"]["artifact_sha256"]
    bundle = world.state / "model.intoto.json"
    exported = await run(
        "provenance", "export", model, "--tenant", str(tenant), "--out", str(bundle)
    )
    assert (exported["model_version_id"], exported["tenant_id"]) == (model, str(tenant))
    assert exported["subject"]["digest"]["sha256"] == artifact_sha256
    assert exported["key_id"] == platform["key_id"]
    assert exported["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    artifact = world.state / "model.json"
    downloaded = await run(
        "model", "download", model, "--tenant", str(tenant), "--out", str(artifact)
    )
    assert (downloaded["out"], downloaded["sha256"]) == (str(artifact), artifact_sha256)
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == artifact_sha256
    nowhere = refused_port
    offline = {
        **{k: v for k, v in env.items() if not k.startswith("RAI_")},
        "RAI_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{nowhere}/none",
        "RAI_S3_ENDPOINT_URL": f"http://127.0.0.1:{nowhere}",
        "RAI_TEMPORAL_ADDRESS": f"127.0.0.1:{nowhere}",
        "RAI_STATE_DIR": str(world.state / "offline"),
    }
    verify = ("provenance", "verify", str(bundle), "--trusted-key", platform["public_key"])
    offline_check = await ok(offline, *verify, "--artifact", str(artifact))
    covered.add(("provenance", "verify"))
    assert (offline_check["model_version_id"], offline_check["verified"]) == (model, True)
    assert (offline_check["artifact_checked"], offline_check["dataset_checked"]) == (True, False)
    assert all(check["ok"] for check in offline_check["checks"])
    flipped = bytearray(artifact.read_bytes())
    flipped[0] ^= 1
    tampered = world.state / "tampered-model.json"
    tampered.write_bytes(bytes(flipped))
    # A failed check exits 1 and still answers with its one document.
    failed_check = await ok(offline, *verify, "--artifact", str(tampered), code=1)
    assert failed_check["verified"] is False
    assert [c["name"] for c in failed_check["checks"] if not c["ok"]] == ["artifact bytes"]

    # The audit chain's head, signed into the WORM bucket; verify-chain holds the chain to it.
    signed = await run("audit", "checkpoint", "--tenant", str(tenant))
    assert signed["failed"] == []
    [head] = signed["checkpoints"]
    assert (head["tenant_id"], head["bucket"]) == (str(tenant), world.settings.s3_datasets_bucket)
    assert head["signed_by"] == platform["key_id"]
    chain = await run("db", "verify-chain", "--tenant", str(tenant), "--require-checkpoint")
    assert (chain["ok"], chain["head_seq"]) == (True, head["size"])
    assert chain["head_hash"] == head["head_hash"]
    assert chain["checkpoints"]["checked"] is True
    assert chain["checkpoints"]["uncovered_rows"] == 0
    assert [(f["key"], f["holds"]) for f in chain["checkpoints"]["findings"]] == [
        (head["key"], True)
    ]

    # The pipeline started the version's shadow evaluation itself. With no production version
    # yet, the challenger waits in SHADOW for an approval (it is not promoted at once).
    waiting = await wait_until(
        lambda: run("evaluation", "status", "--model-version", model),
        lambda found: bool(found["progress"] and found["progress"]["awaiting_approval"]),
        within=COMMAND_TIMEOUT,
        failure="the pipeline's shadow evaluation is not awaiting an approval",
    )
    assert (waiting["workflow_id"], waiting["state"]) == (f"shadow/{model}", "RUNNING")
    assert waiting["progress"]["result"] == waiting["result"] is None
    message = await refused(
        env, 1, "evaluation", "start", "--tenant", str(tenant), "--model-version", model
    )
    assert message == f"shadow evaluation shadow/{model} is already running"
    approved = await run(
        "model", "approve", "--model-version", model, "--reason", "looks right", "--approver", "ops"
    )
    assert approved == {
        "model_version_id": model,
        "approved_by": "ops",
        "reason": "looks right",
        "detail": f"model version {model} is CANARY: approved by ops: looks right",
    }
    versions = await run("model", "list", "--tenant", str(tenant))
    assert [(v["id"], v["status"]) for v in versions["model_versions"]] == [(model, "CANARY")]
    await world.temporal.client.get_workflow_handle(waiting["workflow_id"]).terminate("test over")

    # A challenger with a champion, evaluated on request.
    contest = await world.services.tenant("evaluation farm")
    champion = await model_in(world.services, contest, ModelStatus.PRODUCTION)
    challenger = str(await model_in(world.services, contest, ModelStatus.SHADOW))
    evaluation = await run(
        "evaluation", "start", "--tenant", str(contest), "--model-version", challenger
    )
    assert (evaluation["workflow_id"], evaluation["check_every"]) == (f"shadow/{challenger}", "1h")
    progress = await wait_until(
        lambda: run("evaluation", "status", "--model-version", challenger),
        lambda found: bool(found["progress"] and found["progress"]["checks"] > 0),
        within=COMMAND_TIMEOUT,
        failure="the requested shadow evaluation made no check",
    )
    assert (progress["run_id"], progress["state"]) == (evaluation["run_id"], "RUNNING")
    assert progress["progress"]["champion_id"] == str(champion)
    assert progress["progress"]["result"] == progress["result"] is None
    await world.temporal.client.get_workflow_handle(evaluation["workflow_id"]).terminate("over")

    # Rollback: a second tenant with a production version and an archived one.
    other = await world.services.tenant("rollback farm")
    old = await model_in(world.services, other, ModelStatus.PRODUCTION)
    new = await model_in(world.services, other, ModelStatus.SHADOW)
    # CANARY is a stage of its own: a challenger reaches PRODUCTION only from there.
    await enter_canary(
        world.services.db, other, new, expected_champion_id=old, reason="test", details={}
    )
    await promote_challenger(
        world.services.db, other, new, expected_champion_id=old, reason="test", details={}
    )
    rollback = await run("model", "rollback", "--tenant", str(other), "--model", "yield")
    assert (rollback["rolled_back"], rollback["restored"]) == (str(new), str(old))
    assert rollback["cooldown_ends_at"] > rollback["at"]

    letter = await PipelineService(
        world.services.db, world.services.store, datasets_bucket=world.settings.s3_datasets_bucket
    ).dead_letter(
        tenant, workflow_id=f"retrain/{tenant}", error="boom", attempts=5, training_run_id=None
    )
    letters = await run("dlq", "list", "--tenant", str(tenant))
    assert [(d["id"], d["attempts"], d["resolved_at"]) for d in letters["dead_letters"]] == [
        (str(letter), 5, None)
    ]
    resolved = await run("dlq", "resolve", "--tenant", str(tenant), str(letter))
    assert resolved == {"id": str(letter), "resolved": True}
    everything = await run("dlq", "list", "--tenant", str(tenant), "--all")
    assert everything["dead_letters"][0]["resolved_at"] is not None

    scheduled = str(uuid4())
    created = await run("schedule", "create", "--tenant", scheduled, "--every", "24h")
    assert created["change"] == "created"
    assert created["schedule"]["intervals"] == ["1d"]
    assert created["schedule"]["workflow_id"] == f"retrain/{scheduled}"
    again = await run("schedule", "apply", "--tenant", scheduled, "--every", "24h")
    assert again["change"] == "unchanged"
    changed = await run("schedule", "apply", "--tenant", scheduled, "--every", "12h")
    assert (changed["change"], changed["schedule"]["intervals"]) == ("updated", ["12h"])
    schedules = await listed_within(env, "schedules", "schedule", "list", "--tenant", scheduled)
    covered.add(("schedule", "list"))
    assert [s["intervals"] for s in schedules["schedules"]] == [["12h"]]
    deleted = await run("schedule", "delete", "--tenant", scheduled)
    assert deleted == {"schedule_id": f"retrain-schedule/{scheduled}", "deleted": True}

    seeded = await run("demo", "seed", "--tenant", f"json demo {secrets.token_hex(3)}")
    assert [s["season_id"] for s in seeded["seasons"]] == ["2025", "2026"]
    assert all(s["counts"]["ACCEPTED"] == 1200 for s in seeded["seasons"])

    dev_and_demo = {("dev", "up"), ("dev", "status"), ("dev", "env"), ("dev", "down"), ("demo",)}
    assert covered | dev_and_demo == commands


async def test_not_found_exits_3(world: World) -> None:
    env, unknown = world.env, str(uuid4())
    tenant = str(await world.services.tenant("empty farm"))
    key = world.services.platform.public_key.hex()
    nowhere = world.state / f"{unknown}.out"
    for argv in (
        ("pipeline", "status", "--tenant", tenant),
        ("evaluation", "status", "--model-version", unknown),
        ("evaluation", "start", "--tenant", tenant, "--model-version", unknown),
        ("model", "approve", "--model-version", unknown, "--reason", "no such evaluation"),
        ("keys", "platform", "register", "--tenant", unknown),
        ("verify", "model", unknown, "--tenant", tenant),
        ("drift", "report", unknown, "--tenant", tenant, "--html", str(nowhere)),
        ("provenance", "export", unknown, "--tenant", tenant, "--out", str(nowhere)),
        ("provenance", "verify", str(world.state / f"{unknown}.json"), "--trusted-key", key),
        ("model", "download", unknown, "--tenant", tenant, "--out", str(nowhere)),
        ("audit", "checkpoint", "--tenant", unknown),
        ("model", "rollback", "--tenant", tenant, "--model", "yield"),
        ("dlq", "resolve", "--tenant", tenant, unknown),
        ("schedule", "delete", "--tenant", tenant),
        ("token", "create", "--tenant", unknown),
        ("token", "revoke", "--tenant", tenant, unknown),
    ):
        # The first as the console script in a new interpreter; the rest forked.
        message = await refused(env, 3, *argv, fresh=argv[0] == "pipeline")
        assert unknown in message or tenant in message or "no PRODUCTION" in message, message
    assert not nowhere.exists()
    ran = await rai(env, "pipeline", "status", "--tenant", tenant, fresh=True)  # without --json
    assert (ran.code, ran.out) == (3, "")
    assert ran.err == f"rai: error: no pipeline run retrain/{tenant}\n"


async def test_status_answers_without_a_worker(world: World) -> None:
    """A query needs a worker; the status still reports what the server knows."""
    tenant = str(await world.services.tenant("unattended farm"))
    nobody = {**world.env, "RAI_TRAINING_TASK_QUEUE": f"nobody-{uuid.uuid4()}"}
    started = await ok(nobody, "pipeline", "start", "--tenant", tenant)
    assert (started["workflow_id"], started["result"]) == (f"retrain/{tenant}", None)
    try:
        status = await ok(nobody, "pipeline", "status", "--tenant", tenant)
        assert (status["run_id"], status["state"]) == (started["run_id"], "RUNNING")
        assert (status["progress"], status["result"]) == (None, None)
    finally:
        await world.temporal.client.get_workflow_handle(started["workflow_id"]).terminate("test")


async def test_an_unreachable_service_exits_4(world: World, refused_port: int) -> None:
    tenant = str(uuid4())
    port = refused_port
    no_postgres = rai_environment(
        world.settings.model_copy(update={"app_database_url": None}),
        RAI_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/rai",
    )
    out = str(world.state / "unreachable.out")
    argv: tuple[str, ...]
    for argv in (
        ("model", "list", "--tenant", tenant),
        ("model", "download", str(uuid4()), "--tenant", tenant, "--out", out),
        ("provenance", "export", str(uuid4()), "--tenant", tenant, "--out", out),
        ("audit", "checkpoint", "--tenant", tenant),
        ("drift", "report", str(uuid4()), "--tenant", tenant, "--html", out),
        ("token", "list", "--tenant", tenant),
    ):
        message = await refused(no_postgres, 4, *argv, fresh=argv[:2] == ("model", "list"))
        assert message.startswith(f"cannot connect to postgresql://rai_app@127.0.0.1:{port}/rai: ")
    message = await refused(no_postgres, 4, "db", "migrate")
    assert message.startswith(f"cannot connect to postgresql://postgres@127.0.0.1:{port}/")
    message = await refused(no_postgres, 4, "keys", "platform", "register", "--tenant", tenant)
    assert message.startswith(f"cannot connect to postgresql://postgres@127.0.0.1:{port}/")

    no_temporal = {**world.env, "RAI_TEMPORAL_ADDRESS": f"127.0.0.1:{port}"}
    for argv in (
        ("pipeline", "status", "--tenant", tenant),
        ("schedule", "list"),
        ("model", "approve", "--model-version", tenant, "--reason", "x"),
    ):
        message = await refused(no_temporal, 4, *argv, fresh=argv[0] == "pipeline")
        assert message.startswith(f"cannot reach Temporal at 127.0.0.1:{port}: "), message

    no_s3 = {**world.env, "RAI_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    # A tenant that exists, so that both commands get as far as reading its checkpoints.
    known = str(await world.services.tenant("farm without S3"))
    for argv in (
        ("storage", "check"),
        ("audit", "checkpoint", "--tenant", known),
        ("db", "verify-chain", "--tenant", known),
    ):
        message = await refused(no_s3, 4, *argv, fresh=argv[0] == "storage")
        assert message.startswith(f"cannot reach S3 at http://127.0.0.1:{port} ("), message


async def test_bad_usage_exits_2_and_answers_in_json(world: World) -> None:
    message = await refused(world.env, 2, "pipeline", "status", "--tenant", "farm-7", fresh=True)
    assert message == "rai pipeline status: argument --tenant: not a tenant id (UUID): 'farm-7'"
    message = await refused(world.env, 2, "worker", "--queue", "gpu")
    assert "argument --queue: invalid choice: 'gpu'" in message
    ran = await rai(world.env, "schedule", "create", "--tenant", str(uuid4()), "--every", "1x")
    assert ran.code == 1
    assert ran.err.startswith("rai: error: --every: not an interval: '1x'")


@pytest.mark.parametrize(("queue", "polls"), [("drift", ["drift"]), ("training", ["training"])])
async def test_worker_polls_only_the_chosen_queue(
    world: World, queue: str, polls: list[str]
) -> None:
    queues = {"training": f"training-{uuid.uuid4()}", "drift": f"drift-{uuid.uuid4()}"}
    env = {
        **world.env,
        "RAI_TRAINING_TASK_QUEUE": queues["training"],
        "RAI_DRIFT_TASK_QUEUE": queues["drift"],
    }
    process = await asyncio.create_subprocess_exec(
        str(RAI),
        "worker",
        "--queue",
        queue,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), COMMAND_TIMEOUT)
        address = world.settings.temporal_address
        expected = " and ".join(queues[name] for name in polls)
        polling, metrics_url = line.decode().rstrip("\n").split("; metrics at ")
        assert polling == f"rai worker: polling {expected} at {address}"
        assert metrics_url.startswith("http://127.0.0.1:")
        assert metrics_url.endswith("/metrics")
        async with httpx.AsyncClient(timeout=30) as http:
            scraped = await http.get(metrics_url)
        assert scraped.status_code == 200
        assert_seed_metrics(scraped.text)
        # the database-held gauges, read as rai_metrics (RAI_METRICS_DATABASE_URL)
        assert "rai_metrics_database_up 1.0\n" in scraped.text
        assert "rai_temporal_sdk_metrics_up 1.0" in scraped.text or (
            "rai_temporal_sdk_metrics_up 1\n" in scraped.text
        )
        assert "\ntemporal_" in scraped.text  # the Temporal SDK's own
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # no-op once all of it has stopped
        await process.wait()
    assert process.returncode == 0, err.decode()
    assert out.decode() == "rai worker: stopped\n"


SEED_METRICS = {
    "rai_drift_psi_value": "gauge",
    "rai_training_duration_seconds": "histogram",
    "rai_pipeline_status_total": "counter",
    "rai_retrain_cooldown_active": "gauge",
}


def assert_seed_metrics(text: str) -> None:
    """The seed's four metrics with their names and types, as a scrape sees them."""
    for name, kind in SEED_METRICS.items():
        assert f"# TYPE {name} {kind}\n" in text, name


async def test_the_api_serves_the_seed_metrics(world: World) -> None:
    # Its own process group: whatever happens, the API and its worker processes are stopped.
    process = await asyncio.create_subprocess_exec(
        str(RAI), "api", "--port", "0", env=world.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), COMMAND_TIMEOUT)).decode()
        url = line.removeprefix("rai api: serving ").split(" ")[0]
        async with httpx.AsyncClient(timeout=30) as http:
            scraped = await http.get(f"{url}/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert_seed_metrics(scraped.text)
        # The database-held gauges and the tenant names are the worker's, never the API's.
        for worker_only in ("rai_metrics_database_up", "rai_tenant_info", "rai_dead_letters_open"):
            assert worker_only not in scraped.text
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # no-op once all of it has stopped
        await process.wait()
    assert process.returncode == 0, err.decode()


async def test_api_workers_stop_when_their_parent_is_killed(world: World) -> None:
    """``rai api --workers 2`` SIGKILLed: its worker processes stop too (the kernel tells
    them), so nothing keeps serving on the port or holding the parent's pipes."""
    process = await asyncio.create_subprocess_exec(
        str(RAI), "api", "--port", "0", "--workers", "2", env=world.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    group = process.pid

    async def left() -> bool:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True

    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), COMMAND_TIMEOUT)
        assert line.startswith(b"rai api: serving"), line
        process.kill()
        await wait_until(
            left, lambda alive: not alive, within=60, failure="API workers outlived their parent"
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        await process.wait()
