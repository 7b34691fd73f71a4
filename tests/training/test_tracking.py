"""Experiment tracking: every training is an MLflow run in the local store, with nested trial runs,
lineage, artifacts, the model tag and the gate; `rtml experiments` reads them back; a store that
cannot be reached fails the run before training, with a clear message."""

from __future__ import annotations

import json
import socket
import time

import pandas as pd
import pytest

from core import model_store
from core.errors import UserFacingError
from core.settings import settings
from rtml.cli import main as cli
from tests.training.conftest import ROUNDS


def _client():
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings().mlflow_tracking_uri)


def _children(client, run):
    runs = client.search_runs([run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    return sorted(runs, key=lambda r: int(r.data.tags["rtml.trial"]))


def test_a_training_is_an_mlflow_run_with_trials_lineage_artifacts_and_gate(world, fresh_registry, tmp_path):
    from core.feast_store import get_store
    from training.model import candidate_configs
    from training.pipeline import train
    from training.registry import code_version

    out = train(training_set=world["training_set"].path, trials=3, seed=5, progress=False, max_rounds=ROUNDS)
    assert settings().mlflow_tracking_uri == f"sqlite:///{fresh_registry / 'mlflow' / 'mlflow.db'}"
    client = _client()
    run = client.get_run(out.run_id)
    manifest = world["training_set"].manifest
    tags, metrics, params = run.data.tags, run.data.metrics, run.data.params
    assert run.info.status == "FINISHED"
    assert tags["rtml.model_tag"] == out.tag and tags["rtml.gate"] == "promoted"
    assert tags["rtml.gate_reason"] == out.decision.reason
    assert tags["rtml.training_set_hash"] == manifest["content_hash"]
    assert tags["rtml.code_commit"] == code_version()
    assert tags["rtml.feature_registry_version"] == get_store().registry.proto().version_id != ""
    assert metrics["holdout.pr_auc"] == pytest.approx(out.evaluation.metrics["pr_auc"], abs=1e-12)
    assert metrics["gate.promoted"] == 1.0 and metrics["training_set.rows"] == manifest["rows"]
    assert params["arg.seed"] == "5" and params["arg.trials"] == "3"
    assert json.loads(params["feature_refs"]) == manifest["feature_refs"]
    # one nested run per trial, in the seeded order, with its params and validation score
    trials = _children(client, run)
    configs = candidate_configs(3, 5)
    assert len(trials) == 3
    for trial, config in zip(trials, configs, strict=True):
        assert {k: trial.data.params[k] for k in config} == {k: str(v) for k, v in config.items()}
        assert 0 < trial.data.metrics["valid_pr_auc"] <= 1
    assert max(t.data.metrics["valid_pr_auc"] for t in trials) == pytest.approx(metrics["valid_pr_auc"], abs=1e-12)
    # artifacts: manifest, arguments, report with plots, holdout predictions, gate decision
    names = {a.path for a in client.list_artifacts(out.run_id, "report")}
    assert {"report/report.md", "report/roc_pr.png", "report/calibration.png", "report/evaluation.json"} <= names
    local = tmp_path / "dl"
    got = json.loads(open(client.download_artifacts(out.run_id, "training_set/manifest.json", str(local))).read())
    assert got == json.loads(json.dumps(manifest, default=str))
    preds = pd.read_parquet(client.download_artifacts(out.run_id, "holdout/predictions.parquet", str(local)))
    pd.testing.assert_frame_equal(preds, out.holdout_predictions)
    decision = json.loads(open(client.download_artifacts(out.run_id, "gate/decision.json", str(local))).read())
    assert decision["promote"] is True and decision["reason"] == out.decision.reason
    # artifacts live in the local store's folder, and the model points back at its run
    assert (fresh_registry / "mlflow" / "artifacts").is_dir()
    assert any((fresh_registry / "mlflow" / "artifacts").rglob("report.md"))
    meta = model_store.get_model(out.tag).info.metadata
    assert meta["mlflow_run_id"] == out.run_id
    assert out.tracking_overhead_s > 0


def test_experiments_cli_lists_and_compares_runs(world, fresh_registry, capsys):
    assert cli(["train", "--training-set", str(world["training_set"].path), "--trials", "1", "--seed", "3"]) == 0
    first = capsys.readouterr().out.split("mlflow run: ")[1].split()[0]
    assert cli(["train", "--training-set", str(world["training_set"].path), "--trials", "2", "--seed", "4"]) == 0
    second = capsys.readouterr().out.split("mlflow run: ")[1].split()[0]
    assert cli(["experiments", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "start", "status"]
    assert [ln.split()[0] for ln in lines[1:]] == [second, first]  # newest first, trials not listed
    assert all("FINISHED" in ln and "fraud_model:" in ln for ln in lines[1:])
    assert cli(["experiments", "compare", first[:10], second]) == 0
    table = capsys.readouterr().out
    rows = {tuple(ln.split()[:2]): ln.split()[2:] for ln in table.splitlines()}
    assert rows[("params", "arg.seed")] == ["3", "4"] and rows[("params", "arg.trials")] == ["1", "2"]
    a, b = _client().get_run(first), _client().get_run(second)
    assert rows[("tags", "rtml.model_tag")] == [a.data.tags["rtml.model_tag"], b.data.tags["rtml.model_tag"]]
    assert ("tags", "rtml.training_set_hash") not in rows  # equal rows are left out
    assert cli(["experiments", "compare", first, "nosuchrun"]) == 1
    assert "not found" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_fails_before_training(world, fresh_registry, monkeypatch):
    from training.pipeline import train

    monkeypatch.setenv("RTML_MLFLOW_URI", f"http://127.0.0.1:{_free_port()}")
    t0 = time.monotonic()
    with pytest.raises(UserFacingError, match="not reachable"):
        train(training_set=world["training_set"].path, trials=1, progress=False, max_rounds=ROUNDS)
    assert time.monotonic() - t0 < 60
    assert list(model_store.bentoml_home().rglob("model.yaml")) == []  # nothing trained or registered


def test_pyspark_ml_is_imported_whole_before_the_tracking_worker_starts():
    """Great Expectations imports pyspark.ml on the pipeline thread while MLflow's Param checks it on the
    worker: the worker failed with "cannot access submodule 'ml'" unless the import was finished first."""
    import subprocess
    import sys

    code = ("import sys; from training.tracking import _settle_pyspark_ml; assert 'pyspark.ml' not in sys.modules; "
            "_settle_pyspark_ml(); import pyspark; print(hasattr(pyspark, 'ml') and 'pyspark.ml.param' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "True"
