"""The retraining pipeline's vocabulary: inputs and results of the workflow and of each step.

One pydantic model per call (workflows and activities take exactly one argument), so fields can
be added without breaking running histories. Bulk data never travels in these: S3 URIs and
SHA-256 hashes do (claim check).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.training import TrainedModel, TrainingReport

TRAINING_QUEUE = "training-queue"
DRIFT_QUEUE = "drift-analysis-queue"
DEAD_LETTER_QUEUE = "training-queue-failed"
DEFAULT_MODEL_NAME = "yield"


def pipeline_workflow_id(tenant_id: UUID) -> str:
    """One pipeline per tenant at a time: Temporal refuses a second start of this id."""
    return f"retrain/{tenant_id}"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineOutcome(StrEnum):
    SUCCEEDED_SHADOW = "SUCCEEDED_SHADOW"
    NO_DRIFT = "NO_DRIFT"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
    SKIPPED_LOCKED = "SKIPPED_LOCKED"
    SKIPPED_ACTIVE_RUN = "SKIPPED_ACTIVE_RUN"
    SKIPPED_COOLDOWN = "SKIPPED_COOLDOWN"
    FAILED_DEAD_LETTERED = "FAILED_DEAD_LETTERED"
    # The tenant lease could not be renewed (lost, or Redis gone past the retry budget): the
    # pipeline stopped before its next write; the fencing token keeps its later writes out.
    FAILED_LEASE_LOST = "FAILED_LEASE_LOST"


DEAD_LETTER_TEXT_LIMIT = 4000  # characters of an error a dead letter keeps


def sanitised_text(text: str, limit: int = DEAD_LETTER_TEXT_LIMIT) -> str:
    """``text`` as a dead letter stores it: NUL bytes (which Postgres text refuses) and other
    control characters but newline and tab shown as ``\\xNN``, at most ``limit`` characters
    (an ellipsis marks a cut), so what a failure said can never make its recording fail."""
    cleaned = "".join(c if c in "\n\t" or c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    if len(cleaned) > limit:
        return cleaned[: limit - 1] + "…"
    return cleaned


class PipelineInput(_Message):
    tenant_id: UUID
    trigger: str = "manual"
    model_name: str = DEFAULT_MODEL_NAME
    # Seasons to compare; None picks the tenant's two most recent seasons.
    reference_season: str | None = None
    current_season: str | None = None
    # Where drift analysis runs (M6); tests give each run queues of its own.
    drift_task_queue: str = DRIFT_QUEUE
    # How long a silent training step may go before Temporal retries it on another worker.
    training_heartbeat_seconds: float = Field(default=10.0, gt=0)
    # The same for every other step (drift, snapshot, registration, bias audit, and the short
    # ones: lock, preconditions, promotion, dead letter, outcome, checkpoint): a killed worker
    # costs about this long, not the step's start-to-close timeout.
    step_heartbeat_seconds: float = Field(default=10.0, gt=0)
    # How often the pipeline renews its tenant lease (well inside the lease's TTL).
    lease_renewal_seconds: float = Field(default=900.0, gt=0)
    # How long the version this run puts in SHADOW stays in CANARY, once approved, before
    # PRODUCTION (the shadow evaluation's ``canary_dwell``); None: the evaluation's default.
    canary_dwell_seconds: float | None = Field(default=None, gt=0)


class PipelineResult(_Message):
    tenant_id: UUID
    outcome: PipelineOutcome
    detail: str = ""
    drift_report_id: UUID | None = None
    drift_verdict: str | None = None
    drift_features: dict[str, str] = Field(default_factory=dict)
    training_run_id: UUID | None = None
    job_name: str | None = None
    model_version_id: UUID | None = None
    artifact_sha256: str | None = None
    dead_letter_id: UUID | None = None


class PipelineProgress(_Message):
    """What the workflow's ``progress`` query answers while it runs."""

    step: str
    result: PipelineResult | None = None


class LockRequest(_Message):
    tenant_id: UUID
    holder: str


class LeaseInfo(_Message):
    tenant_id: UUID
    token: str
    fence: int
    holder: str
    # When the lease was granted (Unix epoch milliseconds, the acquiring worker's clock), so
    # whichever worker releases it can tell how long it was held. None in histories recorded
    # before the field existed.
    granted_at_ms: int | None = None


class LockResult(_Message):
    lease: LeaseInfo | None


class PreconditionsInput(_Message):
    tenant_id: UUID
    now: datetime


class PreconditionsResult(_Message):
    blocked_by: PipelineOutcome | None = None
    detail: str = ""


class DriftInput(_Message):
    tenant_id: UUID
    reference_season: str | None
    current_season: str | None


class DriftOutput(_Message):
    report_id: UUID | None
    verdict: str
    reference_season: str | None
    current_season: str | None
    features: dict[str, str] = Field(default_factory=dict)
    detail: str = ""


class SnapshotInput(_Message):
    tenant_id: UUID
    training_run_id: UUID
    season: str


class SnapshotOutput(_Message):
    dataset_uri: str
    dataset_sha256: str
    rows: int


TRAINING_FINISHED_SIGNAL = "training_finished"


class TrainingOutcome(TrainingReport):
    """A training job's completion, as its signed callback reports it (the signal's payload)."""

    training_run_id: UUID | None = None


class RegisterInput(TrainedModel):
    """The trained model to register, and where it came from."""

    tenant_id: UUID
    training_run_id: UUID
    model_name: str
    dataset_uri: str
    dataset_sha256: str
    drift_report_id: UUID | None


class RegisterOutput(_Message):
    model_version_id: UUID
    version: int
    artifact_sha256: str


class AuditInput(_Message):
    tenant_id: UUID
    model_version_id: UUID
    season: str


class AuditOutput(_Message):
    passed: bool
    detail: str


class PromoteInput(_Message):
    tenant_id: UUID
    model_version_id: UUID


class DeadLetterInput(_Message):
    tenant_id: UUID
    workflow_id: str
    error: str
    attempts: int
    training_run_id: UUID | None = None


class DeadLetterOutput(_Message):
    dead_letter_id: UUID


class OutcomeInput(_Message):
    workflow_id: str
    result: PipelineResult


class CheckpointInput(_Message):
    """Sign the tenant's audit-chain head into the WORM bucket (the end of every run)."""

    tenant_id: UUID


class ActivityName:
    """The registered names of the pipeline's activities (workflow and worker share them)."""

    ACQUIRE_LOCK = "acquire_tenant_lock"
    RENEW_LOCK = "renew_tenant_lock"
    RELEASE_LOCK = "release_tenant_lock"
    CHECK_PRECONDITIONS = "check_preconditions"
    ANALYZE_DRIFT = "analyze_drift"
    SNAPSHOT_DATASET = "snapshot_dataset"
    TRAIN_MODEL = "train_model"
    REGISTER_MODEL = "register_model"
    AUDIT_MODEL = "audit_model"
    PROMOTE_TO_SHADOW = "promote_to_shadow"
    DEAD_LETTER = "dead_letter"
    RECORD_OUTCOME = "record_pipeline_outcome"
    CHECKPOINT_CHAIN = "checkpoint_audit_chain"
    CANCEL_TRAINING = "cancel_training_run"


class CancelTrainingInput(_Message):
    """A cancelled pipeline's cleanup: stop the run's job, mark the run CANCELLED."""

    tenant_id: UUID
    training_run_id: UUID
    reason: str


class TrainInput(_Message):
    tenant_id: UUID
    training_run_id: UUID
    workflow_id: str
    fence: int
    model_name: str
    dataset_uri: str
    dataset_sha256: str
