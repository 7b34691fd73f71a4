"""Feature views of the click-through model: one batch view, one stream view."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.aggregation import Aggregation
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64, String

from entities import ad, viewer
from sources import ads_source, viewer_activity_push

ad_profile = FeatureView(
    name="ad_profile",
    entities=[ad],
    ttl=timedelta(days=90),
    schema=[
        Field(name="ad_category", dtype=String),
        Field(name="advertiser_tier", dtype=Int64),
        Field(name="daily_budget", dtype=Float64),
    ],
    source=ads_source,
    online=True,
    tags={"kind": "batch"},
)

VIEWER_TILE = timedelta(minutes=1)  # tile size of viewer_activity: every window is a whole number of tiles
_AGGS = [
    Aggregation(column="bid", function="count", time_window=timedelta(minutes=10), slide_interval=VIEWER_TILE,
                name="impressions_10m"),
    Aggregation(column="bid", function="count", time_window=timedelta(hours=1), slide_interval=VIEWER_TILE,
                name="impressions_1h"),
    Aggregation(column="bid", function="mean", time_window=timedelta(hours=1), slide_interval=VIEWER_TILE,
                name="mean_bid_1h"),
    Aggregation(column="ad_id", function="count_distinct", time_window=timedelta(hours=1), slide_interval=VIEWER_TILE,
                name="distinct_ads_1h"),
]
viewer_activity = StreamFeatureView(
    name="viewer_activity",
    entities=[viewer],
    ttl=timedelta(days=1),
    source=viewer_activity_push,
    timestamp_field="event_timestamp",
    aggregations=_AGGS,
    schema=[Field(name=a.name, dtype=Int64 if a.function in ("count", "count_distinct") else Float64) for a in _AGGS],
    online=True,
    offline=True,
    tags={"kind": "stream", "source_topic": "impressions"},
)
