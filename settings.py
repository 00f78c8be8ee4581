"""The one configuration object of RAI Level D.

Built once by a composition root (the ``rai`` command, the worker, the API) from ``RAI_*``
environment variables and passed down; nothing else reads the environment.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.holdout import DEFAULT_HOLDOUT_FRACTION
from domain.pipeline import DRIFT_QUEUE, TRAINING_QUEUE

APP_ROLE = "rai_app"
OWNER_ROLE = "rai_owner"
# The login of the worker's metrics collector: it may call the rai.metrics_* aggregate
# functions and nothing else (no table, no CREATE), so rai_app cannot learn other tenants.
METRICS_ROLE = "rai_metrics"

# A Kubernetes resource quantity as the trainer's requests and limits use it ("500m", "2",
# "8Gi"); the API server is the judge of the rest.
KubernetesQuantity = Annotated[
    str, Field(pattern=r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
]
# A DNS-1123 subdomain: the names of Kubernetes objects (namespaces: the label form).
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


class Settings(BaseSettings):
    """Every knob, with the defaults of the embedded local stack."""

    model_config = SettingsConfigDict(env_prefix="RAI_", extra="ignore", frozen=True)

    # PostgreSQL. ``database_url`` is an administrative login (a superuser, or a role that may
    # create roles and databases): ``rai db migrate`` uses it. Services never do: they connect
    # as ``rai_app`` through ``app_database_url``, derived from it unless given. The worker's
    # metrics collector reads the cross-tenant gauges as ``rai_metrics`` through
    # ``metrics_database_url``, derived the same way; ``rai db migrate`` sets both passwords.
    database_url: str = "postgresql://postgres@127.0.0.1:5432/rai"
    app_database_url: str | None = None
    app_db_password: SecretStr | None = None
    metrics_database_url: str | None = None
    metrics_db_password: SecretStr | None = None

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Keys of the per-tenant pipeline lease and its fencing counter start with this.
    redis_key_prefix: str = "rai:lock:"
    # ``rai worker`` refuses a Redis that could lose the lease: append-only file off, or an
    # eviction policy other than noeviction (M5). False allows a development Redis.
    redis_require_aof: bool = True

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_url: str = "http://127.0.0.1:8233"
    training_task_queue: str = TRAINING_QUEUE
    drift_task_queue: str = DRIFT_QUEUE

    # Training jobs (the embedded local runner): where they keep state, whom they call back,
    # and simulated GPU time added to each job (chaos tests kill a worker meanwhile).
    callback_url: str | None = None
    # The HTTP API (``rai api``): event ingest and the jobs' completion callbacks.
    api_host: str = "127.0.0.1"
    api_port: int = 8088
    # Metrics (adapters.metrics): the worker's Prometheus endpoint (``rai worker
    # --metrics-port``; 0 picks a free port). The database-held gauges are read as rai_metrics.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=9464, ge=0, le=65535)
    # Ingest limits: a body over api_max_body_bytes is refused (413) before it is parsed, and
    # so is a batch of more than api_max_events_per_batch events. api_workers is the number of
    # server processes `rai api` runs (0: one per core, at most 8); each verifies signatures
    # on a thread per core.
    api_max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    api_max_events_per_batch: int = Field(default=10_000, ge=1)
    api_workers: int = Field(default=0, ge=0)
    training_extra_seconds: float = 0.0
    # Governance (domain.holdout, services.bias): the share of fields never trained on (their
    # events give the validation metrics and are all the bias audit sees), and the smallest
    # group of held-out events the audit judges (smaller ones are reported as such).
    holdout_fraction: float = Field(default=DEFAULT_HOLDOUT_FRACTION, gt=0, lt=1)
    bias_min_group_size: int = Field(default=30, ge=1)

    s3_endpoint_url: str = "http://127.0.0.1:8333"
    s3_region: str = "us-east-1"
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
    s3_registry_bucket: str = "rai-model-registry"
    s3_datasets_bucket: str = "rai-datasets"
    dataset_retention_days: int = 365
    tmp_expiry_days: int = 1

    # Which runner launches the training jobs: ``local`` (detached processes under state_dir)
    # or ``kubernetes`` (a batch/v1 Job per attempt, ``adapters.k8sjobs``). The Kubernetes
    # client uses the pod's service account inside a cluster (KUBERNETES_SERVICE_HOST set),
    # otherwise a kubeconfig: ``kubeconfig`` or ~/.kube/config.
    job_runner: Literal["local", "kubernetes"] = "local"
    # How many local jobs train at once on this machine (the local runner; unset: one per
    # CPU); later ones wait, PENDING, for a slot.
    local_job_slots: int | None = Field(default=None, ge=1)
    kubeconfig: Path | None = None
    k8s_namespace: str = "rai-training-jobs"
    # A pod waiting this long on an image pull, on its configuration (a missing Secret) or for
    # a node is a failed attempt.
    k8s_pod_stuck_seconds: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    # The trainer's container: image (required with the kubernetes runner), pull secrets (a
    # comma-separated list of Secret names), resources, user, deadline and clean-up delay, and
    # an existing Secret whose keys (RAI_S3_ACCESS_KEY, RAI_S3_SECRET_KEY) become its S3
    # credentials instead of the worker's own.
    trainer_image: str | None = None
    trainer_image_pull_secrets: str = ""
    trainer_gpu_count: int = Field(default=1, ge=1)
    trainer_cpu_request: KubernetesQuantity = "1"
    trainer_cpu_limit: KubernetesQuantity = "4"
    trainer_memory_request: KubernetesQuantity = "4Gi"
    trainer_memory_limit: KubernetesQuantity = "16Gi"
    trainer_active_deadline_seconds: int = Field(default=6 * 3600, ge=1)
    trainer_ttl_seconds_after_finished: int = Field(default=7 * 24 * 3600, ge=0)
    trainer_s3_secret: str | None = None
    trainer_run_as_user: int = Field(default=10001, ge=1)
    trainer_run_as_group: int = Field(default=10001, ge=1)

    # The platform's Ed25519 signing key (signs model versions, drift reports, bias audits):
    # a 32-byte seed in hex, or a file holding it (created 0600 by ``rai keys platform``).
    platform_signing_key: SecretStr | None = None
    platform_key_file: Path | None = None
    # The platform public key(s) verifiers trust (``rai verify model``, ``rai db verify-chain``,
    # ``rai model download``): hex, several separated by commas or whitespace (a rotation), or a
    # file holding them. Never read from the database being verified. Unset: the public half
    # of the platform signing key above (the local stack's default).
    trusted_platform_key: str | None = None
    trusted_platform_key_file: Path | None = None

    # The embedded local stack (``rai dev``): where it keeps state and which ports it uses.
    state_dir: Path = Path(".rai")
    dev_postgres_port: int = 55432
    dev_redis_port: int = 56379
    dev_temporal_port: int = 7233
    dev_temporal_ui_port: int = 8233
    dev_s3_port: int = 8333
    dev_weed_master_port: int = 9333
    dev_weed_volume_port: int = 18080
    dev_weed_filer_port: int = 18888
    dev_stop_grace_seconds: float = 10.0

    @field_validator("k8s_namespace")
    @classmethod
    def _namespace_name(cls, value: str) -> str:
        if not _NAMESPACE.fullmatch(value):
            raise ValueError("a namespace name: lowercase letters, digits and '-', at most 63")
        return value

    @field_validator("trainer_image_pull_secrets")
    @classmethod
    def _secret_name_list(cls, value: str) -> str:
        for name in value.split(","):
            if name.strip() and not _OBJECT_NAME.fullmatch(name.strip()):
                raise ValueError(f"{name.strip()!r} is not a Kubernetes Secret name")
        return value

    @field_validator("trainer_s3_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None  # a chart renders an unset value as ""
        if value is not None and not _OBJECT_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a Kubernetes Secret name")
        return value

    def trainer_image_pull_secret_names(self) -> tuple[str, ...]:
        """``trainer_image_pull_secrets`` as names (an empty list gives none)."""
        return tuple(
            name.strip() for name in self.trainer_image_pull_secrets.split(",") if name.strip()
        )

    def resolved_platform_key_file(self) -> Path:
        return self.platform_key_file or self.state_dir / "keys" / "platform.ed25519"

    def resolved_app_database_url(self) -> str:
        """The DSN services use: ``app_database_url``, or ``database_url`` logged in as rai_app."""
        if self.app_database_url:
            return self.app_database_url
        return app_dsn_for(self.database_url, self.app_db_password)

    def resolved_metrics_database_url(self) -> str:
        """The DSN of the worker's metrics collector: ``metrics_database_url``, or
        ``database_url`` logged in as rai_metrics."""
        if self.metrics_database_url:
            return self.metrics_database_url
        return metrics_dsn_for(self.database_url, self.metrics_db_password)


def app_dsn_for(admin_dsn: str, password: SecretStr | None = None) -> str:
    """The same server and database as ``admin_dsn``, logged in as ``rai_app``."""
    return _dsn_as(APP_ROLE, admin_dsn, password)


def metrics_dsn_for(admin_dsn: str, password: SecretStr | None = None) -> str:
    """The same server and database as ``admin_dsn``, logged in as ``rai_metrics``."""
    return _dsn_as(METRICS_ROLE, admin_dsn, password)


def _dsn_as(role: str, admin_dsn: str, password: SecretStr | None) -> str:
    parts = urlsplit(admin_dsn)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = role
    if password is not None:
        netloc += ":" + quote(password.get_secret_value(), safe="")
    netloc += "@" + host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def database_name(dsn: str) -> str:
    """The database a DSN names (``postgres`` when it names none)."""
    return urlsplit(dsn).path.lstrip("/") or "postgres"


def redacted_dsn(dsn: str) -> str:
    """``dsn`` with its password masked, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
