"""Labels of the fraud model: which event a label belongs to, what it is called and where it is kept.

The LabelView is the one declaration training reads labels from (column, source, label time) and the
labels topic carries; the event id is the join key of its entity (the raw stream's ``transaction_id``).
"""

from datetime import timedelta

from feast import Entity, Field, ValueType
from feast.labeling.label_view import LabelView
from feast.types import Int64, String

from core.offline_sources import parquet_source

transaction = Entity(
    name="transaction",
    join_keys=["transaction_id"],
    value_type=ValueType.STRING,
    description="One card transaction (the event a label belongs to).",
    owner="risk-ml@rtml.dev",
    tags={"domain": "fraud"},
)

fraud_labels = LabelView(
    name="fraud_labels",
    entities=[transaction],
    schema=[Field(name="transaction_id", dtype=String), Field(name="is_fraud", dtype=Int64)],
    source=parquet_source("labels", "labels.parquet", "Chargeback and review outcomes.", timestamp_field="label_timestamp"),
    ttl=timedelta(days=0),
    online=False,
    description="Whether a transaction was fraud, known at label_timestamp (chargebacks arrive days later).",
    owner="risk-ml@rtml.dev",
    tags={"topic": "labels", "positive": "1", "decisions": "legit,fraud"},
)
