"""Each values file is rendered once per session; checkov runs once per render."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.chart import DOCKERFILE, PRODUCTION_VALUES, Render, render, tool

# Checks skipped for every render, each for a reason the law tests below make up for:
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


@dataclass(frozen=True)
class CheckovReport:
    by_framework: dict[str, dict[str, Any]]

    def failed(self) -> list[str]:
        return [
            f"{check['check_id']} {check['resource']} ({check['check_name']})"
            for report in self.by_framework.values()
            for check in report["results"]["failed_checks"]
        ]


class CheckovRun:
    """checkov started in the background over some files; ``report()`` waits for it."""

    def __init__(
        self, files: list[Path], frameworks: list[str], skipped: tuple[str, ...], cwd: Path
    ) -> None:
        command = [str(tool("checkov"))]
        for file in files:
            command += ["--file", str(file)]
        command += ["--framework", *frameworks, "--output", "json", "--skip-download", "--quiet"]
        command += ["--skip-check", ",".join(skipped)]
        # There is no network here: without this checkov tries to fetch its guideline links.
        env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def report(self) -> CheckovReport:
        stdout, stderr = self.process.communicate(timeout=600)
        assert stdout.strip(), (
            f"checkov printed no report (exit {self.process.returncode}):\n{stderr}"
        )
        loaded = json.loads(stdout)
        reports = loaded if isinstance(loaded, list) else [loaded]
        return CheckovReport({report["check_type"]: report for report in reports})


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
