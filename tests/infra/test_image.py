"""infra/image/Dockerfile: it is not built here (no Docker engine), so what can be read from it
is checked: every package of the project is copied in, the final stage is minimal and runs as
the chart's non-root user, and checkov finds nothing."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.infra.chart import CHART, DOCKERFILE, REPO, CheckovReport, load_values

pytestmark = pytest.mark.unit

DOCKERIGNORE = DOCKERFILE.with_name("Dockerfile.dockerignore")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction, arguments in _instructions():
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, arguments))
    return stages


def _project_sources() -> set[str]:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]
    return {f"{p}/" for p in setuptools["packages"]} | {f"{m}.py" for m in setuptools["py-modules"]}


def test_the_build_copies_every_package_of_the_project() -> None:
    build = _stages()[0]
    copied: set[str] = set()
    for instruction, arguments in build:
        if instruction == "COPY" and not arguments.startswith("--from"):
            *sources, _destination = arguments.split()
            copied.update(sources)
    assert copied == _project_sources() | {"pyproject.toml", "README.md"}


def test_the_build_context_sends_only_what_is_copied() -> None:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:] for rule in rules if rule.startswith("!")}
    assert allowed == _project_sources() | {"pyproject.toml", "README.md"}


def test_the_final_stage_is_slim_and_runs_as_the_charts_user() -> None:
    stages = _stages()
    assert len(stages) == 2
    final = stages[-1]
    base = final[0][1]
    assert re.fullmatch(r"python:3\.11-slim-\w+", base), base
    runs = " ".join(arguments for instruction, arguments in final if instruction == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in runs, f"the final stage runs {tool}"
    (copy,) = [arguments for instruction, arguments in final if instruction == "COPY"]
    assert copy == "--from=build /opt/rai /opt/rai"
    (user,) = [arguments for instruction, arguments in final if instruction == "USER"]
    values = load_values(CHART / "values.yaml")
    assert user == f"{values['runAsUser']}:{values['runAsGroup']}"
    assert [i for i, _ in final][-1] == "CMD"


def test_both_entrypoints_are_on_the_path() -> None:
    final = _stages()[-1]
    (env,) = [arguments for instruction, arguments in final if instruction == "ENV"]
    assert "PATH=/opt/rai/bin:$PATH" in env
    # `rai` is the venv's console script; `python -m trainer` needs the venv's python first on
    # the PATH, which the same entry gives.
    build = " ".join(arguments for instruction, arguments in _stages()[0] if instruction == "RUN")
    assert "python -m venv /opt/rai" in build
    assert "/opt/rai/bin/pip install --only-binary=:all: ." in build


def test_checkov_finds_nothing_in_the_dockerfile(
    checkov_reports: dict[str, CheckovReport],
) -> None:
    report = checkov_reports["production"].by_framework["dockerfile"]
    assert report["results"]["failed_checks"] == []
    assert report["summary"]["passed"] > 0
