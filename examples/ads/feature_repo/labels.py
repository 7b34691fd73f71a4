"""Click labels: whether an impression was clicked, known a little after it was shown."""

from datetime import timedelta

from feast import Field
from feast.labeling.label_view import LabelView
from feast.types import Int64, String

from core.offline_sources import parquet_source

from entities import impression

click_labels = LabelView(
    name="click_labels",
    entities=[impression],
    schema=[Field(name="impression_id", dtype=String), Field(name="clicked", dtype=Int64)],
    source=parquet_source("clicks", "clicks.parquet", "Click outcomes.", timestamp_field="label_timestamp"),
    ttl=timedelta(days=0),
    online=False,
    tags={"topic": "clicks", "positive": "1", "decisions": "skip,click"},
)
