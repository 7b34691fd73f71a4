"""Live producer: the simulator's live stream sent to Kafka, paced to a target rate.

Transactions go to the feature repo's event topic (``core.contracts.domain_topics().events``) (key = user_id, value = JSON per
``core/contracts.py``, Kafka timestamp = event time in ms). Each transaction's label goes to the
labels topic (key = transaction_id, Kafka timestamp = label time) once the event clock reaches its
``label_timestamp`` (delays are scaled by ``label_delay_scale`` in live mode). Event ``i`` is due at
``start + i / rate``; sends are paced against that schedule, so falling behind shows as lag.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from core.contracts import LABEL_FIELDS, TRANSACTION_FIELDS, domain_topics, encode_records, iso_utc, stream_rules
from core.settings import settings
from streaming.simulation.live import DEFAULT_LABEL_DELAY_SCALE, LiveBatch, iter_live_batches, wire_rows
from streaming.simulation.scenarios import Scenario, to_us

log = logging.getLogger(__name__)

PACE_TICK_S = 0.01  # pacing granularity: events due within the same 10 ms go out together


@dataclass
class StreamReport:
    """What :func:`stream_live` sent and how fast."""

    topic: str
    labels_topic: str | None
    events: int
    fraud: int
    labels_sent: int
    labels_flushed_early: int
    labels_dropped: int
    target_rate: float
    achieved_rate: float
    elapsed_s: float
    max_lag_s: float
    first_event: str | None
    last_event: str | None
    interrupted: bool
    scenarios: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def transaction_values(batch: LiveBatch) -> list[bytes]:
    """JSON values of a batch, byte-for-byte what goes on the wire (no per-row json.dumps)."""
    return encode_records(TRANSACTION_FIELDS, wire_rows(batch))


def label_values(batch: LiveBatch) -> list[bytes]:
    ev = batch.events
    rows = zip(
        batch.transaction_ids,
        batch.user_ids.tolist(),
        batch.merchant_ids.tolist(),
        iso_utc(ev.ts_us),
        iso_utc(batch.label_ts_us),
        ev.is_fraud.tolist(),
        strict=True,
    )
    return encode_records(LABEL_FIELDS, rows)


def stream_live(
    rate_per_s: float,
    duration_s: float | None = None,
    max_events: int | None = None,
    seed: int = 42,
    n_users: int = 2000,
    n_merchants: int = 300,
    scenario: Scenario | list[Scenario] | None = None,
    topic: str | None = None,
    labels_topic: str | None = None,
    start_time: datetime | None = None,
    label_delay_scale: float = DEFAULT_LABEL_DELAY_SCALE,
    send_labels: bool = True,
    label_tail: str = "flush",
    pace: bool = True,
    progress: bool = True,
    bootstrap: str | None = None,
    create_topics: bool = True,
) -> StreamReport:
    """Send the live stream (same arguments as :func:`streaming.simulation.live.iter_live_batches`) to Kafka.

    ``label_tail`` decides what happens to labels not yet due when the transactions end:
    ``flush`` sends them right away (label_timestamp stays in the future), ``wait`` keeps pacing until
    the last is due, ``drop`` discards them. ``pace=False`` sends as fast as possible (max-rate tests).
    """
    from tqdm.auto import tqdm

    from core.kafka_io import check_broker, ensure_topics, make_producer

    if label_tail not in ("flush", "wait", "drop"):
        raise ValueError("label_tail must be flush, wait or drop")
    s = settings()
    topic = topic or domain_topics().events
    labels_topic = (labels_topic or domain_topics().labels) if send_labels else None
    bootstrap = bootstrap or s.kafka_bootstrap
    check_broker(bootstrap)
    if create_topics:
        ensure_topics([t for t in (topic, labels_topic) if t], bootstrap=bootstrap, role="product")
    start = start_time or datetime.now(UTC)
    start_us = to_us(start)
    producer = make_producer(
        bootstrap,
        role="product",
        key_serializer=None,
        value_serializer=None,
        linger_ms=20,
        batch_size=1024 * 1024,
        metrics_enabled=False,
    )
    user_partition = _user_partitions(producer, topic, n_users)
    limits = [x for x in (max_events, None if duration_s is None else round(duration_s * rate_per_s)) if x is not None]
    total = int(min(limits)) if limits else None  # None: until interrupted (Ctrl-C ends it cleanly)
    bar = tqdm(total=total, desc="live", unit="evt", disable=not progress)
    labels: list[tuple[int, int, bytes, bytes]] = []  # heap of (label_us, seq, key, value)
    sent = fraud = labels_sent = 0
    max_lag = 0.0
    last_us = None
    t0 = time.perf_counter()

    def event_clock_us() -> int:
        return start_us + int((time.perf_counter() - t0) * 1e6)

    def send_due_labels(now_us: int) -> int:
        n = 0
        while labels and labels[0][0] <= now_us:
            label_us, _seq, key, value = heapq.heappop(labels)
            producer.send(labels_topic, value=value, key=key, timestamp_ms=label_us // 1000)
            n += 1
        return n

    interrupted = False
    try:
        try:
            for batch in iter_live_batches(
                rate_per_s,
                max_events=max_events,
                duration_s=duration_s,
                seed=seed,
                n_users=n_users,
                n_merchants=n_merchants,
                start_time=start,
                scenario=scenario,
                label_delay_scale=label_delay_scale,
            ):
                values = transaction_values(batch)
                uids = batch.user_ids.tolist()
                keys = [str(u).encode() for u in uids]
                parts = user_partition[batch.user_ids].tolist()
                ts_ms = (batch.events.ts_us // 1000).tolist()
                if labels_topic:
                    lvals = label_values(batch)
                    tkeys = [t.encode() for t in batch.transaction_ids]
                    label_us = batch.label_ts_us.tolist()
                fraud_cum = np.concatenate([[0], np.cumsum(batch.events.is_fraud)]).tolist()
                # groups of events due in the same pacing tick
                offsets_s = (batch.events.ts_us - start_us) / 1e6
                ticks = np.floor(offsets_s / PACE_TICK_S).astype(np.int64)
                bounds = np.flatnonzero(np.diff(ticks)) + 1
                for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), len(values)], strict=True):
                    due = offsets_s[lo]
                    if pace:
                        ahead = due - (time.perf_counter() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
                        else:
                            max_lag = max(max_lag, float(-ahead))
                    for i in range(lo, hi):
                        producer.send(topic, value=values[i], key=keys[i], partition=parts[i], timestamp_ms=ts_ms[i])
                    if labels_topic:  # labels only for transactions actually sent
                        for i in range(lo, hi):
                            heapq.heappush(labels, (label_us[i], batch.first + i, tkeys[i], lvals[i]))
                        labels_sent += send_due_labels(event_clock_us() if pace else int(batch.events.ts_us[hi - 1]))
                    sent += hi - lo
                    fraud += fraud_cum[hi] - fraud_cum[lo]
                    last_us = int(batch.events.ts_us[hi - 1])
                    bar.update(hi - lo)
        except KeyboardInterrupt:
            interrupted = True  # stop sending, but flush what was sent and report it
        producer.flush(timeout=60)
        elapsed = time.perf_counter() - t0
        flushed_early = dropped = 0
        if labels_topic and labels:
            if label_tail == "wait":
                while labels:
                    wait_s = (labels[0][0] - event_clock_us()) / 1e6
                    if wait_s > 0:
                        time.sleep(min(wait_s, 0.5))
                    labels_sent += send_due_labels(event_clock_us())
            elif label_tail == "flush":
                flushed_early = len(labels)
                labels_sent += send_due_labels(2**62)
            else:
                dropped = len(labels)
                labels.clear()
        producer.flush(timeout=60)
    finally:
        bar.close()
        producer.close(timeout=10)
    return StreamReport(
        topic=topic,
        labels_topic=labels_topic,
        events=sent,
        fraud=fraud,
        labels_sent=labels_sent,
        labels_flushed_early=flushed_early,
        labels_dropped=dropped,
        target_rate=float(rate_per_s),
        achieved_rate=sent / elapsed if elapsed > 0 else float("nan"),
        elapsed_s=round(elapsed, 3),
        max_lag_s=round(max_lag, 3),
        first_event=iso_utc(np.array([start_us]))[0] if sent else None,
        last_event=iso_utc(np.array([last_us]))[0] if sent else None,
        interrupted=interrupted,
        scenarios=[
            {"name": sc.name, "starts_at": sc.starts_at.isoformat(), "strength": sc.strength}
            for sc in _scenarios(scenario)
        ],
    )


def _user_partitions(producer, topic: str, n_users: int) -> np.ndarray:
    """Partition of each user id (index = user_id), exactly as kafka-python's DefaultPartitioner picks it.

    Computing it once per user instead of per message saves the pure-Python murmur2 on the hot path.
    """
    from kafka.partitioner.default import murmur2

    partitions = sorted(producer.partitions_for(topic))
    table = np.zeros(n_users + 1, dtype=np.int64)
    for uid in range(1, n_users + 1):
        table[uid] = partitions[(murmur2(str(uid).encode()) & 0x7FFFFFFF) % len(partitions)]
    return table


def _scenarios(scenario: Scenario | list[Scenario] | None) -> list[Scenario]:
    from streaming.simulation.scenarios import as_list

    return as_list(scenario)


def decode_transaction(value: bytes) -> dict[str, Any]:
    """Parse a transactions-topic value (for checks and consumers)."""
    return json.loads(value)


@dataclass
class ReplayReport:
    """What :func:`replay_history` sent."""

    topic: str
    events: int
    files: int
    achieved_rate: float
    elapsed_s: float
    first_event: str | None
    last_event: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def history_values(table) -> tuple[list[bytes], list[bytes], list[int]]:
    """(values, keys, Kafka timestamps in ms) of a transactions table in the simulator's Parquet layout."""
    ts_us = table["event_timestamp"].cast("int64").to_numpy()
    ts_field = stream_rules().timestamp_field
    fields = TRANSACTION_FIELDS
    columns = [iso_utc(ts_us) if name == ts_field else table[name].to_pylist() for name in fields]
    uids = table["user_id"].to_pylist()
    values = encode_records(fields, zip(*columns, strict=True))
    return values, [str(u).encode() for u in uids], (ts_us // 1000).tolist()


def replay_history(
    data_dir: str | None = None,
    topic: str | None = None,
    rate_per_s: float | None = None,
    progress: bool = True,
    bootstrap: str | None = None,
) -> ReplayReport:
    """Send the history's ``transactions/`` (in file and time order) to Kafka with their original event times.

    Same wire format, key and Kafka timestamp as the live stream; ``rate_per_s`` paces it (None = as
    fast as possible). The broker must keep old timestamps (rtml's broker does).
    """
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    from core.kafka_io import check_broker, ensure_topics, make_producer
    from core.storage import data_root, location

    s = settings()
    topic = topic or domain_topics().events
    bootstrap = bootstrap or s.kafka_bootstrap
    folder = (location(data_dir) if data_dir else data_root()) / "transactions"
    files = folder.glob("part-")
    if not files:
        from core.errors import UserFacingError

        raise UserFacingError(f"no history in {folder}: run `rtml simulate` first")
    check_broker(bootstrap)
    ensure_topics([topic], bootstrap=bootstrap, role="product")
    producer = make_producer(
        bootstrap, role="product", key_serializer=None, value_serializer=None, linger_ms=20, batch_size=1024 * 1024,
        metrics_enabled=False,
    )  # fmt: skip
    total = sum(pq.read_metadata(f.path, filesystem=f.fs).num_rows for f in files)
    bar = tqdm(total=total, desc="replay", unit="evt", disable=not progress)
    sent = 0
    first = last = None
    t0 = time.perf_counter()
    try:
        for path in files:
            table = path.read_table()
            values, keys, ts_ms = history_values(table)
            for i in range(len(values)):
                if rate_per_s and i % 64 == 0:
                    ahead = (sent + i) / rate_per_s - (time.perf_counter() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                producer.send(topic, value=values[i], key=keys[i], timestamp_ms=ts_ms[i])
            if values:
                first = first or json.loads(values[0])["event_timestamp"]
                last = json.loads(values[-1])["event_timestamp"]
            sent += len(values)
            bar.update(len(values))
        producer.flush(timeout=60)
    finally:
        bar.close()
        producer.close(timeout=10)
    elapsed = time.perf_counter() - t0
    return ReplayReport(
        topic, sent, len(files), sent / elapsed if elapsed else float("nan"), round(elapsed, 3), first, last
    )
