"""The training job's contracts, shared by the job (``python -m trainer``), the pipeline that
launches it and the API that receives its callback: one definition of each.

The command line (:class:`TrainingJobArgs`)::

    python -m trainer --tenant-id UUID --training-run-id UUID --model-name NAME
        --dataset-uri s3://bucket/key?versionId=V --dataset-sha256 HEX
        --output-prefix s3://bucket/prefix/ [--callback-url URL] [--l2-lambda 1.0]
        [--holdout-fraction 0.2] --result-file PATH

(``--result-file`` is added by the job runner: it decides where it reads the result.) The
environment: the usual ``RAI_S3_*`` settings, :data:`CALLBACK_KEY_ENV` (hex Ed25519 seed,
required with ``--callback-url``) and :data:`EXTRA_SECONDS_ENV` (simulated GPU time).

What the job reports: its :class:`TrainingResult`, written to the result file and, signed with
the run's callback key, posted to the callback URL as ``{"document": D, "signature": HEX}``
(:func:`callback_body`), ``D`` = :func:`training_callback_document`. The fields of a report are
declared once, in :class:`TrainingReport`; the result, the callback document and the pipeline's
``TrainingOutcome`` signal are that report with what each adds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from domain.canonical import canonical_json
from domain.holdout import DEFAULT_HOLDOUT_FRACTION
from domain.signing import DocumentKind, Signer

CALLBACK_KEY_ENV: Final = "RAI_CALLBACK_SIGNING_KEY"
EXTRA_SECONDS_ENV: Final = "RAI_TRAINING_EXTRA_SECONDS"
CALLBACK_KIND: Final = "training"
DEFAULT_L2_LAMBDA: Final = 1.0

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


@dataclass(frozen=True)
class TrainingJobArgs:
    """The job's arguments (everything on the command line except ``--result-file``)."""

    tenant_id: UUID
    training_run_id: UUID
    model_name: str
    dataset_uri: str
    dataset_sha256: str
    output_prefix: str
    callback_url: str | None = None
    l2_lambda: float = DEFAULT_L2_LAMBDA
    # The share of fields held out of training for validation and the bias audit
    # (:mod:`domain.holdout`).
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION

    def to_argv(self) -> list[str]:
        """The interpreter's arguments for these values: ``-m trainer --tenant-id …`` (the
        runner prepends the interpreter and adds ``--result-file``)."""
        argv = [
            "-m",
            "trainer",
            "--tenant-id",
            str(self.tenant_id),
            "--training-run-id",
            str(self.training_run_id),
            "--model-name",
            self.model_name,
            "--dataset-uri",
            self.dataset_uri,
            "--dataset-sha256",
            self.dataset_sha256,
            "--output-prefix",
            self.output_prefix,
            "--l2-lambda",
            repr(self.l2_lambda),
            "--holdout-fraction",
            repr(self.holdout_fraction),
        ]
        if self.callback_url is not None:
            argv += ["--callback-url", self.callback_url]
        return argv


class TrainingStatus(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrainedModel(_Frozen):
    """What a successful training job produced."""

    artifact_uri: str
    artifact_sha256: str
    metrics: dict[str, Any] = Field(default_factory=dict)


class TrainingReport(_Frozen):
    """The fields a training job reports: its status (a :class:`TrainingStatus` value) and, on
    success, the artifact and its metrics, or, on failure, why. Only the result, as the job
    writes it, is held to the enum and to completeness; the pipeline's signal carries the
    report as it was delivered."""

    status: str
    artifact_uri: str | None = None
    artifact_sha256: Sha256Hex | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None

    def trained(self) -> TrainedModel | None:
        """The trained model of a success that names its artifact (None otherwise)."""
        if self.status != TrainingStatus.SUCCEEDED:
            return None
        if not self.artifact_uri or not self.artifact_sha256:
            return None
        return TrainedModel(
            artifact_uri=self.artifact_uri,
            artifact_sha256=self.artifact_sha256,
            metrics=self.metrics or {},
        )


class TrainingResult(TrainingReport):
    """A report as the job writes it: complete for its status."""

    status: TrainingStatus

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


def training_callback_document(
    *, tenant_id: UUID, training_run_id: UUID, result: TrainingResult
) -> dict[str, Any]:
    """The mapping the job signs (``DocumentKind.CALLBACK``): its result, every field present,
    named by tenant and run. The receiver rebuilds it from the fields it received
    (:meth:`TrainingCallbackDocument.signed_document`) and verifies the signature over that."""
    return {
        "kind": CALLBACK_KIND,
        "tenant_id": str(tenant_id),
        "training_run_id": str(training_run_id),
        **result.model_dump(include=set(TrainingReport.model_fields)),
        "status": result.status.value,
    }


def callback_body(
    *, tenant_id: UUID, training_run_id: UUID, result: TrainingResult, signer: Signer
) -> bytes:
    """The POST body: ``{"document": ..., "signature": hex}``, as canonical JSON."""
    document = training_callback_document(
        tenant_id=tenant_id, training_run_id=training_run_id, result=result
    )
    signature = signer.sign(DocumentKind.CALLBACK, document).hex()
    return canonical_json({"document": document, "signature": signature})


class TrainingCallbackDocument(TrainingResult):
    """The document of a received callback; every key present (values may be null)."""

    kind: Literal["training"]
    tenant_id: UUID
    training_run_id: UUID

    @model_validator(mode="before")
    @classmethod
    def _every_key(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            missing = [name for name in cls.model_fields if name not in data]
            if missing:
                raise ValueError(f"the document lacks {', '.join(missing)}")
        return data

    def report(self) -> dict[str, Any]:
        """The report's fields (what :class:`TrainingReport` declares), as values."""
        return self.model_dump(include=set(TrainingReport.model_fields))

    def signed_document(self) -> dict[str, Any]:
        """The exact mapping the job signed, rebuilt by the job's own function."""
        return training_callback_document(
            tenant_id=self.tenant_id, training_run_id=self.training_run_id, result=self
        )
