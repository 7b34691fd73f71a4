"""Freshness SLOs: declared per view in the feature repo, age measured at scrape time (so a stuck
writer or a silent upstream shows as a growing age), batch writers' marks exported by the monitor."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from core.feature_repo import repo_contents
from core.freshness import FreshnessGauge, FreshnessMarks, freshness_slo_s, parse_duration, view_slos


def test_durations():
    assert [parse_duration(t) for t in ("90s", "5m", "2h", "1.5d")] == [90.0, 300.0, 7200.0, 129600.0]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("5 minutes")


def test_every_materialized_view_of_the_repo_declares_its_slo():
    rc = repo_contents()
    views = [*rc.feature_views, *rc.stream_feature_views]
    assert views and all(freshness_slo_s(v) is not None for v in views)
    slos = view_slos(views)
    assert slos["user_txn_aggregates"] == slos["merchant_txn_aggregates"] == 300.0
    assert slos["user_profile"] == slos["merchant_profile"] == 2 * 86400.0


def test_age_grows_while_nothing_is_written_and_drops_with_the_next_batch(tmp_path):
    now = [1_000.0]
    registry = CollectorRegistry()
    gauge = FreshnessGauge(registry, {"v": 300.0}, clock=lambda: now[0])
    gauge.observe("v", 990.0)
    gauge.observe("v", 950.0)  # an older batch does not move the newest event back

    def age() -> float:
        return registry.get_sample_value("rtml_feature_view_age_seconds", {"view": "v", "source": "stream"})

    assert age() == 10.0 and gauge.breaches() == {}
    now[0] = 1_400.0  # stuck: no batch for 400 s
    assert age() == 410.0 and gauge.breaches() == {"v": 410.0}
    assert registry.get_sample_value("rtml_feature_view_freshness_slo_seconds", {"view": "v"}) == 300.0
    gauge.observe("v", 1_399.0)
    assert age() == 1.0 and gauge.breaches() == {}


def test_materialize_marks_are_exported_by_another_process(tmp_path):
    marks = FreshnessMarks(tmp_path / "freshness.json")
    marks.mark("user_profile", 5_000.0)
    marks.mark("user_profile", 4_000.0)
    registry = CollectorRegistry()
    FreshnessGauge(registry, source="materialize", marks=FreshnessMarks(tmp_path / "freshness.json"), clock=lambda: 9_000.0)
    labels = {"view": "user_profile", "source": "materialize"}
    assert registry.get_sample_value("rtml_feature_view_age_seconds", labels) == 4_000.0
    assert registry.get_sample_value("rtml_feature_view_newest_event_timestamp_seconds", labels) == 5_000.0


def test_batch_materialization_marks_the_newest_source_event(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from core.freshness import mark_sources

    pd.DataFrame(
        {"user_id": [1, 2], "event_timestamp": pd.to_datetime([1_000, 7_000], unit="s", utc=True)}
    ).to_parquet(tmp_path / "users.parquet")
    view = SimpleNamespace(name="user_profile", batch_source=SimpleNamespace(path=str(tmp_path / "users.parquet"), timestamp_field="event_timestamp"))
    marks = FreshnessMarks(tmp_path / "freshness.json")
    assert mark_sources([view], end_ts=10_000.0, marks=marks) == {"user_profile": 7_000.0}
    assert marks.read() == {"user_profile": 7_000.0}
