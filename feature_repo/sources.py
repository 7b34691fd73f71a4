"""Data sources: Parquet history (offline), the raw transaction stream (Kafka) and push sources
that the stream job writes computed features through.

Paths come from ``RTML_DATA_DIR``; ``RTML_OFFLINE_STORE=spark`` swaps the Parquet file sources for
Spark sources over the same files, so the same definitions serve data beyond one machine.
"""

from datetime import timedelta

from feast import KafkaSource, PushSource
from feast.data_format import JsonFormat

from core.offline_sources import parquet_source
from core.settings import settings

_S = settings()


users_source = parquet_source("users", "users.parquet", "User profile snapshots from the card-issuing system.")
merchants_source = parquet_source("merchants", "merchants.parquet", "Merchant profile snapshots from acquiring.")
transactions_history = parquet_source(
    "transactions_history", "transactions", "Raw card transactions, as they arrived on the stream."
)

transactions_stream = KafkaSource(
    name="transactions_stream",
    timestamp_field="event_timestamp",
    kafka_bootstrap_servers=_S.kafka_bootstrap,
    topic="transactions",
    message_format=JsonFormat(
        schema_json=(
            "transaction_id string, user_id bigint, merchant_id bigint, amount double, currency string, "
            "country string, channel string, event_timestamp timestamp"
        )
    ),
    batch_source=transactions_history,
    watermark_delay_threshold=timedelta(minutes=5),
    description="Raw card transactions (JSON, keyed by user_id).",
    owner="payments-platform@rtml.dev",
    # Validation rules of the raw events (core/contracts.py): out of range or too far in the future goes to
    # the dead-letter topic in the stream job and is left out by the backfill.
    tags={"rtml.range.amount": "0..1000000", "rtml.future_tolerance_s": "300"},
)

user_txn_push = PushSource(
    name="user_txn_push",
    batch_source=parquet_source("user_txn_features", "user_txn_features", "User aggregates computed by the stream job."),
)

merchant_txn_push = PushSource(
    name="merchant_txn_push",
    batch_source=parquet_source(
        "merchant_txn_features", "merchant_txn_features", "Merchant aggregates computed by the stream job."
    ),
)
