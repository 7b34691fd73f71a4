"""A stream view keyed by a string (the transaction's country here; user ids that are UUIDs are the common case):
the same stream job, tiles, backfill and re-merge as integer keys, no code of its own. Online values (read by
Feast's own ``get_online_features``) and offline rows equal the oracle, the integer-keyed views of the same job
stay right beside it, and a feature added over kept tiles is re-merged for the string entities listed back
from Redis."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tests.streaming import helpers as h
from tests.streaming.test_backfill_skew import history_frame
from tests.streaming.test_stream_online import online_values

pytestmark = pytest.mark.integration

VIEW = "country_txn_aggregates"


def _country_view(store, extra=()):
    """A stream view of the reference source keyed by ``country`` (a String entity), and that entity."""
    from feast import Entity, StreamFeatureView, ValueType
    from feast.aggregation import Aggregation
    from feast.field import Field
    from feast.types import Float64, Int64

    user = store.get_stream_feature_view("user_txn_aggregates")
    tile = user.aggregations[0].slide_interval
    entity = Entity(name="txn_country", join_keys=["country"], value_type=ValueType.STRING)
    aggs = [
        Aggregation(column="amount", function="count", time_window=timedelta(hours=1), slide_interval=tile,
                    name="country_txn_count_1h"),
        Aggregation(column="amount", function="sum", time_window=timedelta(hours=1), slide_interval=tile,
                    name="country_amount_sum_1h"),
        Aggregation(column="merchant_id", function="count_distinct", time_window=timedelta(hours=2),
                    slide_interval=tile, name="country_merchants_2h"),
        *extra,
    ]
    schema = [Field(name="country_txn_count_1h", dtype=Int64), Field(name="country_amount_sum_1h", dtype=Float64),
              Field(name="country_merchants_2h", dtype=Int64)]
    schema += [Field(name=a.name, dtype=Float64) for a in extra]
    view = StreamFeatureView(name=VIEW, entities=[entity], ttl=timedelta(days=2), source=user.stream_source,
                             timestamp_field="event_timestamp", aggregations=aggs, schema=schema, online=True,
                             offline=True)
    return entity, view


def test_a_string_keyed_view_streams_backfills_and_remerges(stream_job, feast_store, spark, tmp_path):
    from feast.aggregation import Aggregation

    from streaming.backfill import run_backfill

    rng = np.random.default_rng(5)
    base = h.fresh_id_base()
    users, merchants = [base + i for i in range(5)], [base + 100 + i for i in range(6)]
    run = uuid.uuid4().hex[:6]  # Redis is shared between runs: new strings every run (non-ASCII: UTF-8 keys)
    countries = [f"DE-{run}", f"FR-{run}", f"Ü-{run}"]
    events = h.make_events(rng, 180, users, merchants, datetime.now(UTC) - timedelta(hours=3), timedelta(hours=2, minutes=50))
    for e in events:
        e["country"] = str(rng.choice(countries))

    entity, view = _country_view(feast_store)
    feast_store.apply([entity, view])
    try:
        job = stream_job(job_name="strings")
        spec = next(v for v in job.spec.views if v.name == VIEW)
        assert spec.string_key and not any(v.string_key for v in job.spec.views if v.name != VIEW)
        h.publish(stream_job.topic, events[:110])
        query = job.start()
        query.processAllAvailable()
        h.publish(stream_job.topic, events[110:])  # a second micro-batch on top of the tiles of the first
        query.processAllAvailable()
        job.stop()
        # the string view and the integer views of the same job (their rows carry a null string key)
        h.assert_online_equals_oracle(feast_store, job.spec.views, events)
        assert online_values(feast_store, spec, [f"IT-{run}"])[f"IT-{run}"]["country_txn_count_1h"] is None

        # the backfill: one offline row per event, equal to the oracle; its latest row per country is what
        # the stream served (skew 0)
        history = tmp_path / "history"
        history.mkdir()
        history_frame(events).to_parquet(history / "part-0.parquet", index=False)
        start = min(e["event_timestamp"] for e in events)
        end = max(e["event_timestamp"] for e in events) + timedelta(seconds=1)
        result = run_backfill(start, end, spark=spark, store=feast_store, source_path=str(history),
                              offline_dirs={VIEW: str(tmp_path / "offline")}, views=(VIEW,), materialize=False)
        rows = h.assert_offline_equals_oracle(result.files[VIEW], spec, events)
        latest = rows.sort_values("event_timestamp").groupby("country").tail(1).set_index("country")
        served = online_values(feast_store, spec, countries)
        for c in countries:
            for a in spec.aggs:
                assert served[c][a.name] == latest.loc[c, a.name], (c, a.name)

        # a feature over the tiles already kept (mean: count and sum): no seed, every stored country re-merged
        tile = view.aggregations[0].slide_interval
        _, wider = _country_view(feast_store, extra=[Aggregation(
            column="amount", function="mean", time_window=timedelta(hours=1), slide_interval=tile,
            name="country_amount_mean_1h")])
        feast_store.apply([wider])
        again = stream_job(job_name="strings")
        again.start().processAllAvailable()
        again.stop()
        assert again.plan.seed_views == () and [v.name for v in again.plan.remerge_views] == [VIEW]
        spec = next(v for v in again.spec.views if v.name == VIEW)
        want = {k: row for (k, _t), row in h.oracle(events, "country", h.view_aggregations(spec)).items()}
        assert all(want[c]["country_amount_mean_1h"] is not None for c in countries)
        h.assert_rows_equal(want, online_values(feast_store, spec, countries), "online after the re-merge")
    finally:
        feast_store.apply([], objects_to_delete=[view, entity], partial=False)
