"""Definitions evolve without a reset: `feast apply` adds aggregations (one over a column the job never
read, `min`, ...) and a new stream view while events flow; the restarted job (same checkpoint, nothing
deleted) hands over at the committed offsets, seeds what changed from the earlier events, keeps the
untouched state, and every online value equals the oracle over all events."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.streaming.helpers import assert_rows_equal, fresh_id_base, make_events, oracle, publish, view_aggregations
from tests.streaming.test_stream_online import online_values

pytestmark = pytest.mark.integration


def _changed_definitions(store):
    from feast import StreamFeatureView
    from feast.aggregation import Aggregation
    from feast.field import Field
    from feast.types import Float64, Int64

    user = store.get_stream_feature_view("user_txn_aggregates")
    merchant = store.get_stream_feature_view("merchant_txn_aggregates")
    tile = user.aggregations[0].slide_interval
    new_aggs = [
        Aggregation(column="country", function="count_distinct", time_window=timedelta(hours=1), slide_interval=tile,
                    name="distinct_countries_1h"),
        Aggregation(column="amount", function="min", time_window=timedelta(hours=24), slide_interval=tile,
                    name="txn_min_24h"),
    ]
    changed = StreamFeatureView(
        name=user.name, entities=[store.get_entity("user")], ttl=user.ttl, source=user.stream_source,
        timestamp_field="event_timestamp", aggregations=list(user.aggregations) + new_aggs,
        schema=[Field(name=f.name, dtype=f.dtype) for f in user.features]
        + [Field(name="distinct_countries_1h", dtype=Int64), Field(name="txn_min_24h", dtype=Float64)],
        online=True, offline=True, owner=user.owner, tags=user.tags, description=user.description,
    )
    tiles = merchant.aggregations[0].slide_interval
    added = StreamFeatureView(
        name="merchant_amount_extremes", entities=[store.get_entity("merchant")], ttl=timedelta(days=2),
        source=merchant.stream_source, timestamp_field="event_timestamp",
        aggregations=[Aggregation(column="amount", function="min", time_window=timedelta(minutes=30),
                                  slide_interval=tiles, name="merchant_amount_min_30m"),
                      Aggregation(column="amount", function="std", time_window=timedelta(minutes=30),
                                  slide_interval=tiles, name="merchant_amount_std_30m")],
        schema=[Field(name="merchant_amount_min_30m", dtype=Float64), Field(name="merchant_amount_std_30m", dtype=Float64)],
        online=True, offline=True,
    )
    return user, changed, added


def _with_aggregation(view, entity, agg, dtype):
    """``view`` with one more aggregation (and its schema field)."""
    from feast import StreamFeatureView
    from feast.field import Field

    return StreamFeatureView(
        name=view.name, entities=[entity], ttl=view.ttl, source=view.stream_source, timestamp_field="event_timestamp",
        aggregations=[*view.aggregations, agg], schema=[*(Field(name=f.name, dtype=f.dtype) for f in view.features),
                                                        Field(name=agg.name, dtype=dtype)],
        online=True, offline=True, owner=view.owner, tags=view.tags, description=view.description,
    )


def test_apply_new_aggregations_and_view_while_events_flow(stream_job, feast_store):
    rng = np.random.default_rng(41)
    base = fresh_id_base()
    users, merchants = [base + i for i in range(6)], [base + 100 + i for i in range(4)]
    events = make_events(rng, 260, users, merchants, datetime.now(UTC) - timedelta(hours=3), timedelta(hours=2))
    for e in events:
        e["country"] = str(rng.choice(["DE", "FR", "NL", "PL"]))
    first, second = events[:150], events[150:]

    job = stream_job(job_name="evolve")
    publish(stream_job.topic, first)
    job.start().processAllAvailable()
    job.stop()
    before = job.plan.sid

    original, changed, added = _changed_definitions(feast_store)
    feast_store.apply([changed, added])
    try:
        publish(stream_job.topic, second)  # events keep flowing while the definitions change
        restarted = stream_job(job_name="evolve")
        names = {v.name for v in restarted.spec.views}
        assert {"merchant_amount_extremes", "user_txn_aggregates"} <= names
        restarted.start().processAllAvailable()
        restarted.stop()
        assert restarted.plan.sid != before
        assert {v.name for v in restarted.plan.seed_views} == {"user_txn_aggregates", "merchant_amount_extremes"}
        lineage = json.loads((restarted.options.checkpoint() / "lineage.json").read_text())
        assert [e["sid"] for e in lineage] == [before, restarted.plan.sid]
        assert (restarted.options.checkpoint() / f"spark-{before}").exists()  # nothing deleted

        for spec in restarted.spec.views:
            keys = sorted({e[spec.join_key] for e in events})
            want = {k: row for (k, _t), row in oracle(events, spec.join_key, view_aggregations(spec)).items()}
            assert_rows_equal(want, online_values(feast_store, spec, keys), f"online {spec.name}")

        # A feature over tiles the job already keeps (min over the hour's minute tiles): the same state schema, no
        # seed; the restart re-merges every stored user, so the new feature is served before any new event.
        from feast.aggregation import Aggregation
        from feast.types import Float64

        tile = changed.aggregations[0].slide_interval
        feast_store.apply([_with_aggregation(changed, feast_store.get_entity("user"), Aggregation(
            column="amount", function="min", time_window=timedelta(hours=1), slide_interval=tile,
            name="txn_min_1h"), Float64)])
        again = stream_job(job_name="evolve")
        again.start().processAllAvailable()
        again.stop()
        assert again.plan.sid == restarted.plan.sid and again.plan.seed_views == ()
        assert [v.name for v in again.plan.remerge_views] == ["user_txn_aggregates"]
        spec = next(v for v in again.spec.views if v.name == "user_txn_aggregates")
        assert "txn_min_1h" in spec.feature_names
        want = {k: row for (k, _t), row in oracle(events, "user_id", view_aggregations(spec)).items()}
        assert all(want[u]["txn_min_1h"] is not None for u in users)
        assert_rows_equal(want, online_values(feast_store, spec, users), "online after the re-merge")
    finally:
        feast_store.apply([original], objects_to_delete=[added], partial=False)
