"""The SQLSTATE of every database law, so callers can tell which law refused them."""

from __future__ import annotations

from enum import StrEnum


class Law(StrEnum):
    """SQLSTATEs raised by the triggers and constraints of ``schema.sql`` / ``triggers.sql``."""

    LINEAGE_INTEGRITY = "RA001"
    ILLEGAL_MODEL_STATUS_TRANSITION = "RA002"
    # also: the audit must name a registered, unrevoked platform key (validate_shadow_audit_signer)
    SHADOW_REQUIRES_PASSED_BIAS_AUDIT = "RA003"
    MODEL_TAMPERING = "RA004"
    APPEND_ONLY = "RA005"
    IMMUTABLE_COLUMN = "RA006"
    # also: a training run inserted in any status but QUEUED (enforce_training_run_starts_queued)
    ILLEGAL_TRAINING_RUN_TRANSITION = "RA007"
    STALE_FENCE = "RA008"
    # guard_platform_keys: only the administrative path inserts platform keys; a revoked key
    # stays revoked.
    PLATFORM_KEY_ADMINISTRATIVE = "RA010"
    # Laws kept by constraints carry the standard codes; the constraint name tells which.
    UNIQUE = "23505"
    CHECK = "23514"
    ROW_LEVEL_SECURITY = "42501"


ONE_PRODUCTION_PER_MODEL = "model_versions_one_production_per_model"
ONE_ACTIVE_TRAINING_RUN = "training_runs_one_active_per_tenant"
ONE_MODEL_PER_TRAINING_RUN = "model_versions_one_per_training_run"
