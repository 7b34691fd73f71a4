"""Every deployment file parses; the generated files are up to date."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.deploy.manifests import GRAFANA, INFRA, K8S, REPO_ROOT

YAML_FILES = sorted([*INFRA.rglob("*.yml"), *INFRA.rglob("*.yaml")])
JSON_FILES = sorted(INFRA.rglob("*.json"))


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_yaml_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) for d in docs), f"{path}: every document must be a mapping"


@pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_json_parses(path):
    assert isinstance(json.loads(path.read_text()), dict)


def test_kustomization_lists_every_manifest_and_only_existing_ones():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert listed == present, f"listed but missing: {listed - present}; present but not listed: {present - listed}"


@pytest.mark.parametrize(
    "script",
    [GRAFANA / "build_dashboard.py", K8S / "gen_prometheus_rule.py"],
    ids=lambda p: p.name,
)
def test_generated_files_are_up_to_date(script):
    done = subprocess.run([sys.executable, str(script), "--check"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

