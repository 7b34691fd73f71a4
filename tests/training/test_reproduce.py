"""`rtml train --reproduce RUN_ID`: the training set is rebuilt from the run's manifest, the model
retrained with the run's arguments, and its holdout predictions are identical; changed data is a
clear error instead of a silent near-copy."""

from __future__ import annotations

import shutil

import pandas as pd
from mlflow import MlflowClient

from core import model_store
from core.settings import settings
from rtml.cli import main as cli
from tests.training.history import write_parquet


def _run_id(out: str) -> str:
    return out.split("mlflow run: ")[1].split()[0]


def test_reproduce_gets_identical_holdout_predictions(world, fresh_registry, tmp_path, capsys, monkeypatch):
    args = ["train", "--join", "fast", "--trials", "2", "--seed", "9", "--cutoff", "2026-03-20T00:00:00Z"]
    assert cli(args) == 0
    original = _run_id(capsys.readouterr().out)
    assert cli(["train", "--reproduce", original[:12]]) == 0
    out = capsys.readouterr().out
    assert f"REPRODUCED run {original}: holdout predictions identical" in out
    again = _run_id(out)
    client = MlflowClient(settings().mlflow_tracking_uri)
    a, b = client.get_run(original), client.get_run(again)
    assert b.data.tags["rtml.reproduce_of"] == original and b.data.tags["rtml.trigger"] == "reproduce"
    assert b.data.tags["rtml.training_set_hash"] == a.data.tags["rtml.training_set_hash"]
    assert b.data.tags["rtml.model_tag"] != a.data.tags["rtml.model_tag"]  # a new model version ...
    assert b.data.tags["rtml.gate"] != "promoted"  # ... that a reproduction never promotes
    assert model_store.production_tag() == a.data.tags["rtml.model_tag"]
    pa_ = pd.read_parquet(client.download_artifacts(original, "holdout/predictions.parquet", str(tmp_path / "a")))
    pb_ = pd.read_parquet(client.download_artifacts(again, "holdout/predictions.parquet", str(tmp_path / "b")))
    pd.testing.assert_frame_equal(pa_, pb_, check_exact=True)
    assert len(pa_) > 100
    # the same arguments on changed history cannot reproduce: a clear error naming the hashes
    data = tmp_path / "data"
    shutil.copytree(world["root"] / "data", data)
    labels = world["history"].labels.copy()
    labels.loc[labels.index[:50], "is_fraud"] = 1 - labels.loc[labels.index[:50], "is_fraud"]
    write_parquet(labels, data / "labels.parquet")
    monkeypatch.setenv("RTML_DATA_DIR", str(data))
    assert cli(["train", "--reproduce", original]) == 1
    err = capsys.readouterr().err
    assert f"cannot reproduce run {original}: the rebuilt training set differs" in err
    assert cli(["train", "--reproduce", "0000nosuchrun"]) == 1
    assert "not found" in capsys.readouterr().err
