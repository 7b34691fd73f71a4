"""Online/offline consistency, end to end against a real Redis: the stream views' rows are written
offline (the stream job's Parquet layout) and online (the pipelined Feast-format writer, as the stream
job and materialize do), served vectors are read back from Redis with the serving codec and logged as
prediction records; the consistency job recomputes them with the point-in-time join over the offline
store. Clean: every value agrees. A bug injected into the online write (one feature scaled) must be
caught for exactly that feature, exported to Prometheus, and block promotion in the gate."""

from __future__ import annotations

import pytest

from core.consistency import promotion_blockers, write_report
from monitoring.consistency import ConsistencyMetrics, check
from tests.fixtures.consistency import offline_stores, serve


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    return offline_stores(tmp_path_factory.mktemp("offline"))


def test_clean_online_write_is_fully_consistent(redis_client, stores):
    views, request_time = stores
    records = serve(redis_client, views, request_time)
    report = check(records, [j for _s, j in views], not_checked=["transaction_context:txn_amount"])
    assert report.rows == len(records) >= 250
    n_features = sum(len(j.features) for _s, j in views)
    assert len(report.features) == n_features == 16  # 14 user + 2 merchant aggregates
    assert all(c.rate == 1.0 and c.rows == len(records) for c in report.features.values())
    assert report.view_rates() == {"user_txn_aggregates": 1.0, "merchant_txn_aggregates": 1.0}
    assert report.not_checked == ["transaction_context:txn_amount"]


def test_a_bug_in_the_online_write_is_caught_and_blocks_promotion(redis_client, stores, tmp_path):
    views, request_time = stores

    def bug(spec, rows):  # the writer scales one feature: exactly what consistency must catch
        if "txn_sum_1h" in rows:
            rows["txn_sum_1h"] = rows["txn_sum_1h"] * 1.05
        return rows

    records = serve(redis_client, views, request_time, bug)
    report = check(records, [j for _s, j in views])
    skewed = report.features["user_txn_aggregates:txn_sum_1h"]
    assert skewed.rate < 0.05  # only users whose 1 h sum is 0 (x1.05 = 0) agree
    assert skewed.examples and skewed.examples[0]["online"] == pytest.approx(skewed.examples[0]["offline"] * 1.05)
    others = {ref: c.rate for ref, c in report.features.items() if ref != "user_txn_aggregates:txn_sum_1h"}
    assert set(others.values()) == {1.0}
    assert report.worst() == ("user_txn_aggregates:txn_sum_1h", skewed.rate)
    per_view = report.view_rates()
    assert per_view["user_txn_aggregates"] == pytest.approx((13 * skewed.rows + skewed.consistent) / (14 * skewed.rows))

    metrics = ConsistencyMetrics()
    metrics.export(report)
    labels = {"view": "user_txn_aggregates", "feature": "txn_sum_1h"}
    assert metrics.registry.get_sample_value("rtml_consistency_rate", labels) == pytest.approx(skewed.rate)
    assert metrics.registry.get_sample_value("rtml_consistency_rows", labels) == len(records)

    path = write_report(report.to_dict(), tmp_path / "consistency.json")
    refs = ["user_txn_aggregates:txn_sum_1h", "user_txn_aggregates:txn_count_1h", "transaction_context:txn_amount"]
    blockers = promotion_blockers(refs, min_rate=0.99, path=path)
    assert len(blockers) == 1 and blockers[0].startswith("user_txn_aggregates:txn_sum_1h")
    assert promotion_blockers(refs[1:], min_rate=0.99, path=path) == []  # a model without that feature passes
    assert promotion_blockers(refs, min_rate=0.99, path=tmp_path / "none.json") == []  # no report: no verdict


def test_the_gate_refuses_promotion_while_the_models_features_are_skewed(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from core.consistency import report_path
    from training.gate import decide

    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    candidate = SimpleNamespace(metrics={"pr_auc": 0.6}, passed=True, failed_checks=lambda: [])
    refs = ["user_txn_aggregates:txn_sum_1h", "user_profile:credit_limit"]
    assert decide(candidate, None, None, 0.005, feature_refs=refs).promote  # no report yet: first model
    report = {"features": {"user_txn_aggregates:txn_sum_1h": {"rows": 500, "rate": 0.9},
                           "user_profile:credit_limit": {"rows": 500, "rate": 1.0}}}
    assert write_report(report) == report_path() == tmp_path / "monitor" / "consistency.json"
    refused = decide(candidate, None, None, 0.005, feature_refs=refs)
    assert not refused.promote
    assert refused.reason == (
        "online/offline consistency below threshold: user_txn_aggregates:txn_sum_1h 90.00% consistent over 500 rows"
    )
    monkeypatch.setenv("RTML_CONSISTENCY_MIN_RATE", "0.85")  # the threshold is a setting
    assert decide(candidate, None, None, 0.005, feature_refs=refs).promote


def test_entity_time_is_the_requests_event_time_before_the_event():
    """A record with the request's event time (a replayed request) is recomputed as of just before that event,
    not as of when it was scored; a record without one as of its prediction time."""
    import pandas as pd

    from monitoring.consistency import entity_rows, served_frame

    records = [
        {"user_id": 1, "features": {"f": 2.0}, "missing_features": [],
         "event_timestamp": "2025-11-28T03:15:00.000000Z", "prediction_timestamp": "2026-11-30T10:00:00.000000Z"},
        {"user_id": 2, "features": {"f": None}, "missing_features": ["f"],
         "prediction_timestamp": "2026-11-30T10:00:00.000000Z"},
    ]
    served = served_frame(records, ["user_id"], ["f"])
    rows = entity_rows(served, ["user_id"])
    assert list(rows["event_timestamp"]) == [
        pd.Timestamp("2025-11-28T03:14:59.999999Z"), pd.Timestamp("2026-11-30T10:00:00Z"),
    ]
    assert served["f"].iloc[0] == 2.0 and pd.isna(served["f"].iloc[1])


def test_the_command_checks_sampled_records_and_writes_the_report(redis_client, stores, tmp_path, monkeypatch):
    """`rtml consistency`'s check: the production model's refs, records sampled from the topic, the report."""
    import argparse
    import json
    from types import SimpleNamespace

    import monitoring.consistency as mc
    from core import model_store
    from monitoring.commands import consistency as command

    views, request_time = stores
    records = serve(redis_client, views, request_time)
    refs = ["user_txn_aggregates:txn_count_1h", "merchant_txn_aggregates:merchant_txn_count_1h"]
    model = SimpleNamespace(tag="fraud_model:t1", info=SimpleNamespace(metadata={"feature_refs": refs}))
    monkeypatch.setattr(model_store, "production_model", lambda: model)
    monkeypatch.setattr(mc, "model_specs", lambda r: ([j for _s, j in views], ["transaction_context:txn_amount"]))
    monkeypatch.setattr(mc, "sample_predictions", lambda consumer, topic, settle_s, rows, every: records[:rows])
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    args = argparse.Namespace(settle_minutes=0.0, rows=100, every=1)
    metrics = ConsistencyMetrics()
    data = command.check_once(args, None, "predictions", metrics)
    assert data["model"] == "fraud_model:t1" and data["rows"] == 100
    written = json.loads((tmp_path / "monitor" / "consistency.json").read_text())
    assert written["rows"] == 100 and set(written["views"].values()) == {1.0}
    assert metrics.registry.get_sample_value("rtml_consistency_view_rate", {"view": "merchant_txn_aggregates"}) == 1.0
