"""Alert rules and scrape config pass promtool; every alert has a runbook and the monitor's metric names."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from core.settings import REPO_ROOT

PROM = REPO_ROOT / "infra" / "prometheus"
RUNBOOKS = REPO_ROOT / "monitoring" / "runbooks"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: `apt-get install prometheus` (infra/install_system_deps.sh installs it)"
        )
    return path


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=PROM, capture_output=True, text=True, timeout=60)


def test_rules_are_valid(promtool):
    result = _run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_is_valid_and_scrapes_the_four_jobs(promtool):
    result = _run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {
        "rtml-serving": ["127.0.0.1:3000"],
        "rtml-stream": ["127.0.0.1:9108"],
        "rtml-monitor": ["127.0.0.1:9109"],
        "rtml-consistency": ["127.0.0.1:9110"],
    }


def test_rule_unit_tests_pass(promtool):
    tests = sorted((PROM / "tests").glob("*.yml"))
    assert tests
    result = _run(promtool, "test", "rules", *[str(t) for t in tests])
    assert result.returncode == 0, result.stdout + result.stderr


def _rules() -> list[dict]:
    groups = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_every_alert_has_annotations_a_runbook_and_a_unit_test():
    tested = (PROM / "tests" / "alerts_test.yml").read_text()
    names = set()
    for rule in _rules():
        name = rule["alert"]
        names.add(name)
        ann = rule["annotations"]
        assert ann["summary"] and ann["description"], name
        assert "$value" in ann["summary"] + ann["description"] or name == "TargetDown", name
        assert ann["runbook_url"] == f"monitoring/runbooks/{name}.md"
        page = REPO_ROOT / ann["runbook_url"]
        text = page.read_text()
        for section in ("**Meaning.**", "**Confirm.**", "**Act.**"):
            assert section in text, (page, section)
        assert f"alertname: {name}" in tested, f"no promtool test for {name}"
    expected = {
        "FeatureDrift",
        "DatasetDrift",
        "PredictionDrift",
        "PerformanceDecay",
        "StaleFeatures",
        "FeatureFreshnessSLO",
        "NoEvents",
        "OnlineOfflineSkew",
        "DLQRate",
        "LateEventsDropped",
        "ServingLatencyP99",
        "ServingErrorRate",
        "ConsumerLag",
        "TargetDown",
    }
    assert names == expected
    assert {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"} == expected


def test_rules_use_metrics_the_monitor_exports():
    """Every rtml_drift/model/monitor metric in the rules exists in the monitor's registry."""
    from monitoring.metrics import MonitorMetrics

    exported = set()
    for metric in MonitorMetrics().registry.collect():
        exported |= {s.name for s in metric.samples} | {metric.name}
    used = set()
    for rule in _rules():
        used |= set(re.findall(r"\b(rtml_(?:drift|prediction|model|monitor|retrain)[a-z_]*)", rule["expr"]))
    assert used and used <= exported, used - exported
