"""The metrics adapter: the seed's names and types, what each recording does, bounded labels,
and prometheus-client's multiprocess mode summing several API processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import (
    DatabaseSnapshot,
    DatabaseState,
    DriftFigures,
    FeatureFigures,
    Metrics,
    process_exposition,
)

pytestmark = pytest.mark.unit


def families(body: bytes) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(body.decode())}


def sample(body: bytes, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_the_seed_metrics_have_their_names_and_types() -> None:
    metrics = Metrics()
    state = DatabaseState("postgresql://nobody@127.0.0.1:1/none")
    state._snapshot = DatabaseSnapshot(cooldowns={"t1": True})
    found = families(process_exposition(metrics, state))
    assert found["rai_drift_psi_value"] == "gauge"
    assert found["rai_training_duration_seconds"] == "histogram"
    assert found["rai_pipeline_status"] == "counter"  # rai_pipeline_status_total on the wire
    assert found["rai_retrain_cooldown_active"] == "gauge"
    # Without the database-held gauges (the API), the cooldown gauge is declared, no samples.
    without = process_exposition(metrics, None)
    assert b"# TYPE rai_pipeline_status_total counter" in without
    assert families(without)["rai_retrain_cooldown_active"] == "gauge"
    assert b"\nrai_retrain_cooldown_active" not in without
    assert b"rai_tenant_info" not in without
    assert b"rai_metrics_database_up" not in without


def test_recordings_land_on_bounded_labels() -> None:
    metrics = Metrics()
    metrics.pipeline_finished("t1", "SUCCEEDED_SHADOW")
    metrics.pipeline_finished("t1", "SKIPPED_LOCKED")
    metrics.pipeline_finished("t1", "SKIPPED_LOCKED")
    metrics.training_finished("t1", "SUCCEEDED", 90.0)
    metrics.training_phase("t1", "RUNNING")
    metrics.events_ingested("t1", {"ACCEPTED": 3, "DUPLICATE": 1, "CONFLICT": 0}, 0.02)
    metrics.lease_tried("t1", True, 0.01)
    metrics.lease_released("t1", 120.0)
    metrics.drift_report(
        "t1",
        DriftFigures(
            verdict="DRIFT",
            per_feature_alpha=0.025,
            psi_threshold=0.1,
            n_reference=1100,
            n_current=1200,
            features=(
                FeatureFigures("ndvi", 0.4, 1e-9, "DRIFT"),
                FeatureFigures("crop", 0.01, None, "NO_DRIFT"),
            ),
        ),
    )
    body = process_exposition(metrics, None)
    assert sample(body, "rai_pipeline_status_total", outcome="SKIPPED_LOCKED") == 2
    assert sample(body, "rai_pipeline_status_total", outcome="SUCCEEDED_SHADOW") == 1
    assert sample(body, "rai_training_duration_seconds_count", outcome="SUCCEEDED") == 1
    assert sample(body, "rai_training_duration_seconds_bucket", le="60.0") == 0
    assert sample(body, "rai_training_duration_seconds_bucket", le="120.0") == 1
    assert sample(body, "rai_ingest_events_total", outcome="ACCEPTED") == 3
    assert sample(body, "rai_ingest_events_total", outcome="CONFLICT") is None  # zero: no series
    assert sample(body, "rai_drift_psi_value", feature="ndvi") == 0.4
    assert sample(body, "rai_drift_ks_pvalue", feature="crop") is None
    assert sample(body, "rai_drift_verdicts_total", feature="ndvi", verdict="DRIFT") == 1
    assert sample(body, "rai_drift_sample_size", window="current") == 1200
    assert sample(body, "rai_lease_hold_duration_seconds_sum", tenant="t1") == 120.0
    allowed = {"tenant", "feature", "outcome", "verdict", "phase", "result", "window", "le"}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            assert set(s.labels) <= allowed, s


def test_database_gauges_are_withheld_when_the_database_cannot_be_read() -> None:
    state = DatabaseState("postgresql://nobody@127.0.0.1:1/none")
    body = process_exposition(Metrics(), state)
    assert sample(body, "rai_metrics_database_up") == 0
    assert b"rai_dead_letters_open" not in body


async def test_an_unreachable_database_reads_as_down() -> None:
    state = DatabaseState("postgresql://nobody@127.0.0.1:1/none", timeout=5)
    await state.refresh()
    assert sample(process_exposition(Metrics(), state), "rai_metrics_database_up") == 0


RECORD = """
from adapters.metrics import Metrics
m = Metrics()
for _ in range({n}):
    m.pipeline_finished("t1", "NO_DRIFT")
m.events_ingested("t1", {{"ACCEPTED": {n}}}, 0.01)
"""


def test_several_processes_sum_in_multiprocess_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "prom"
    directory.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(directory), "PATH": "/usr/bin:/bin"}
    for n in (2, 3):
        subprocess.run(
            [sys.executable, "-c", RECORD.format(n=n)],
            env=env,
            check=True,
            cwd=Path(__file__).parents[2],
        )
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    body = process_exposition(Metrics(), None)
    assert sample(body, "rai_pipeline_status_total", outcome="NO_DRIFT") == 5
    assert sample(body, "rai_ingest_events_total", outcome="ACCEPTED") == 5
    assert sample(body, "rai_ingest_batch_duration_seconds_count") == 2
