"""The training job against the run's real S3 server: as a real process through
LocalJobRunner (artifact, metrics, result file, signed callback), and in-process for the
ways a job can fail."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from adapters.callback_client import post_callback
from adapters.localjobs import LocalJobRunner
from adapters.objectstore import ObjectStore, S3Uri
from domain.canonical import canonical_json
from domain.holdout import HoldoutSplit
from domain.jobs import JobState
from domain.ridge import load_model
from domain.signing import DocumentKind, Signer, verify
from domain.training import (
    TrainingJobArgs,
    TrainingResult,
    TrainingStatus,
    training_callback_document,
)
from settings import Settings
from tests.integration.training_support import (
    SOIL_EFFECTS,
    Snapshot,
    job_spec,
    jsonl,
    put_snapshot,
    stop_leftovers,
    synthetic_events,
    training_args,
    wait_until_exited,
)
from trainer.job import TrainerSettings, run_job, train
from trainer.model import fit_ridge, parse_snapshot

pytestmark = pytest.mark.integration


@pytest.fixture
async def runner(tmp_path: Path) -> AsyncIterator[LocalJobRunner]:
    job_runner = LocalJobRunner(tmp_path / "state", stop_grace=5.0)
    try:
        yield job_runner
    finally:
        await stop_leftovers(job_runner.jobs_dir)


@pytest.fixture
async def store(service_storage: Settings) -> AsyncIterator[ObjectStore]:
    async with ObjectStore.from_settings(service_storage) as opened:
        yield opened


@pytest.fixture
async def snapshot(store: ObjectStore, service_storage: Settings) -> Snapshot:
    return await put_snapshot(store, service_storage, jsonl(synthetic_events(300)))


@dataclass
class CallbackSink:
    """A tiny HTTP receiver: records every body; answers the scripted statuses, then 200."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    script: list[int] = field(default_factory=list)


@pytest.fixture
async def sink() -> AsyncIterator[CallbackSink]:
    received = CallbackSink()

    async def receive(request: web.Request) -> web.Response:
        received.bodies.append(await request.json())
        status = received.script.pop(0) if received.script else 200
        return web.Response(status=status, text="noted")

    app = web.Application()
    app.router.add_post("/v1/callbacks/training", receive)
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    host, port = app_runner.addresses[0][:2]
    received.url = f"http://{host}:{port}/v1/callbacks/training"
    try:
        yield received
    finally:
        await app_runner.cleanup()


def _settings(storage: Settings, **extra: Any) -> TrainerSettings:
    return TrainerSettings(**storage.model_dump(), **extra)


async def test_a_snapshot_becomes_a_verifiable_model(
    runner: LocalJobRunner, store: ObjectStore, service_storage: Settings, snapshot: Snapshot
) -> None:
    args = training_args(service_storage, snapshot)
    spec = job_spec(service_storage, args)
    await runner.launch(spec)
    status = await wait_until_exited(runner, spec.name)

    assert status.state is JobState.SUCCEEDED, status.detail
    assert status.exit_code == 0
    assert status.result is not None
    result = TrainingResult.model_validate(status.result)
    assert result.artifact_uri is not None
    assert result.metrics is not None
    artifact = S3Uri.parse(result.artifact_uri)
    prefix = args.output_prefix.removeprefix(f"s3://{service_storage.s3_registry_bucket}/")
    assert (artifact.bucket, artifact.key) == (
        service_storage.s3_registry_bucket,
        prefix + "model.json",
    )
    assert artifact.version_id is not None, "the registry bucket is versioned: pin the version"

    digest = await store.stream_sha256(artifact.bucket, artifact.key, artifact.version_id)
    assert digest.sha256_hex == result.artifact_sha256
    metrics = await store.get_bytes(artifact.bucket, prefix + "metrics.json")
    assert metrics == canonical_json(result.metrics)
    assert result.metrics["n_train"] + result.metrics["n_validation"] == 300
    assert result.metrics["n_validation"] > 0
    assert result.metrics["validation_r2"] > 0.95

    # The artifact alone reproduces the fit: the same predictions, bit for bit.
    model = load_model(await store.get_bytes(artifact.bucket, artifact.key, artifact.version_id))
    expected = fit_ridge(parse_snapshot(snapshot.data)).model
    rows = [event["features"] for event in synthetic_events(300, seed=99)[:25]]
    assert [model.predict(row) for row in rows] == [expected.predict(row) for row in rows]
    effect = model.predict({"rain_mm": 300.0, "temp_c": 18.0, "soil": "sand"}) - model.predict(
        {"rain_mm": 300.0, "temp_c": 18.0, "soil": "clay"}
    )
    assert effect == pytest.approx(SOIL_EFFECTS["sand"] - SOIL_EFFECTS["clay"], abs=0.1)


async def test_the_job_fits_on_the_train_side_of_its_holdout_fraction(
    runner: LocalJobRunner, store: ObjectStore, service_storage: Settings, snapshot: Snapshot
) -> None:
    args = dataclasses.replace(training_args(service_storage, snapshot), holdout_fraction=0.4)
    spec = job_spec(service_storage, args)
    assert "--holdout-fraction" in spec.argv
    await runner.launch(spec)
    status = await wait_until_exited(runner, spec.name)

    assert status.state is JobState.SUCCEEDED, status.detail
    result = TrainingResult.model_validate(status.result)
    assert result.metrics is not None
    assert result.artifact_uri is not None
    split = HoldoutSplit(0.4)
    events = synthetic_events(300)
    held_out = [e for e in events if split.is_holdout(e["field_id"])]
    assert result.metrics["holdout_fraction"] == 0.4
    assert (result.metrics["n_train"], result.metrics["n_validation"]) == (
        300 - len(held_out),
        len(held_out),
    )
    # the artifact is the fit of the train side alone
    artifact = S3Uri.parse(result.artifact_uri)
    model = load_model(await store.get_bytes(artifact.bucket, artifact.key, artifact.version_id))
    train_side = [e for e in events if not split.is_holdout(e["field_id"])]
    assert model == fit_ridge(parse_snapshot(jsonl(train_side)), holdout=split).model


async def test_a_dataset_with_another_hash_is_refused(
    runner: LocalJobRunner,
    store: ObjectStore,
    service_storage: Settings,
    snapshot: Snapshot,
    sink: CallbackSink,
) -> None:
    tampered = Snapshot(snapshot.uri, "0" * 64, snapshot.data)
    seed = Signer.generate()
    args = training_args(service_storage, tampered, callback_url=sink.url)
    spec = job_spec(service_storage, args, callback_key=seed.seed_hex())
    await runner.launch(spec)
    status = await wait_until_exited(runner, spec.name)

    assert status.state is JobState.FAILED
    assert status.exit_code == 1
    assert status.result is not None
    assert status.result.error is not None
    assert "SHA-256 mismatch" in status.result.error
    assert snapshot.sha256 in status.result.error
    assert status.result.artifact_uri is None
    prefix = args.output_prefix.removeprefix(f"s3://{service_storage.s3_registry_bucket}/")
    assert await store.head(service_storage.s3_registry_bucket, prefix + "model.json") is None
    # A refusal is reported on the callback channel too, signed like a success.
    [body] = sink.bodies
    assert body["document"]["status"] == "FAILED"
    assert verify(
        seed.public_key,
        DocumentKind.CALLBACK,
        body["document"],
        bytes.fromhex(body["signature"]),
    )


async def test_the_completion_callback_is_signed(
    runner: LocalJobRunner, service_storage: Settings, snapshot: Snapshot, sink: CallbackSink
) -> None:
    signer = Signer.generate()
    args = training_args(service_storage, snapshot, callback_url=sink.url)
    spec = job_spec(service_storage, args, callback_key=signer.seed_hex())
    await runner.launch(spec)
    status = await wait_until_exited(runner, spec.name)
    assert status.state is JobState.SUCCEEDED, status.detail
    assert status.result is not None

    [body] = sink.bodies
    assert set(body) == {"document", "signature"}
    # The receiver rebuilds the document from the fields it got, then checks the signature.
    document = body["document"]
    rebuilt = training_callback_document(
        tenant_id=args.tenant_id,
        training_run_id=args.training_run_id,
        result=TrainingResult(
            status=document["status"],
            artifact_uri=document["artifact_uri"],
            artifact_sha256=document["artifact_sha256"],
            metrics=document["metrics"],
            error=document["error"],
        ),
    )
    assert rebuilt == document
    assert document["kind"] == "training"
    assert document["status"] == "SUCCEEDED"
    assert document["artifact_uri"] == status.result.artifact_uri
    assert document["artifact_sha256"] == status.result.artifact_sha256
    assert document["metrics"] == status.result.metrics
    signature = bytes.fromhex(body["signature"])
    assert verify(signer.public_key, DocumentKind.CALLBACK, rebuilt, signature)
    assert not verify(Signer.generate().public_key, DocumentKind.CALLBACK, rebuilt, signature)
    assert not verify(signer.public_key, DocumentKind.EVENT, rebuilt, signature)
    assert not verify(
        signer.public_key, DocumentKind.CALLBACK, {**rebuilt, "status": "FAILED"}, signature
    )


async def test_an_unreachable_callback_does_not_fail_the_job(
    service_storage: Settings, snapshot: Snapshot, tmp_path: Path, unused_tcp_port: int
) -> None:
    args = training_args(
        service_storage, snapshot, callback_url=f"http://127.0.0.1:{unused_tcp_port}/cb"
    )
    settings = _settings(
        service_storage, callback_signing_key=SecretStr(Signer.generate().seed_hex())
    )
    result = await run_job(args, settings, result_file=tmp_path / "result.json")
    assert result.status is TrainingStatus.SUCCEEDED
    written = json.loads((tmp_path / "result.json").read_text())
    assert TrainingResult.model_validate(written) == result


async def test_a_callback_is_retried_after_a_server_error(sink: CallbackSink) -> None:
    sink.script = [503, 502]
    assert await post_callback(sink.url, b'{"x":1}', first_retry_seconds=0.05)
    assert len(sink.bodies) == 3


async def test_a_refused_callback_is_not_retried(sink: CallbackSink) -> None:
    sink.script = [401]
    assert not await post_callback(sink.url, b'{"x":1}', first_retry_seconds=0.05)
    assert len(sink.bodies) == 1


async def test_a_callback_url_needs_the_signing_key(
    service_storage: Settings, snapshot: Snapshot, tmp_path: Path, sink: CallbackSink
) -> None:
    args = training_args(service_storage, snapshot, callback_url=sink.url)
    result = await run_job(args, _settings(service_storage), result_file=tmp_path / "r.json")
    assert result.status is TrainingStatus.FAILED
    assert result.error is not None
    assert "RAI_CALLBACK_SIGNING_KEY" in result.error
    assert sink.bodies == [], "nothing can be signed without the key"


async def _train(settings: Settings, args: TrainingJobArgs) -> TrainingResult:
    result = await train(args, settings)
    assert result.status is TrainingStatus.FAILED
    assert result.artifact_uri is None
    assert result.metrics is None
    return result


async def test_a_snapshot_without_outcomes_fails_clearly(
    store: ObjectStore, service_storage: Settings
) -> None:
    unlabelled = await put_snapshot(
        store, service_storage, jsonl(synthetic_events(0, unlabelled=20))
    )
    result = await _train(service_storage, training_args(service_storage, unlabelled))
    assert result.error == "TrainingError: none of the 20 events has an observed outcome"


async def test_an_unparsable_snapshot_fails_clearly(
    store: ObjectStore, service_storage: Settings
) -> None:
    broken = await put_snapshot(store, service_storage, b'{"season_id": "s"\n')
    result = await _train(service_storage, training_args(service_storage, broken))
    assert result.error is not None
    assert result.error.startswith("SnapshotError: line 1: not JSON")


async def test_a_missing_dataset_fails_clearly(
    service_storage: Settings, snapshot: Snapshot
) -> None:
    missing = Snapshot(snapshot.uri.split("?")[0] + ".gone", snapshot.sha256, snapshot.data)
    result = await _train(service_storage, training_args(service_storage, missing))
    assert result.error is not None
    assert result.error.startswith("ObjectNotFoundError: GET")


async def test_unreachable_storage_fails_clearly(
    service_storage: Settings, snapshot: Snapshot, unused_tcp_port: int
) -> None:
    nowhere = service_storage.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{unused_tcp_port}"}
    )
    result = await _train(nowhere, training_args(service_storage, snapshot))
    assert result.error is not None
    assert result.error.startswith("ObjectStoreUnavailableError")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_name": "no spaces"}, "--model-name"),
        ({"dataset_sha256": "ABC"}, "--dataset-sha256"),
        ({"dataset_uri": "https://example.com/x"}, "not an s3://bucket/key URI"),
        ({"output_prefix": "s3://bucket/p/?versionId=1"}, "output prefix"),
        ({"callback_url": "file:///etc/passwd"}, "--callback-url"),
        ({"l2_lambda": -1.0}, "--l2-lambda"),
    ],
)
async def test_bad_arguments_fail_before_any_io(
    service_storage: Settings, snapshot: Snapshot, change: dict[str, Any], message: str
) -> None:
    args = training_args(service_storage, snapshot)
    bad = dataclasses.replace(args, **change)
    result = await _train(service_storage, bad)
    assert result.error is not None
    assert message in result.error
