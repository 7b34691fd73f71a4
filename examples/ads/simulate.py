"""A seeded simulator of the ad-click domain: history to Parquet and a live impression stream to Kafka.

The domain's own code, like the fraud simulator is the reference domain's: rtml's plumbing only sees the
feature repo next to this file. ``python -m examples.ads.simulate --days 3`` writes under ``RTML_DATA_DIR``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from core.contracts import arrow_schema, encode_records, iso_utc, stream_rules
from core.settings import settings
from core.storage import data_root

PLACEMENTS = ("top", "side", "feed")
CATEGORIES = ("travel", "games", "retail", "finance")


@dataclass(frozen=True)
class History:
    ads: pa.Table
    impressions: pa.Table
    clicks: pa.Table


def simulate(days: int = 3, viewers: int = 400, ads: int = 60, per_day: int = 6000, seed: int = 0,
             start: datetime | None = None) -> History:
    """Impressions over ``days`` with a daily cycle, their click labels (known 1-30 min later) and ad profiles."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 11, 1, tzinfo=UTC)
    start_us = int(start.timestamp() * 1e6)
    n = days * per_day
    hour = rng.choice(24, n, p=_daily_cycle())
    day = rng.integers(0, days, n)
    ts = start_us + ((day * 24 + hour) * 3600 + rng.uniform(0, 3600, n)).astype(np.int64) * 1_000_000
    ts.sort()
    viewer = rng.zipf(1.6, n) % viewers
    ad = rng.integers(0, ads, n)
    tier = rng.integers(0, 3, ads)
    bid = np.round(rng.gamma(2.0, 1.5, n) * (1 + tier[ad]), 2).clip(0.01, 49.0)
    placement = rng.choice(len(PLACEMENTS), n, p=[0.2, 0.3, 0.5])
    logit = -3.2 + 0.12 * bid + 1.1 * (placement == 0) + 0.35 * tier[ad] + rng.normal(0, 0.3, n)
    clicked = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    label_ts = ts + rng.integers(60, 1800, n) * 1_000_000
    ids = [f"imp-{seed}-{i}" for i in range(n)]
    rules = stream_rules()
    us = pa.timestamp("us", tz="UTC")
    impressions = pa.table(
        {
            "impression_id": ids, "viewer_id": viewer.astype(np.int64), "ad_id": ad.astype(np.int64), "bid": bid,
            "placement": [PLACEMENTS[p] for p in placement], "event_timestamp": pa.array(ts, us),
        },
        schema=arrow_schema(rules),
    )
    clicks = pa.table(
        {
            "impression_id": ids, "ad_id": ad.astype(np.int64), "viewer_id": viewer.astype(np.int64),
            "event_timestamp": pa.array(ts, us), "label_timestamp": pa.array(label_ts, us), "clicked": clicked,
        }
    )
    profiles = pa.table(
        {
            "ad_id": np.arange(ads, dtype=np.int64),
            "ad_category": [CATEGORIES[i % len(CATEGORIES)] for i in range(ads)],
            "advertiser_tier": tier.astype(np.int64),
            "daily_budget": np.round(rng.uniform(50, 5000, ads), 2),
            "event_timestamp": pa.array(np.full(ads, start_us - 86_400_000_000, dtype=np.int64), us),
        }
    )
    return History(ads=profiles, impressions=impressions, clicks=clicks)


def _daily_cycle() -> np.ndarray:
    weights = 1.0 + 0.8 * np.sin((np.arange(24) - 9) / 24 * 2 * np.pi)
    return weights / weights.sum()


def write_history(history: History) -> None:
    """Parquet in the layout the feature repo's sources declare, under the data dir (a folder or ``s3://``)."""
    data = data_root()
    (data / "impressions" / "part-00000.parquet").write_table(history.impressions)
    (data / "clicks.parquet").write_table(history.clicks)
    (data / "ads.parquet").write_table(history.ads)


def wire_values(impressions: pa.Table) -> list[bytes]:
    """The impressions as the stream carries them (the KafkaSource's fields, ISO timestamps)."""
    rules = stream_rules()
    columns = {name: impressions[name].to_pylist() for name in rules.fields if name != rules.timestamp_field}
    columns[rules.timestamp_field] = iso_utc(impressions[rules.timestamp_field].cast(pa.int64()).to_numpy())
    return encode_records(rules.fields, zip(*(columns[name] for name in rules.fields), strict=True))


def publish(impressions: pa.Table, topic: str = "impressions") -> int:
    """Send impressions to Kafka (key = viewer_id, Kafka timestamp = event time); returns the count."""
    from core.kafka_io import make_producer

    producer = make_producer(role="product", value_serializer=None)
    keys = impressions["viewer_id"].to_pylist()
    ts_ms = (impressions["event_timestamp"].cast(pa.int64()).to_numpy() // 1000).tolist()
    for key, value, ms in zip(keys, wire_values(impressions), ts_ms, strict=True):
        producer.send(topic, key=key, value=value, timestamp_ms=ms)
    producer.flush(timeout=30)
    producer.close(timeout=5)
    return len(keys)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    history = simulate(days=args.days, seed=args.seed, start=datetime.now(UTC).replace(
        minute=0, second=0, microsecond=0) - timedelta(days=args.days))
    write_history(history)
    print(f"ads: {history.impressions.num_rows} impressions, {int(pa.compute.sum(history.clicks['clicked']).as_py())} "
          f"clicks, {history.ads.num_rows} ads -> {settings().data_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
