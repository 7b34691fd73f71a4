"""Data validation gates training: Great Expectations suites built from feature_repo/validation.py
pass on clean data, name every broken rule (raw history, frame, leakage, drift vs the previous
training set), and a failed expectation stops `rtml train` before training with an HTML report
linked from the MLflow run."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from core import model_store
from core.settings import settings
from rtml.cli import main as cli
from tests.training.conftest import ROUNDS
from tests.training.history import write_parquet


def _ids(checks, failed_only=True):
    return {(c.suite, c.column, c.expectation) for c in checks if not (failed_only and c.success)}


def test_clean_history_and_frame_pass(world, fresh_registry, tmp_path):
    from training.validation import validate_training_set

    ts = world["training_set"]
    report = validate_training_set(ts.frame, ts.features, ts.manifest["feature_refs"], None, tmp_path / "v.html")
    assert report.success, [c.describe() for c in report.failed]
    suites = {c.suite for c in report.checks}
    assert suites == {"transactions_history", "labels", "users", "merchants", "training_frame"}
    kinds = {c.expectation for c in report.checks}
    for kind in (
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_be_unique",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_be_between",
        "expect_column_values_to_not_be_null",
        "expect_column_pair_values_a_to_be_greater_than_b",
    ):
        assert kind in kinds
    # the schema comes from the definitions: every DDL field of the KafkaSource is checked
    from core.contracts import stream_fields

    typed = {c.column for c in report.checks if c.suite == "transactions_history" and "to_be_of_type" in c.expectation
             or c.suite == "transactions_history" and c.expectation.endswith("type_list")}
    assert typed == set(stream_fields())
    assert report.rows["training_frame"] == len(ts.frame) == report.rows["labels"]
    assert "PASSED" in (tmp_path / "v.html").read_text()


@pytest.fixture
def broken_data(world, fresh_registry, tmp_path, monkeypatch):
    """A copy of the history with one violation per rule family."""
    data = tmp_path / "data"
    shutil.copytree(world["root"] / "data", data)
    monkeypatch.setenv("RTML_DATA_DIR", str(data))
    h = world["history"]
    txns = h.transactions.copy()
    txns.loc[3, "amount"] = -5.0  # range
    txns.loc[4, "country"] = "XX"  # allowed values
    txns.loc[5, "transaction_id"] = txns.loc[6, "transaction_id"]  # uniqueness
    write_parquet(txns, data / "transactions" / "part-00000.parquet")
    labels = h.labels.copy()
    labels.loc[7, "label_timestamp"] = labels.loc[7, "event_timestamp"] - pd.Timedelta(hours=1)  # label before txn
    write_parquet(labels, data / "labels.parquet")
    return data


def test_datasets_and_rules_come_from_the_definitions(monkeypatch):
    """Which raw datasets are validated, their schemas and the implied rules come from the feature repo: the
    fraud repo's sources by name, and a repo without validation.py (examples/ads) still gets schema, event-id
    and label checks."""
    from core.contracts import stream_fields
    from core.settings import REPO_ROOT
    from training.validation import dataset_rules, raw_datasets, rules

    got = {d.name: d for d in raw_datasets()}
    assert list(got)[:2] == ["transactions_history", "labels"] and set(got) == {
        "transactions_history", "labels", "users", "merchants"}
    assert set(got["transactions_history"].schema) == set(stream_fields())
    assert got["transactions_history"].event_key == got["labels"].event_key == "transaction_id"
    assert got["labels"].schema["label_timestamp"] == "timestamp" and got["labels"].label == "is_fraud"
    assert got["users"].event_key is None and got["users"].schema["credit_limit"] is float
    events = dataset_rules(got["transactions_history"], rules())
    assert events["ranges"]["amount"] == (0.0, 50_000.0) and events["unique"] == ["transaction_id"]

    monkeypatch.setenv("RTML_FEATURE_REPO", str(REPO_ROOT / "examples" / "ads" / "feature_repo"))
    monkeypatch.delenv("RTML_FEATURE_SERVICE", raising=False)
    assert rules() is None
    ads = raw_datasets()
    labels = next(d for d in ads if d.label)
    assert labels.label == "clicked" and labels.event_key == "impression_id"
    assert dataset_rules(labels) == {
        "not_null": ["impression_id", "clicked", "label_timestamp"],
        "unique": ["impression_id"],
        "allowed": {"clicked": [0, 1]},
    }
    assert all("transaction" not in d.name for d in ads) and ads[0].event_key == "impression_id"
    # the frame's limits default to the reference values when the repo has no rules
    from training.validation import frame_expectations

    null_check, label_rate, *_pairs = frame_expectations(["impressions_1h"], None, "clicked", [])
    assert null_check.mostly == pytest.approx(0.4) and (label_rate.min_value, label_rate.max_value) == (0.0005, 0.5)


def test_each_broken_rule_is_named(broken_data, world):
    from training.validation import validate_history

    checks, _rows = validate_history(broken_data)
    failed = _ids(checks)
    assert failed == {
        ("transactions_history", "amount", "expect_column_values_to_be_between"),
        ("transactions_history", "country", "expect_column_values_to_be_in_set"),
        ("transactions_history", "transaction_id", "expect_column_values_to_be_unique"),
        ("labels", "label_delay_s", "expect_column_values_to_be_between"),
    }
    bad = next(c for c in checks if c.column == "country" and not c.success)
    assert "1 unexpected" in bad.observed and "XX" in bad.observed


def test_a_failed_expectation_stops_training_before_it_starts(broken_data, world, capsys):
    from mlflow import MlflowClient

    code = cli(["train", "--trials", "1", "--join", "fast", "--trigger", "monitor"])
    err = capsys.readouterr().err
    assert code == 1
    assert "data validation failed" in err and "4 of" in err
    for name in ("amount: expect_column_values_to_be_between", "country: expect_column_values_to_be_in_set",
                 "transaction_id: expect_column_values_to_be_unique", "label_delay_s: expect_column_values_to_be_between"):
        assert name in err
    report = err.split("report: ")[1].split()[0]
    assert "FAILED (4 of" in open(report).read()
    assert list(model_store.bentoml_home().rglob("model.yaml")) == []  # nothing trained
    client = MlflowClient(settings().mlflow_tracking_uri)
    run = client.search_runs([client.get_experiment_by_name(settings().mlflow.experiment).experiment_id])[0]
    assert run.info.status == "FAILED" and run.data.tags["rtml.gate"] == "validation_failed"
    assert run.data.tags["rtml.trigger"] == "monitor" and run.data.metrics["validation.failed"] == 4
    assert [a.path for a in client.list_artifacts(run.info.run_id, "validation")] == [
        "validation/summary.json", "validation/validation.html"
    ]


def test_leakage_and_drift_against_the_previous_training_set(world, fresh_registry):
    from training.validation import feature_stats, validate_frame

    ts = world["training_set"]
    frame, features, refs = ts.frame, ts.features, ts.manifest["feature_refs"]
    reference = feature_stats(frame, features)
    assert {c.column for c in validate_frame(frame, features, refs, reference) if not c.success} == set()
    # leakage: entity time = transaction time, so each transaction's own feature row is joined
    from training.datasets import historical_features

    leaky = frame[["transaction_id", "user_id", "merchant_id", "event_time", "label_timestamp", "is_fraud", "amount", "country"]].copy()
    leaky["event_timestamp"] = leaky["event_time"]
    leaky = historical_features(leaky, refs, join="fast")
    failed = _ids(validate_frame(leaky, features, refs, reference))
    assert ("training_frame", "event_time", "expect_column_pair_values_a_to_be_greater_than_b") in failed
    # drift: a feature scaled x10 and another mostly missing, vs the reference
    drifted = frame.copy()
    drifted["txn_sum_24h"] = drifted["txn_sum_24h"] * 10
    drifted.loc[drifted.index % 2 == 0, "credit_limit"] = np.nan
    failed = _ids(validate_frame(drifted, features, refs, reference))
    assert failed == {
        ("training_frame", "txn_sum_24h", "expect_column_kl_divergence_to_be_less_than"),
        ("training_frame", "credit_limit", "expect_column_values_to_not_be_null"),
    }


def test_the_pipeline_validates_against_the_production_models_training_set(world, fresh_registry):
    from training.pipeline import reference_stats, train

    assert reference_stats() is None
    first = train(training_set=world["training_set"].path, trials=1, seed=1, progress=False, max_rounds=ROUNDS)
    assert first.promoted
    assert reference_stats() == world["training_set"].manifest["feature_stats"]
    from mlflow import MlflowClient

    run = MlflowClient(settings().mlflow_tracking_uri).get_run(first.run_id)
    assert run.data.tags["rtml.validation"] == "passed" and run.data.metrics["validation.failed"] == 0
