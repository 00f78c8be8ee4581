"""The training job's pure parts: command line, result, callback document, environment."""

from __future__ import annotations

import json
import os
from pathlib import Path
from uuid import uuid4

import pytest
from pydantic import SecretStr, ValidationError

from domain.canonical import canonical_json
from domain.signing import DocumentKind, Signer, verify
from domain.training import (
    TrainingJobArgs,
    TrainingResult,
    TrainingStatus,
    callback_body,
    training_callback_document,
)
from services.training import job_environment
from settings import Settings
from trainer.__main__ import _settings_problem, parse_command_line
from trainer.job import TrainerSettings, parse_output_prefix, write_result_file

pytestmark = pytest.mark.unit


def _args(callback_url: str | None = "http://127.0.0.1:9/cb") -> TrainingJobArgs:
    return TrainingJobArgs(
        tenant_id=uuid4(),
        training_run_id=uuid4(),
        model_name="yield-ridge",
        dataset_uri="s3://rai-datasets/snapshots/t/r.jsonl?versionId=v1",
        dataset_sha256="a" * 64,
        output_prefix="s3://rai-model-registry/models/t/r/",
        callback_url=callback_url,
        l2_lambda=0.25,
    )


@pytest.mark.parametrize("callback_url", ["http://127.0.0.1:9/cb", None])
def test_the_command_line_round_trips(callback_url: str | None) -> None:
    args = _args(callback_url)
    argv = args.to_argv()
    assert argv[:2] == ["-m", "trainer"]
    parsed, result_file = parse_command_line([*argv[2:], "--result-file", "out/r.json"])
    assert parsed == args
    assert result_file == Path("out/r.json")


def test_the_command_line_defaults_lambda() -> None:
    argv = _args().to_argv()
    position = argv.index("--l2-lambda")
    del argv[position : position + 2]
    parsed, _ = parse_command_line([*argv[2:], "--result-file", "r.json"])
    assert parsed.l2_lambda == 1.0


def test_a_result_is_complete_for_its_status() -> None:
    with pytest.raises(ValidationError, match="names its artifact"):
        TrainingResult(status=TrainingStatus.SUCCEEDED, artifact_uri="s3://b/k")
    with pytest.raises(ValidationError, match="says why"):
        TrainingResult(status=TrainingStatus.FAILED)
    with pytest.raises(ValidationError, match="has no error"):
        TrainingResult(
            status=TrainingStatus.SUCCEEDED,
            artifact_uri="s3://b/k",
            artifact_sha256="b" * 64,
            metrics={},
            error="but",
        )
    assert TrainingResult.failed("no").model_dump(mode="json") == {
        "status": "FAILED",
        "artifact_uri": None,
        "artifact_sha256": None,
        "metrics": None,
        "error": "no",
    }


def test_the_result_file_is_written_whole(tmp_path: Path) -> None:
    path = tmp_path / "job" / "result.json"
    result = TrainingResult(
        status=TrainingStatus.SUCCEEDED,
        artifact_uri="s3://b/k?versionId=1",
        artifact_sha256="b" * 64,
        metrics={"train_rmse": 0.5},
    )
    write_result_file(path, result)
    assert path.read_bytes() == canonical_json(result.model_dump(mode="json")) + b"\n"
    assert [p.name for p in path.parent.iterdir()] == ["result.json"]
    write_result_file(path, TrainingResult.failed("second"))
    assert json.loads(path.read_text())["error"] == "second"


def test_the_callback_document_and_its_signature() -> None:
    args = _args()
    signer = Signer.generate()
    result = TrainingResult(
        status=TrainingStatus.SUCCEEDED,
        artifact_uri="s3://b/k?versionId=1",
        artifact_sha256="b" * 64,
        metrics={"n_train": 10, "validation_r2": None},
    )
    body = json.loads(
        callback_body(
            tenant_id=args.tenant_id,
            training_run_id=args.training_run_id,
            result=result,
            signer=signer,
        )
    )
    assert body["document"] == {
        "kind": "training",
        "tenant_id": str(args.tenant_id),
        "training_run_id": str(args.training_run_id),
        "status": "SUCCEEDED",
        "artifact_uri": "s3://b/k?versionId=1",
        "artifact_sha256": "b" * 64,
        "metrics": {"n_train": 10, "validation_r2": None},
        "error": None,
    }
    rebuilt = training_callback_document(
        tenant_id=args.tenant_id,
        training_run_id=args.training_run_id,
        result=TrainingResult(
            status=TrainingStatus.SUCCEEDED,
            artifact_uri=result.artifact_uri,
            artifact_sha256=result.artifact_sha256,
            metrics=result.metrics,
            error=None,
        ),
    )
    assert rebuilt == body["document"]
    signature = bytes.fromhex(body["signature"])
    assert verify(signer.public_key, DocumentKind.CALLBACK, rebuilt, signature)
    assert signature == signer.sign(DocumentKind.CALLBACK, rebuilt)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("s3://reg/models/t/r/", ("reg", "models/t/r/")),
        ("s3://reg/models/t/r", ("reg", "models/t/r/")),
        ("s3://reg/", ("reg", "")),
        ("s3://reg/a%20b/", ("reg", "a b/")),
    ],
)
def test_output_prefixes(text: str, expected: tuple[str, str]) -> None:
    assert parse_output_prefix(text) == expected


def test_the_job_environment_is_what_the_trainer_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        s3_endpoint_url="http://s3.test:8333",
        s3_region="eu-central-1",
        s3_access_key="AK",
        s3_secret_key=SecretStr("SK"),
    )
    seed = Signer.generate().seed_hex()
    environment = job_environment(settings, extra_seconds=2.5).with_callback_key(seed)
    for name in [name for name in os.environ if name.startswith("RAI_")]:
        monkeypatch.delenv(name)
    for name, value in {**environment.env, **environment.secret_env}.items():
        monkeypatch.setenv(name, value)
    read = TrainerSettings()
    assert read.s3_endpoint_url == "http://s3.test:8333"
    assert read.s3_region == "eu-central-1"
    assert read.s3_access_key == "AK"
    assert read.s3_secret_key is not None
    assert read.s3_secret_key.get_secret_value() == "SK"
    assert read.callback_signing_key is not None
    assert read.callback_signing_key.get_secret_value() == seed
    assert read.training_extra_seconds == 2.5


def test_a_configuration_error_does_not_echo_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAI_TRAINING_EXTRA_SECONDS", "-1")
    with pytest.raises(ValidationError) as caught:
        TrainerSettings()
    problem = _settings_problem(caught.value)
    assert problem.startswith("configuration: RAI_TRAINING_EXTRA_SECONDS:")
    assert "-1" not in problem.removeprefix("configuration: RAI_TRAINING_EXTRA_SECONDS:")
