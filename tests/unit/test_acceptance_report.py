"""The acceptance battery's report and options (the scenarios themselves run in
`python -m tests.acceptance`, against the real stack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.__main__ import SCENARIOS, parse
from tests.acceptance.report import JSON_NAME, MARKDOWN_NAME, ScenarioResult, write_report

pytestmark = pytest.mark.unit


def test_the_report_has_the_issues_json_shape_and_a_summary_table(tmp_path: Path) -> None:
    results = [
        ScenarioResult(
            "7-load",
            False,
            {"lost": 0},
            {"lost": 3},
            1.5,
            "p99 9 ms",
            figures={"p99_ms": 9.0, "lost": 3, "events_per_s": 999.0},
        ),
        ScenarioResult("6-rls-penetration", True, {"succeeded": 0}, {"succeeded": 0}, 2.0, "x|y"),
    ]
    write_report(results, tmp_path, options={"load_seconds": 60})
    document = json.loads((tmp_path / JSON_NAME).read_text())
    assert document["passed"] is False
    load, rls = document["scenarios"]
    assert {"name", "passed", "expected", "observed", "seconds"} <= set(load)
    assert (load["p99_ms"], load["lost"], load["events_per_s"]) == (9.0, 3, 999.0)
    assert rls["passed"] is True
    markdown = (tmp_path / MARKDOWN_NAME).read_text()
    assert "| 7-load | FAIL | p99 9 ms | 1.5 |" in markdown
    assert "| 6-rls-penetration | PASS | x\\|y | 2.0 |" in markdown  # pipes escaped


def test_options_name_only_known_scenarios() -> None:
    args = parse(["--only", "5-races", "--load-seconds", "60"])
    assert (args.only, args.load_seconds, args.tenants) == (["5-races"], 60, 20)
    assert parse([]).load_seconds == 600
    assert set(SCENARIOS) >= {"6-rls-penetration", "5-races", "7-load"}
    with pytest.raises(SystemExit):
        parse(["--only", "9-nonsense"])
    with pytest.raises(SystemExit):
        parse(["--load-seconds", "0"])
