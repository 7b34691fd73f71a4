"""Feature views of the fraud model.

Each view declares its freshness SLO (tag ``freshness_slo``: how old its newest data may get,
core/freshness.py). Stream views declare their aggregations here; ``streaming/`` reads these declarations from the
registry and computes exactly them (one source of truth). Windows are tiled: each aggregation
declares its tile size as its ``slide_interval`` (its window a multiple of it; below, 1-minute tiles for
windows up to an hour and 1-hour tiles for 24-hour windows). As of an event at time t, a window W covers the entity's events from the start of t's tile
plus one tile minus W, up to t: the current tile up to t and the W/tile - 1 whole tiles before it
(between W - tile and W long; see streaming/tiles.py). ``seconds_since_previous`` is t minus the
entity's previous event time inside that window (null if none).
"""

from datetime import timedelta

from feast import FeatureView, Field
from feast.aggregation import Aggregation
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64, String

from entities import merchant, user
from sources import merchant_txn_push, merchants_source, user_txn_push, users_source

OWNER = "risk-features@rtml.dev"

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=400),
    schema=[
        Field(name="account_age_days", dtype=Int64, description="Days since the account was opened."),
        Field(name="home_country", dtype=String, description="ISO country of the card holder."),
        Field(name="card_type", dtype=String, description="debit, credit or prepaid."),
        Field(name="credit_limit", dtype=Float64, description="Credit limit in EUR."),
    ],
    source=users_source,
    online=True,
    owner=OWNER,
    description="Card holder profile, refreshed daily from the issuing system.",
    tags={"kind": "batch", "team": "risk", "freshness_slo": "2d"},
)

merchant_profile = FeatureView(
    name="merchant_profile",
    entities=[merchant],
    ttl=timedelta(days=400),
    schema=[
        Field(name="category", dtype=String, description="Merchant category (grocery, travel, ...)."),
        Field(name="merchant_country", dtype=String, description="ISO country of the merchant."),
        Field(name="risk_tier", dtype=Int64, description="Acquirer risk tier, 0 (low) to 2 (high)."),
    ],
    source=merchants_source,
    online=True,
    owner=OWNER,
    description="Merchant profile from the acquiring system.",
    tags={"kind": "batch", "team": "risk", "freshness_slo": "2d"},
)


USER_TILE = timedelta(minutes=1)  # tile size of user_txn_aggregates' windows up to an hour (Chronon/Tecton-style)
USER_DAY_TILE = timedelta(hours=1)  # tile size of its 24-hour windows: an hour tile per hour of the day
MERCHANT_TILE = timedelta(minutes=1)  # tile size of merchant_txn_aggregates


def _user_aggregations() -> list[Aggregation]:
    aggs = []
    for label, window in (("10m", timedelta(minutes=10)), ("1h", timedelta(hours=1)), ("24h", timedelta(hours=24))):
        tile = USER_DAY_TILE if window == timedelta(hours=24) else USER_TILE
        for function in ("count", "sum", "mean", "max"):
            aggs.append(Aggregation(column="amount", function=function, time_window=window, slide_interval=tile,
                                    name=f"txn_{function}_{label}"))
    aggs.append(
        Aggregation(column="merchant_id", function="count_distinct", time_window=timedelta(hours=1),
                    slide_interval=USER_TILE, name="distinct_merchants_1h")
    )
    aggs.append(
        Aggregation(
            column="event_timestamp",
            function="seconds_since_previous",
            time_window=timedelta(hours=24),
            slide_interval=USER_DAY_TILE,
            name="secs_since_prev_txn",
        )
    )
    return aggs


def _schema_for(aggs: list[Aggregation]) -> list[Field]:
    return [Field(name=a.name, dtype=Int64 if a.function in ("count", "count_distinct") else Float64) for a in aggs]


_USER_AGGS = _user_aggregations()
user_txn_aggregates = StreamFeatureView(
    name="user_txn_aggregates",
    entities=[user],
    ttl=timedelta(days=2),
    source=user_txn_push,
    timestamp_field="event_timestamp",
    aggregations=_USER_AGGS,
    schema=_schema_for(_USER_AGGS),
    online=True,
    offline=True,
    owner=OWNER,
    description="Card holder spending over sliding windows, as of the holder's latest transaction.",
    tags={"kind": "stream", "team": "risk", "source_topic": "transactions", "freshness_slo": "5m"},
)

_MERCHANT_AGGS = [
    Aggregation(column="amount", function="count", time_window=timedelta(hours=1), slide_interval=MERCHANT_TILE,
                name="merchant_txn_count_1h"),
    Aggregation(column="amount", function="mean", time_window=timedelta(hours=1), slide_interval=MERCHANT_TILE,
                name="merchant_amount_mean_1h"),
]
merchant_txn_aggregates = StreamFeatureView(
    name="merchant_txn_aggregates",
    entities=[merchant],
    ttl=timedelta(days=2),
    source=merchant_txn_push,
    timestamp_field="event_timestamp",
    aggregations=_MERCHANT_AGGS,
    schema=_schema_for(_MERCHANT_AGGS),
    online=True,
    offline=True,
    owner=OWNER,
    description="Merchant traffic over the last hour, as of the merchant's latest transaction.",
    tags={"kind": "stream", "team": "risk", "source_topic": "transactions", "freshness_slo": "5m"},
)
