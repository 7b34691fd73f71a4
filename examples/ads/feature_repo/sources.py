"""Sources: the impression stream (Kafka), its history, ad profiles and the push source of the stream view."""

from datetime import timedelta

from feast import KafkaSource, PushSource
from feast.data_format import JsonFormat

from core.offline_sources import parquet_source
from core.settings import settings

ads_source = parquet_source("ads", "ads.parquet", "Ad creatives and their campaign settings.")
impressions_history = parquet_source("impressions_history", "impressions", "Raw impressions, as they arrived.")

impressions_stream = KafkaSource(
    name="impressions_stream",
    timestamp_field="event_timestamp",
    kafka_bootstrap_servers=settings().kafka_bootstrap,
    topic="impressions",
    message_format=JsonFormat(
        schema_json="impression_id string, viewer_id bigint, ad_id bigint, bid double, placement string, "
        "event_timestamp timestamp"
    ),
    batch_source=impressions_history,
    watermark_delay_threshold=timedelta(minutes=2),
    description="Ad impressions (JSON, keyed by viewer_id).",
    tags={"rtml.range.bid": "0..50", "rtml.future_tolerance_s": "120"},
)

viewer_activity_push = PushSource(
    name="viewer_activity_push",
    batch_source=parquet_source("viewer_activity_features", "viewer_activity_features", "Computed by the stream job."),
)
