"""Each values file is rendered once per session; checkov runs once per render."""

from __future__ import annotations

import pytest

from tests.infra.chart import (
    DOCKERFILE,
    PRODUCTION_VALUES,
    CheckovReport,
    CheckovRun,
    Render,
    render,
)

# Checks skipped for every render, each for a reason; the law tests in test_helm_chart.py
# assert what the skipped check would have looked at.
CHECKOV_SKIPPED_EVERYWHERE = (
    # "Prefer secrets as files over environment variables": the settings object reads only
    # RAI_* variables (pydantic-settings), so the database password, the S3 keys and the
    # Redis password reach the processes as env vars, filled by the kubelet from secretKeyRef.
    # None is in the manifest (test_no_secret_value_is_rendered); the platform signing key,
    # which the settings can read from a file, is a read-only mounted file.
    "CKV_K8S_35",
    # "Service account tokens only where necessary": the training worker needs its token to
    # run training Jobs through the Kubernetes API; every other pod has automount off, and the
    # token's only rights are the namespaced Role (test_only_the_training_worker_holds_a_token,
    # test_the_job_runner_role_is_exactly_what_the_runner_does).
    "CKV_K8S_38",
)
# ... and for the default values only: an unpublished image has no digest to pin, so the
# default render names images by tag (with IfNotPresent). The production-like render pins
# every image by digest and passes both checks.
CHECKOV_SKIPPED_FOR_DEFAULTS = (
    "CKV_K8S_15",  # "Image pull policy should be Always" (not needed with a digest)
    "CKV_K8S_43",  # "Image should use digest"
)


@pytest.fixture(scope="session")
def default_render(tmp_path_factory: pytest.TempPathFactory) -> Render:
    return render(tmp_path_factory.mktemp("render") / "default.yaml")


@pytest.fixture(scope="session")
def production_render(tmp_path_factory: pytest.TempPathFactory) -> Render:
    return render(tmp_path_factory.mktemp("render") / "production.yaml", [PRODUCTION_VALUES])


@pytest.fixture(scope="session")
def checkov_reports(
    default_render: Render, production_render: Render, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CheckovReport]:
    """checkov over both renders (and the Dockerfile), the two runs side by side."""
    cwd = tmp_path_factory.mktemp("checkov")
    production = CheckovRun(
        [production_render.path, DOCKERFILE],
        ["kubernetes", "dockerfile"],
        CHECKOV_SKIPPED_EVERYWHERE,
        cwd,
    )
    default = CheckovRun(
        [default_render.path],
        ["kubernetes"],
        CHECKOV_SKIPPED_EVERYWHERE + CHECKOV_SKIPPED_FOR_DEFAULTS,
        cwd,
    )
    return {"production": production.report(), "default": default.report()}
