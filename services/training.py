"""What a training job is given: its environment, apart from its secrets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from domain.training import CALLBACK_KEY_ENV, EXTRA_SECONDS_ENV
from settings import Settings


@dataclass(frozen=True)
class JobEnvironment:
    """The environment of a training job (the variables the trainer reads, see
    :mod:`domain.training`): ``env`` the plain values, ``secret_env`` the credentials and the
    callback key, which a job runner keeps out of anything it records (a Kubernetes runner puts
    them in a Secret)."""

    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)

    def with_callback_key(self, seed_hex: str) -> JobEnvironment:
        """This environment plus the run's callback signing key (a hex Ed25519 seed)."""
        return JobEnvironment(self.env, {**self.secret_env, CALLBACK_KEY_ENV: seed_hex})


def job_environment(settings: Settings, *, extra_seconds: float = 0.0) -> JobEnvironment:
    """The environment a launcher gives every job: the S3 endpoint and credentials, the
    simulated GPU time."""
    env = {
        "RAI_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "RAI_S3_REGION": settings.s3_region,
        EXTRA_SECONDS_ENV: repr(float(extra_seconds)),
    }
    secrets: dict[str, str] = {}
    if settings.s3_access_key is not None:
        secrets["RAI_S3_ACCESS_KEY"] = settings.s3_access_key
    if settings.s3_secret_key is not None:
        secrets["RAI_S3_SECRET_KEY"] = settings.s3_secret_key.get_secret_value()
    return JobEnvironment(env, secrets)
