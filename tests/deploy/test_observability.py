"""Alerts, PrometheusRule, scrape configs and the Grafana dashboard agree with each other and with the code:
every metric they query is exported by some component."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from tests.deploy.manifests import (
    ALERTS,
    DASHBOARD,
    INFRA,
    PROMETHEUS,
    PROMETHEUS_RULE,
    alert_rules,
    bentoml_metrics,
    dashboard_exprs,
    declared_metrics,
    exposed_series,
    objects_of,
    one,
    promql_metric_names,
)

needs_alerts = pytest.mark.skipif(not ALERTS.exists(), reason="infra/prometheus/alerts.yml not written yet")


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return exposed_series({**declared_metrics(), **bentoml_metrics()})


def test_exposed_series_follow_prometheus_client_naming():
    """The name mapping itself: counters gain _total once, histograms _bucket/_sum/_count."""
    series = exposed_series({"a_total": "Counter", "b": "Counter", "h": "Histogram", "g": "Gauge"})
    assert {"a_total", "b_total", "h_bucket", "h_sum", "h_count", "g"} <= series
    assert "a_total_total" not in series and "g_total" not in series and "h_total" not in series


def test_metric_names_found_in_code():
    """The source scan finds the metrics of each component (not vacuous)."""
    declared = declared_metrics()
    assert "rtml_serving_stage_seconds" in declared
    assert "rtml_drift_score" in declared
    assert bentoml_metrics()["bentoml_service_request_duration_seconds"] == "Histogram"


def test_dashboard_metrics_exist_in_code(exported):
    used = {name for expr in dashboard_exprs() for name in promql_metric_names(expr)}
    assert len(used) >= 20
    assert sorted(used - exported) == []


@needs_alerts
def test_alert_metrics_exist_in_code(exported):
    rules = alert_rules(yaml.safe_load(ALERTS.read_text())["groups"])
    used = {name for rule in rules for name in promql_metric_names(rule["expr"])}
    assert sorted(used - exported) == []


@needs_alerts
def test_prometheus_rule_has_exactly_the_alert_rules():
    alerts = yaml.safe_load(ALERTS.read_text())
    rule = one("PrometheusRule", "rtml-alerts")
    assert rule["spec"]["groups"] == alerts["groups"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"


@needs_alerts
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_prometheus_rule_groups_pass_promtool(tmp_path):
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _scrape_jobs(path) -> dict[str, dict]:
    config = yaml.safe_load(path.read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


# Exporters that run on the local stack only (none now: `rtml consistency` has a compose service and a k8s
# Deployment too); every job must exist everywhere.
LOCAL_ONLY_JOBS: set[str] = set()


def test_compose_prometheus_config_mirrors_the_local_one():
    local = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    compose = yaml.safe_load((INFRA / "docker" / "prometheus-compose.yml").read_text())
    assert compose["global"] == local["global"]
    assert compose["rule_files"] == local["rule_files"]
    local_jobs, compose_jobs = _scrape_jobs(PROMETHEUS / "prometheus.yml"), _scrape_jobs(INFRA / "docker" / "prometheus-compose.yml")
    assert set(local_jobs) - LOCAL_ONLY_JOBS == set(compose_jobs)
    for name, job in local_jobs.items():
        if name in LOCAL_ONLY_JOBS:
            continue
        other = compose_jobs[name]
        assert other.get("metrics_path") == job.get("metrics_path")
        local_ports = sorted(t.rsplit(":", 1)[1] for sc in job["static_configs"] for t in sc["targets"])
        compose_ports = sorted(t.rsplit(":", 1)[1] for sc in other["static_configs"] for t in sc["targets"])
        assert local_ports == compose_ports, name
        assert [sc.get("labels") for sc in other["static_configs"]] == [sc.get("labels") for sc in job["static_configs"]]


@pytest.mark.skipif(not (PROMETHEUS / "prometheus.yml").exists(), reason="infra/prometheus/prometheus.yml not written yet")
def test_kubernetes_scraping_uses_the_same_job_names():
    jobs = set(_scrape_jobs(PROMETHEUS / "prometheus.yml")) - LOCAL_ONLY_JOBS
    k8s_jobs = set()
    for monitor in objects_of("ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        service = next(s for s in objects_of("Service") if selector.items() <= s["metadata"].get("labels", {}).items())
        k8s_jobs.add(service["metadata"]["labels"][monitor["spec"]["jobLabel"]])
    for monitor in objects_of("PodMonitor"):
        driver = one("SparkApplication", "rtml-stream")["spec"]["driver"]
        k8s_jobs.add(driver["labels"][monitor["spec"]["jobLabel"]])
    assert k8s_jobs == jobs


def test_dashboard_structure():
    board = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in board["templating"]["list"])
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("latency", "error", "freshness", "drift", "lag", "dead-letter", "precision"):
        assert topic in titles, topic


@needs_alerts
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_compose_prometheus_config_passes_promtool(tmp_path):
    """As mounted in the container: prometheus.yml with alerts.yml beside it (and the compose secret files
    its scrape jobs read, here stand-ins in tmp_path)."""
    config = yaml.safe_load((INFRA / "docker" / "prometheus-compose.yml").read_text())
    for job in config["scrape_configs"]:
        auth = job.get("authorization") or {}
        if "credentials_file" in auth:
            assert auth["credentials_file"].startswith("/run/secrets/")
            stand_in = tmp_path / auth["credentials_file"].rsplit("/", 1)[1]
            stand_in.write_text("rtml_key_stand_in")
            auth["credentials_file"] = str(stand_in)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    done = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_dashboard_queries_are_valid_promql(tmp_path):
    """Every panel query parses (promtool, as recording rules), with Grafana's $__rate_interval set to 1m."""
    exprs = dashboard_exprs()
    rules = [{"record": f"rtml:dashboard_query_{i}", "expr": e.replace("$__rate_interval", "1m")} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
