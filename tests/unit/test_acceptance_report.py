"""The acceptance battery's report and options (the scenarios themselves run in
`python -m tests.acceptance`, against the real stack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tests.acceptance.__main__ as acceptance_main
from tests.acceptance.__main__ import SCENARIOS, mismatches, parse
from tests.acceptance.report import JSON_NAME, MARKDOWN_NAME, ScenarioResult, write_report
from tests.acceptance.scenarios import load

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
    assert (args.only, args.load_seconds, args.tenants) == (["5-races"], 60, 100)
    assert parse([]).load_seconds == 600
    assert set(SCENARIOS) >= {"6-rls-penetration", "5-races", "7-load"}
    with pytest.raises(SystemExit):
        parse(["--only", "9-nonsense"])
    with pytest.raises(SystemExit):
        parse(["--load-seconds", "0"])


def test_a_failed_scenario_says_what_it_expected_and_saw() -> None:
    failed = ScenarioResult(
        name="5-races",
        passed=False,
        expected={"runs": 1, "cross-talk": 0},
        observed={"runs": 2, "cross-talk": 0, "pipelines per minute": 40.0},
        seconds=1.0,
    )
    assert mismatches(failed) == ["expected runs = 1, observed 2"]
    crashed = ScenarioResult(
        name="2-kill", passed=False, expected={}, observed={}, seconds=0.0, error="Boom: x"
    )
    assert mismatches(crashed) == ["error: Boom: x"]
    # A verdict resting on figures beyond the table: everything observed is shown.
    other = ScenarioResult(
        name="7-load",
        passed=False,
        expected={"lost": 0},
        observed={"lost": 0, "p99": 80},
        seconds=1,
    )
    assert mismatches(other) == ["observed lost = 0", "observed p99 = 80"]
    # The rows of the details that failed are shown whole; the ones that passed are not.
    stepped = ScenarioResult(
        name="2-kill",
        passed=False,
        expected={"steps survived": 2},
        observed={"steps survived": 1},
        seconds=1,
        details=[
            {"killed during": "snapshot", "passed": True, "attempts": 2},
            {"killed during": "promotion", "passed": False, "attempts": 1},
        ],
    )
    assert mismatches(stepped) == [
        "expected steps survived = 2, observed 1",
        "failed: killed during = 'promotion', passed = False, attempts = 1",
    ]


def test_the_latency_advisory_relaxes_only_the_p99() -> None:
    assert parse([]).latency_advisory is False
    assert parse(["--latency-advisory"]).latency_advisory is True
    slow = {"p99_ms": 80.6, "lost (recounted)": 0, "errors_5xx": 0, "sent": 600}
    fast = {"p99_ms": 400.0, "lost (recounted)": 0, "errors_5xx": 0, "sent": 400}
    assert not load.verdict(slow, fast, held=1000, advisory=False)
    assert load.verdict(slow, fast, held=1000, advisory=True)
    assert load.verdict({**slow, "p99_ms": 49.9}, fast, held=1000, advisory=False)
    # Lost events, 5xx and a database that holds another count fail either way.
    assert not load.verdict({**slow, "lost (recounted)": 1}, fast, held=1000, advisory=True)
    assert not load.verdict(slow, {**fast, "errors_5xx": 2}, held=1000, advisory=True)
    assert not load.verdict(slow, fast, held=999, advisory=True)


def test_the_end_of_the_output_repeats_why_each_failed_scenario_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    results = [
        ScenarioResult("1-happy-path", True, {"runs": 1}, {"runs": 1}, 1.0, "fine"),
        ScenarioResult("5-races", False, {"runs": 1}, {"runs": 2}, 1.0, "2 runs"),
    ]

    async def battery(args: object) -> list[ScenarioResult]:
        return results

    monkeypatch.setattr(acceptance_main, "run_battery", battery)
    assert acceptance_main.main(["--out", str(tmp_path)]) == 1
    tail = capsys.readouterr().err.splitlines()[-2:]
    assert tail == [
        "acceptance: FAILED 5-races (2 runs)",
        "acceptance: FAILED 5-races   expected runs = 1, observed 2",
    ]
    results.pop()
    assert acceptance_main.main(["--out", str(tmp_path)]) == 0
    assert "FAILED" not in capsys.readouterr().err
