"""The trainer's result file as a Kubernetes Job carries it: written in place where nothing can
be created beside it (``/dev/termination-log``), and small enough for a termination message."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from adapters.k8sjobs import TERMINATION_MESSAGE_LIMIT, _read_result
from domain.canonical import canonical_json
from domain.jobs import job_name_for
from domain.training import TrainingResult, TrainingStatus
from tests.integration.training_support import jsonl, synthetic_events
from trainer.job import write_result_file
from trainer.model import fit_ridge, parse_snapshot

pytestmark = pytest.mark.unit


def test_a_real_result_fits_in_a_termination_message() -> None:
    events = parse_snapshot(jsonl(synthetic_events(600)))
    fit = fit_ridge(events)
    uri = (
        f"s3://rai-model-registry/models/{uuid4()}/{'m' * 128}/{uuid4()}/"
        f"{job_name_for(uuid4(), 5)}/model.json?versionId={'v' * 64}"
    )
    result = TrainingResult(
        status=TrainingStatus.SUCCEEDED,
        artifact_uri=uri,
        artifact_sha256="f" * 64,
        metrics=fit.metrics,
    )
    message = canonical_json(result.model_dump(mode="json")) + b"\n"
    # A wide margin: the metrics are a fixed set of numbers.
    assert len(message) < TERMINATION_MESSAGE_LIMIT // 2, len(message)
    assert _read_result(message.decode()) == (result, None)
    cut = (message * 8)[:TERMINATION_MESSAGE_LIMIT].decode()
    assert _read_result(cut) == (None, "the termination message was cut at 4096 bytes")


def test_the_trainer_writes_in_place_where_it_cannot_write_beside_the_file(
    tmp_path: Path,
) -> None:
    # Like /dev/termination-log: the file exists, nothing can be created next to it (here the
    # temporary name is taken by a directory, which no user can open for writing).
    target = tmp_path / "termination-log"
    target.write_text("")
    (tmp_path / ".termination-log.tmp").mkdir()
    result = TrainingResult.failed("out of GPU memory")
    write_result_file(target, result)
    assert TrainingResult.model_validate_json(target.read_text()) == result
