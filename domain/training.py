"""The training job's contracts, shared by the job (``python -m trainer``), its launchers and
the callback's receiver: what a job reports, and the environment it reads its key from."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, model_validator

CALLBACK_KEY_ENV: Final = "RAI_CALLBACK_SIGNING_KEY"


class TrainingStatus(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class TrainingResult(BaseModel):
    """What the job reports, in the result file and (signed) in the callback."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: TrainingStatus
    artifact_uri: str | None = None
    artifact_sha256: str | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.status is TrainingStatus.SUCCEEDED:
            if self.artifact_uri is None or self.artifact_sha256 is None or self.metrics is None:
                raise ValueError("a SUCCEEDED result names its artifact, hash and metrics")
            if self.error is not None:
                raise ValueError("a SUCCEEDED result has no error")
        elif self.error is None:
            raise ValueError("a FAILED result says why")
        return self

    @classmethod
    def failed(cls, error: str) -> TrainingResult:
        return cls(status=TrainingStatus.FAILED, error=error)
