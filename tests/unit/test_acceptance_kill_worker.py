"""Scenario 2's probe for "waiting for the callback" looks at this run's job only."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import pytest

from tests.acceptance.scenarios.kill_worker import tenant_job_results

pytestmark = pytest.mark.unit


def job(jobs: Path, name: str, tenant: str, *, result: bool) -> Path:
    directory = jobs / name
    directory.mkdir(parents=True)
    spec = {"name": name, "origin": {"tenant_id": tenant, "attempt": 1}}
    (directory / "spec.json").write_text(json.dumps(spec))
    if result:
        (directory / "result.json").write_text("{}")
    return directory


def test_only_the_tenants_own_finished_jobs_count(tmp_path: Path) -> None:
    mine, other = uuid4(), uuid4()
    job(tmp_path, "rai-train-earlier", str(other), result=True)  # an earlier run's, finished
    launching = job(tmp_path, "rai-train-mine", str(mine), result=False)  # spec written only
    assert tenant_job_results(tmp_path, mine) == []
    (launching / "result.json").write_text("{}")
    assert tenant_job_results(tmp_path, mine) == [launching / "result.json"]
    broken = tmp_path / "rai-train-broken"
    broken.mkdir()
    (broken / "result.json").write_text("{}")  # no readable spec: not anybody's
    assert tenant_job_results(tmp_path, mine) == [launching / "result.json"]
