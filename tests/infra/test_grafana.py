"""grafana/: the committed dashboards are what scripts.grafana_dashboards generates and are
valid Grafana dashboards; the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`). tests/e2e/test_prometheus.py evaluates them against live metrics."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts.grafana_dashboards import DASHBOARDS, OUT, render

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "grafana" / "alerts" / "rai-level-d.rules.yml"
RULE_TESTS = ROOT / "grafana" / "alerts" / "rai-level-d.tests.yml"
PROMTOOL = "/usr/bin/promtool"


def committed(uid: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((OUT / f"{uid}.json").read_text(encoding="utf-8"))
    return loaded


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_committed_dashboard_is_the_generated_one(uid: str) -> None:
    assert (OUT / f"{uid}.json").read_text(encoding="utf-8") == render(uid), (
        "run .venv/bin/python -m scripts.grafana_dashboards"
    )


def test_exactly_the_three_dashboards_are_committed() -> None:
    assert sorted(p.stem for p in OUT.glob("*.json")) == sorted(DASHBOARDS)
    titles = {committed(uid)["title"] for uid in DASHBOARDS}
    assert titles == {"Level D Overview", "Tenant Isolation", "Drift Monitor"}


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_dashboard_is_a_valid_grafana_dashboard(uid: str) -> None:
    board = committed(uid)
    assert board["uid"] == uid
    assert len(uid) <= 40  # Grafana's uid limit
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", uid)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["tenant"]["type"] == "query"
    assert variables["tenant"]["datasource"]["uid"] == "${datasource}"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    known_types = {"timeseries", "stat", "bargauge", "heatmap", "state-timeline"}
    for panel in board["panels"]:
        assert panel["type"] in known_types
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].strip()
            assert re.fullmatch(r"[A-Z]", target["refId"])


def test_alert_rules_pass_promtool_check() -> None:
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    done = subprocess.run(
        [PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == tested
