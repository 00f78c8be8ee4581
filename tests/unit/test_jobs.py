"""The job-runner port's values: names a job of a run and attempt must have, and what a spec
refuses."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from domain.jobs import JobOrigin, JobSpec, job_attempt, job_name_for

pytestmark = pytest.mark.unit

RUN = UUID("0123456789abcdef0123456789abcdef")


def origin(attempt: int = 1) -> JobOrigin:
    return JobOrigin(tenant_id=uuid4(), training_run_id=RUN, attempt=attempt, model_name="yield")


@pytest.mark.parametrize("attempt", [1, 2, 17])
def test_a_job_name_tells_its_attempt(attempt: int) -> None:
    assert job_attempt(job_name_for(RUN, attempt)) == attempt


@pytest.mark.parametrize(
    "name",
    [
        "rai-train-0123",
        f"rai-train-{RUN.hex}-a0",
        f"rai-train-{RUN.hex}-a",
        f"rai-train-{RUN.hex}-x2",
        f"other-{RUN.hex}",
    ],
)
def test_only_training_job_names_have_an_attempt(name: str) -> None:
    with pytest.raises(ValueError, match="not the name of a training job"):
        job_attempt(name)


def test_a_spec_is_named_for_its_run_and_attempt() -> None:
    argv = ("-m", "trainer")
    assert JobSpec(name=job_name_for(RUN, 2), argv=argv, origin=origin(2)).origin.attempt == 2
    with pytest.raises(ValueError, match=f"is named {job_name_for(RUN, 2)}"):
        JobSpec(name=job_name_for(RUN), argv=argv, origin=origin(2))
    with pytest.raises(ValueError, match="is named"):
        JobSpec(name=job_name_for(uuid4()), argv=argv, origin=origin())


def test_a_variable_is_either_plain_or_secret() -> None:
    with pytest.raises(ValueError, match="RAI_S3_SECRET_KEY: both in env and in secret_env"):
        JobSpec(
            name=job_name_for(RUN),
            argv=("-m", "trainer"),
            origin=origin(),
            env={"RAI_S3_SECRET_KEY": "a", "RAI_S3_REGION": "r"},
            secret_env={"RAI_S3_SECRET_KEY": "b"},
        )
