"""The job-runner port: how the pipeline launches, watches and cancels training jobs.

Services and activities are written against :class:`JobRunner` only; each place a job can run
is one adapter beside the others (``adapters.localjobs``: detached local processes; a
Kubernetes Job runner), chosen in one place (``adapters.jobrunners``). The port lives in
``domain`` because its adapters raise its errors and adapters import nothing but ``domain``.

A job runs the trainer: :attr:`JobSpec.argv` holds the interpreter's arguments
(``-m trainer --tenant-id …``, built by :meth:`domain.training.TrainingJobArgs.to_argv`). The
runner prepends the interpreter, as a container's ``command: [python]`` would, and appends
``--result-file``: it decides where it reads the result from, and reports it as the job's
:class:`~domain.training.TrainingResult`. :attr:`JobSpec.secret_env` (the callback key, S3
credentials) is kept apart from :attr:`JobSpec.env`: a runner gives both to the job but never
records or shows the secret values (a Kubernetes runner puts them in a Secret).

A job's name is derived from its training run and attempt (:func:`job_name_for`), so a worker
that restarts after a crash finds the job its predecessor launched instead of starting a second
one; ``launch`` of a name that exists re-attaches to that job, running or finished.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final, Protocol
from uuid import UUID

from domain.training import TrainingResult

TRAINER_MODULE: Final = "trainer"
RESULT_FILE_OPTION: Final = "--result-file"

# A Kubernetes object name (RFC 1123 label): the same names work for every runner.
_JOB_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_TRAINING_JOB_NAME = re.compile(r"rai-train-(?P<run>[0-9a-f]{32})(?:-a(?P<attempt>[1-9][0-9]*))?")


class JobState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


class JobRunnerError(Exception):
    """The runner could not do what was asked (not: the job failed; that is a JobStatus)."""


class JobLaunchError(JobRunnerError):
    """Nothing was started; launching again may succeed."""


def is_job_name(name: str) -> bool:
    """True for a name every runner accepts: lowercase letters, digits and '-', at most 63."""
    return _JOB_NAME.fullmatch(name) is not None


def job_name_for(training_run_id: UUID, attempt: int = 1) -> str:
    """The job of a training run: ``rai-train-<the run id's 32 hex digits>``, plus ``-a<N>``
    for a deliberate re-run (attempt N > 1). All 128 bits are kept: a prefix of a time-ordered
    UUID would let two runs started in the same millisecond share a job."""
    if attempt < 1:
        raise ValueError("attempts count from 1")
    name = f"rai-train-{training_run_id.hex}"
    return name if attempt == 1 else f"{name}-a{attempt}"


def job_attempt(name: str) -> int:
    """The attempt a :func:`job_name_for` name was made for (ValueError for any other name)."""
    match = _TRAINING_JOB_NAME.fullmatch(name)
    if match is None:
        raise ValueError(f"not the name of a training job: {name!r}")
    return int(match["attempt"] or 1)


@dataclass(frozen=True)
class JobOrigin:
    """What a job was launched for: a runner records it with the job (a Kubernetes runner as
    the job's labels), so a job can be traced to its tenant, run and attempt without its
    command line."""

    tenant_id: UUID
    training_run_id: UUID
    attempt: int
    model_name: str


@dataclass(frozen=True)
class JobSpec:
    """A job to launch: its name, what it was launched for, the interpreter's arguments
    (``("-m", "trainer", "--tenant-id", …)``, without ``--result-file``), its environment and,
    apart from it, its secret environment (see the module docstring)."""

    name: str
    argv: tuple[str, ...]
    origin: JobOrigin
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_job_name(self.name):
            raise ValueError(
                f"job name {self.name!r}: lowercase letters, digits and '-', at most 63"
            )
        if self.argv[:2] != ("-m", TRAINER_MODULE):
            raise ValueError(f"a job runs the trainer: argv starts with -m {TRAINER_MODULE}")
        if any(
            arg == RESULT_FILE_OPTION or arg.startswith(f"{RESULT_FILE_OPTION}=")
            for arg in self.argv
        ):
            raise ValueError(f"the runner sets {RESULT_FILE_OPTION} itself")
        expected = job_name_for(self.origin.training_run_id, self.origin.attempt)
        if self.name != expected:
            raise ValueError(f"job {self.name} of that run and attempt is named {expected}")
        shared = sorted(set(self.env) & set(self.secret_env))
        if shared:
            raise ValueError(f"{', '.join(shared)}: both in env and in secret_env")


@dataclass(frozen=True)
class JobHandle:
    """A launched job. ``created`` is False when ``launch`` found the job already launched
    and re-attached to it. ``pid`` and ``started_at`` are its process' as the runner knows
    them (None when unknown, or when the runner has no process IDs)."""

    name: str
    created: bool
    pid: int | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class JobStatus:
    """Where a job is. ``result`` is the trainer's result once it has written one;
    ``exit_code`` is the trainer's exit status once it has exited (if that was recorded)."""

    name: str
    state: JobState
    detail: str
    result: TrainingResult | None = None
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.state in (JobState.SUCCEEDED, JobState.FAILED)


class JobRunner(Protocol):
    async def launch(self, spec: JobSpec) -> JobHandle:
        """Start the job, or re-attach to it if its name was launched before: never a second
        job of one name. :class:`JobLaunchError` when nothing was started."""
        ...

    async def status(self, name: str) -> JobStatus:
        """Where the job is (``UNKNOWN`` for a name never launched)."""
        ...

    async def cancel(self, name: str) -> None:
        """Stop the job if it runs; a job that is unknown or already over is left alone."""
        ...
