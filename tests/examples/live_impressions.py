"""Test driver run as a subprocess with the ads domain's settings: live impressions and click labels to Kafka.

``python -m tests.examples.live_impressions impressions OUT.json`` publishes a few impressions of new viewers
(stamped within the last minutes) and writes what it sent; ``... clicks IN.json`` publishes a click label per
impression in IN.json (the label view's record fields, from ``core.contracts.label_fields``).
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from core.contracts import arrow_schema, domain_topics, encode_records, iso_utc, label_fields, stream_rules

NEW_VIEWERS = (900_001, 900_002, 900_003)


def impressions(out: str) -> None:
    from examples.ads.simulate import publish

    rng = np.random.default_rng(11)
    now_us = int(time.time() * 1e6)
    rows = []
    for v, viewer in enumerate(NEW_VIEWERS):
        for i in range(4 + 3 * v):
            rows.append({
                "impression_id": f"live-{viewer}-{i}", "viewer_id": viewer, "ad_id": int(rng.integers(0, 60)),
                "bid": round(float(rng.uniform(0.5, 9.0)), 2), "placement": ("top", "side", "feed")[i % 3],
                "event_timestamp": now_us - int(rng.integers(5, 240)) * 1_000_000,
            })
    rows.sort(key=lambda r: r["event_timestamp"])
    table = pa.Table.from_pylist(
        [{**r, "event_timestamp": datetime.fromtimestamp(r["event_timestamp"] / 1e6, UTC)} for r in rows],
        schema=arrow_schema(stream_rules()),
    )
    publish(table, topic=domain_topics().events)
    with open(out, "w") as f:
        json.dump(rows, f)


def clicks(path: str) -> None:
    from core.kafka_io import make_producer

    rows = json.load(open(path))
    fields = label_fields()
    now = iso_utc([int(time.time() * 1e6)])[0]
    values = [
        {**{k: r[k] for k in fields if k in r}, "event_timestamp": iso_utc([r["event_timestamp"]])[0],
         "label_timestamp": now, "clicked": int(r["bid"] > 5)}
        for r in rows
    ]
    producer = make_producer(role="product", value_serializer=None, key_serializer=None)
    for value, raw in zip(values, encode_records(fields, [tuple(v[k] for k in fields) for v in values]), strict=True):
        producer.send(domain_topics().labels, key=value["impression_id"].encode(), value=raw)
    producer.flush(30)
    producer.close(5)


if __name__ == "__main__":
    {"impressions": impressions, "clicks": clicks}[sys.argv[1]](sys.argv[2])
