"""Rendering the Helm chart and reading what it renders, for tests/infra.

The tools come from ``scripts/bootstrap.sh``: helm and checkov in ``.venv-tools/bin`` (checkov's
pinned libraries clash with the project's), kubernetes-validate beside this interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "infra" / "helm" / "rai-level-d"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
DOCKERFILE = REPO / "infra" / "image" / "Dockerfile"
TOOLS_BIN = REPO / ".venv-tools" / "bin"

RELEASE = "rai-level-d"
RELEASE_NAMESPACE = "rai-system"
TRAINING_NAMESPACE = "rai-training-jobs"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBERNETES_VERSIONS = ("1.30.0", "1.35.0")

Manifest = dict[str, Any]


def tool(name: str) -> Path:
    """A checker installed by bootstrap; a clear failure when it is missing."""
    for directory in (TOOLS_BIN, Path(sys.executable).parent):
        path = directory / name
        if path.is_file():
            return path
    raise FileNotFoundError(f"{name} not found in {TOOLS_BIN}: run `make bootstrap`")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool("helm")), *args], capture_output=True, text=True, timeout=120, check=False
    )


def template_args(values_files: Sequence[Path] = (), settings: Sequence[str] = ()) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE]
    for values in values_files:
        args += ["--values", str(values)]
    for setting in settings:
        args += ["--set", setting]
    return args


@dataclass(frozen=True)
class Render:
    """One ``helm template`` output: its text (also written to ``path``) and its objects."""

    path: Path
    objects: list[Manifest]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> Manifest:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def workloads(self) -> list[Manifest]:
        """Every object that carries a pod template."""
        return [o for o in self.objects if "template" in o.get("spec", {})]


def render(out: Path, values_files: Sequence[Path] = (), settings: Sequence[str] = ()) -> Render:
    result = helm(*template_args(values_files, settings))
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    out.write_text(result.stdout, encoding="utf-8")
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return Render(out, objects)


def containers(pod_spec: Manifest) -> Iterator[Manifest]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def env_of(container: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def env_value(container: Manifest, name: str) -> str:
    entry = env_of(container)[name]
    assert "value" in entry, f"{name} is not a literal value: {entry}"
    value = entry["value"]
    assert isinstance(value, str), f"{name}={value!r} is not a string"
    return value


def secret_ref(container: Manifest, name: str) -> tuple[str, str]:
    """(Secret name, key) of an env var that must come from a Secret."""
    entry = env_of(container)[name]
    ref = entry.get("valueFrom", {}).get("secretKeyRef")
    assert ref is not None, f"{name} does not come from a Secret: {entry}"
    return ref["name"], ref["key"]


def load_values(path: Path) -> Manifest:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


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
