"""The battery's report: one :class:`ScenarioResult` per scenario, written as Markdown and JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

JSON_NAME = "acceptance-report.json"
MARKDOWN_NAME = "acceptance-report.md"


@dataclass
class ScenarioResult:
    """What a scenario did, what it expected, what was counted afterwards, and the verdict."""

    name: str
    passed: bool
    expected: dict[str, Any]
    observed: dict[str, Any]
    seconds: float
    key_figure: str = ""
    details: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    # Top-level figures of the scenario's JSON entry (the load scenario's p99_ms, lost, ...).
    figures: dict[str, Any] = field(default_factory=dict)


def write_report(results: list[ScenarioResult], out: Path, *, options: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = {
        "generated_at": generated,
        "options": options,
        "passed": all(r.passed for r in results),
        "scenarios": [{**asdict(r), **r.figures} for r in results],
    }
    (out / JSON_NAME).write_text(json.dumps(document, indent=2, default=str) + "\n")
    (out / MARKDOWN_NAME).write_text(markdown(results, generated, options))


def markdown(results: list[ScenarioResult], generated: str, options: dict[str, Any]) -> str:
    lines = [
        "# Acceptance report",
        "",
        f"Generated {generated} by `python -m tests.acceptance` ({_options(options)}).",
        "",
        "| scenario | result | key figure | seconds |",
        "|---|---|---|---|",
    ]
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        lines.append(f"| {r.name} | {verdict} | {_cell(r.key_figure)} | {r.seconds:.1f} |")
    for r in results:
        lines += ["", f"## {r.name}: {'PASS' if r.passed else 'FAIL'}", ""]
        if r.error:
            lines += [f"Error: `{r.error}`", ""]
        lines += ["| | expected | observed |", "|---|---|---|"]
        for key in sorted(set(r.expected) | set(r.observed)):
            lines.append(
                f"| {key} | {_cell(r.expected.get(key, ''))} | {_cell(r.observed.get(key, ''))} |"
            )
        if r.details:
            columns = list(r.details[0])
            lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            for row in r.details:
                lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _options(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items())


def _cell(value: object) -> str:
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")
