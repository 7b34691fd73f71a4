"""A simulated product service for the demo: score recorded transactions over HTTP, then publish them.

Each chunk of transactions is first scored (`POST /predict_batch` with the product service's API key,
``Authorization: Bearer``; features as of just before the
transactions, like the training sets), then published to the transactions topic for the stream job,
and their labels follow on the labels topic a few chunks later (a compressed label delay).

The replay compresses event time (a day in a minute or two), so a stream job a few seconds behind would
serve features hours of event time old. With ``sync``, every ``sync_every_s`` of event time the replay
waits until the stream job has processed every transaction published so far (``sync`` is given the
highest offset sent per partition), so no served feature is older than that much event time.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from core.contracts import LABEL_FIELDS, domain_topics, encode_records, iso_utc
from core.settings import settings
from core.storage import data_root


def _day_table(start: datetime, end: datetime) -> pa.Table:
    table = pa.concat_tables([p.read_table() for p in (data_root() / "transactions").glob("part-")])
    ts = table["event_timestamp"]
    mask = pc.and_(pc.greater_equal(ts, pa.scalar(start, ts.type)), pc.less(ts, pa.scalar(end, ts.type)))
    return table.filter(mask).sort_by("event_timestamp")


def _label_values(transaction_ids: list[str]) -> list[tuple[str, bytes]]:
    """Label records of the given transactions, in the labels topic's wire format (the same encoder as the simulator)."""
    labels = (data_root() / "labels.parquet").read_pandas().set_index("transaction_id")
    rows = labels.loc[transaction_ids].reset_index()
    columns = {name: rows[name].tolist() for name in LABEL_FIELDS if LABEL_FIELDS[name] is not str}
    columns["transaction_id"] = rows["transaction_id"].tolist()
    for name in ("event_timestamp", "label_timestamp"):
        naive = pd.to_datetime(rows[name], utc=True).dt.tz_localize(None)
        columns[name] = iso_utc(naive.to_numpy().astype("datetime64[us]").astype("int64"))
    values = encode_records(LABEL_FIELDS, zip(*(columns[name] for name in LABEL_FIELDS), strict=True))
    return list(zip(columns["transaction_id"], values, strict=True))


def replay_day(start: datetime, end: datetime, api: str, rate_per_s: float = 400.0, chunk: int = 50,
               label_lag_chunks: int = 20, api_key: str | None = None,
               sync: Callable[[dict[int, int]], float] | None = None, sync_every_s: float = 1800.0) -> dict:
    """Score and publish the recorded transactions in ``[start, end)``; returns counts and batch latencies.
    ``api_key`` (default ``RTML_API_KEY``) needs the ``predict_batch`` scope. ``sync(offsets)`` blocks until
    the stream job has processed the transactions up to ``offsets`` (partition -> highest offset sent) and
    returns the seconds it waited; it is called every ``sync_every_s`` of event time."""

    import httpx

    from core.kafka_io import make_producer
    from streaming.producer import history_values

    topics = domain_topics()
    table = _day_table(start, end)
    values, keys, ts_ms = history_values(table)
    producer = make_producer(role="product", key_serializer=None, value_serializer=None)
    label_rows = dict(_label_values(table["transaction_id"].to_pylist()))
    pending_labels: deque[list[bytes]] = deque()
    latencies: list[float] = []
    scored = errors = 0
    statuses: dict[int, int] = {}
    first_error = ""
    published: dict[int, int] = {}  # partition -> highest offset of the transactions sent
    syncs, waited = 0, 0.0
    next_sync_ms = ts_ms[0] + sync_every_s * 1000 if len(ts_ms) else 0

    def sent(metadata) -> None:
        published[metadata.partition] = max(published.get(metadata.partition, -1), metadata.offset)

    api_key = api_key or settings().serving.client_api_key
    auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
    t0 = time.perf_counter()
    try:
        with httpx.Client(base_url=api, timeout=10.0, headers=auth) as client, tqdm(total=len(values), desc="replay", unit="txn") as bar:
            for lo in range(0, len(values), chunk):
                hi = min(lo + chunk, len(values))
                if sync is not None and ts_ms[lo] >= next_sync_ms:
                    producer.flush(timeout=30)
                    waited += sync(dict(published))
                    syncs += 1
                    next_sync_ms = ts_ms[lo] + sync_every_s * 1000
                payload = b'{"transactions":[' + b",".join(values[lo:hi]) + b"]}"
                t1 = time.perf_counter()
                reply = client.post("/predict_batch", content=payload, headers={"content-type": "application/json",
                                                                              "x-request-id": uuid.uuid4().hex})
                latencies.append(time.perf_counter() - t1)
                if reply.status_code == 200:
                    scored += hi - lo
                else:
                    errors += hi - lo
                    statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
                    first_error = first_error or f"{reply.status_code}: {reply.text[:300]}"
                for i in range(lo, hi):
                    producer.send(topics.events, value=values[i], key=keys[i], timestamp_ms=ts_ms[i]).add_callback(sent)
                pending_labels.append([json.loads(v)["transaction_id"].encode() for v in values[lo:hi]])
                if len(pending_labels) > label_lag_chunks:
                    for tid in pending_labels.popleft():
                        producer.send(topics.labels, key=tid, value=label_rows[tid.decode()])
                bar.update(hi - lo)
                ahead = hi / rate_per_s - (time.perf_counter() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            for chunk_ids in pending_labels:
                for tid in chunk_ids:
                    producer.send(topics.labels, key=tid, value=label_rows[tid.decode()])
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)  # also on Ctrl-C, before the demo stops the broker
    ms = np.asarray(latencies) * 1000
    return {
        "scored": scored,
        "errors": errors,
        "batches": len(latencies),
        "p50_ms": float(np.percentile(ms, 50)) if ms.size else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if ms.size else float("nan"),
        "seconds": round(time.perf_counter() - t0, 1),
        "error_statuses": statuses,
        "first_error": first_error,
        "stream_syncs": syncs,
        "stream_wait_s": round(waited, 1),
    }


def wait_for_alert(timeout_s: float = 120.0, since_ms: int | None = None) -> dict | None:
    """The first alert on the alerts topic published after ``since_ms`` (default: the last hour)."""
    from core.kafka_io import make_consumer

    since_ms = since_ms or int((time.time() - 3600) * 1000)
    consumer = make_consumer(
        [settings().topics.alerts], group_id=f"rtml-operator-alert-watch-{uuid.uuid4().hex[:8]}", role="operator"
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    if record.timestamp >= since_ms:
                        try:
                            return json.loads(record.value)
                        except ValueError:
                            continue
    finally:
        consumer.close()
    return None
