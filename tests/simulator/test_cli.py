"""`rtml simulate` end to end (history only; the live path is covered by test_live_kafka)."""

from __future__ import annotations

import json

import pandas as pd

from rtml.cli import main


def test_history_via_cli_writes_layout_and_json_summary(tmp_path, capsys):
    rc = main(
        ["simulate", "--days", "2", "--users", "80", "--merchants", "20", "--seed", "3", "--start", "2026-11-01",
         "--data-dir", str(tmp_path), "--json", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)["history"]
    txns = pd.read_parquet(tmp_path / "transactions")
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    assert summary["n_transactions"] == len(txns) == len(labels) > 0
    assert summary["n_fraud"] == labels["is_fraud"].sum()
    assert summary["start"] == "2026-11-01T00:00:00+00:00" and summary["end"] == "2026-11-03T00:00:00+00:00"
    assert txns["event_timestamp"].min() >= pd.Timestamp("2026-11-01", tz="UTC")
    assert txns["event_timestamp"].max() < pd.Timestamp("2026-11-03", tz="UTC")


def test_history_scenario_relative_start_is_after_history_start(tmp_path, capsys):
    rc = main(
        ["simulate", "--days", "2", "--users", "80", "--merchants", "20", "--start", "2026-11-01",
         "--scenario", "amount_shift", "--scenario-at", "+1440", "--data-dir", str(tmp_path), "--json", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)["history"]
    assert summary["scenarios"] == [{"name": "amount_shift", "starts_at": "2026-11-02T00:00:00+00:00", "strength": 1.0}]


def test_clear_errors_for_bad_input(tmp_path, capsys):
    assert main(["simulate", "--no-history"]) == 1
    assert "nothing to do" in capsys.readouterr().err
    assert main(["simulate", "--start", "yesterday", "--data-dir", str(tmp_path)]) == 1
    assert "--start" in capsys.readouterr().err
    assert main(["simulate", "--scenario-at", "+5", "--data-dir", str(tmp_path)]) == 1
    assert "--scenario" in capsys.readouterr().err
    assert not (tmp_path / "transactions").exists()
