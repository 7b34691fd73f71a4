"""Stream job benchmark: sustained throughput, freshness at 1k/5k/20k events/s, backfill rows/s, state size
and small-batch cost after many events, state bytes per entity, the standalone cluster run; side by side
with the former driver-side job (``tests.benchmarks.baseline.driver_job``) and the plain Feast path (a Kafka consumer
computing the same aggregates and calling ``store.push`` per event).

Freshness of the tiled job: Spark reports, per micro-batch, its input rows and the write time; the events
of a paced producer are stamped at send time, so a batch's events span the event times between the newest
event of the previous batch and its own newest event; each event's freshness is write time minus its
event time, interpolated uniformly over that span.

Freshness = time the online write of an event's features returned (readable from Redis) minus the
event's production time (the producer stamps event_timestamp at send time). Sustained throughput =
events processed / wall time from a pre-loaded topic (JVM start excluded, Kafka read, parse,
aggregate, Redis, Parquet, state all included).

Run: ``.venv/bin/python -m tests.benchmarks.bench_streaming`` (uses settings(); starts the stack if needed).
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from core.redis_auth import connect
from tests.benchmarks.common import percentiles, read_result, write_result

log = logging.getLogger("bench_streaming")
N_USERS, N_MERCHANTS = 20_000, 2_000
RATES = (1_000, 5_000, 20_000)
RATE_SECONDS = float(os.environ.get("RTML_BENCH_RATE_SECONDS", "20"))
RATE_WARMUP_SECONDS = float(os.environ.get("RTML_BENCH_RATE_WARMUP_SECONDS", "15"))  # same rate, not measured
# long enough for several batches after the JVM's JIT warm-up (400k gave 3 batches, mostly still interpreted)
SUSTAINED_EVENTS = int(os.environ.get("RTML_BENCH_SUSTAINED_EVENTS", "1000000"))
BACKFILL_EVENTS = int(os.environ.get("RTML_BENCH_BACKFILL_EVENTS", "200000"))
STATE_EVENTS = int(os.environ.get("RTML_BENCH_STATE_EVENTS", "20000000"))
# The tiled job's state after STATE_EVENTS events is bulk-loaded: the events older than the last
# STATE_STREAM_MINUTES go through the backfill path (the stream job's own tile code, writing the Redis tile
# hashes), the rest through Kafka and the stream job (which builds its Spark state from them: tiles leave the
# state store once the watermark passes them, so the state holds only the last minutes either way).
STATE_STREAM_MINUTES = float(os.environ.get("RTML_BENCH_STATE_STREAM_MINUTES", "15"))
# The driver job keeps every raw event of 24 h and rewrites it per batch: 20 M events through it take hours on
# 2 cores; it runs with DRIVER_STATE_EVENTS (same users and 24 h) and its figures carry that count in their keys.
DRIVER_STATE_EVENTS = int(os.environ.get("RTML_BENCH_DRIVER_STATE_EVENTS", "2000000"))
STATE_REDIS_MAXMEMORY = os.environ.get("RTML_BENCH_STATE_REDIS_MAXMEMORY", "8gb")
STATE_USERS = int(os.environ.get("RTML_BENCH_STATE_USERS", "100000"))
TILED_RATES = tuple(int(x) for x in os.environ.get("RTML_BENCH_TILED_RATES", "5000,20000").split(","))
# RTML_BENCH_PARTS=cluster,rates.5000,...: run only these sections; the others keep their committed figures
# (each section records when it was measured and the load after it).
PARTS = {p.strip() for p in os.environ.get("RTML_BENCH_PARTS", "").split(",") if p.strip()}
PART_NAMES = ("sustained", "rates", "steady_5k", "driver_sustained", "driver_rate_5k", "per_entity_tiled", "per_entity_driver",
              "baseline", "backfill", "state_tiled", "state_driver", "cluster")
RATIO_ENTITIES = int(os.environ.get("RTML_BENCH_RATIO_ENTITIES", "200"))
BASELINE_SECONDS = float(os.environ.get("RTML_BENCH_BASELINE_SECONDS", "20"))
ID_BASE = (uuid.uuid4().int % 10**6 + 1) * 10**6  # fresh entity ids per run (Redis keeps older, newer-timed values)


# -- load generation (a separate process, so it does not share the GIL with the job) ------------------
def _value(i: int, user: int, merchant: int, amount: float, ts_iso: str) -> bytes:
    return (
        f'{{"transaction_id":"b{i}","user_id":{user},"merchant_id":{merchant},"amount":{amount:.2f},'
        f'"currency":"EUR","country":"DE","channel":"online","event_timestamp":"{ts_iso}"}}'
    ).encode()


def _iso(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def produce(bootstrap: str, topic: str, n: int, rate: float | None, seed: int, start_us: int | None = None,
            step_us: float = 50, done=None, id_base: int = ID_BASE, n_users: int = N_USERS, first: int = 0) -> None:
    """Send events ``first``..n-1 of a sequence (see :func:`history_events`). rate=None: as fast as possible, event
    times start_us + i*step_us. Else paced at ``rate``/s with event_timestamp = send time (10 ms ticks)."""
    from core.kafka_io import make_producer

    rng = np.random.default_rng(seed)
    users = rng.integers(1, n_users + 1, n) + id_base
    merchants = rng.integers(1, N_MERCHANTS + 1, n) + id_base
    amounts = np.round(rng.gamma(2.0, 30.0, n) + 0.01, 2)
    producer = make_producer(bootstrap, key_serializer=None, value_serializer=None, linger_ms=5,
                             batch_size=512 * 1024, role="admin")
    send = producer.send
    if rate is None:
        for i in range(first, n):
            us = start_us + int(i * step_us)
            send(topic, key=str(users[i]).encode(), value=_value(i, users[i], merchants[i], amounts[i], _iso(us)),
                 timestamp_ms=us // 1000)
    else:
        t0 = time.time()
        i = first
        while i < n:
            now = time.time()
            due = min(n, first + int((now - t0) * rate) + 1)
            if due > i:
                us = int(now * 1e6)
                iso = _iso(us)
                for j in range(i, due):
                    send(topic, key=str(users[j]).encode(), value=_value(j, users[j], merchants[j], amounts[j], iso),
                         timestamp_ms=us // 1000)
                i = due
            time.sleep(max(0.0, 0.01 - (time.time() - now)))
    producer.flush()
    producer.close()
    if done is not None:
        done.set()


def _spawn_producer(**kwargs):
    ctx = mp.get_context("spawn")
    done = ctx.Event()
    proc = ctx.Process(target=produce, kwargs={"id_base": ID_BASE, **kwargs, "done": done}, daemon=True)
    proc.start()
    return proc, done


# -- the stream job ---------------------------------------------------------------------------------------
class Recorder:
    """Collects per-batch results and per-event freshness from the processor."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = 0
        self.freshness: list[np.ndarray] = []
        self.batches: list[tuple[float, float, int]] = []  # (start, end, events)
        self.record_freshness = False

    def __call__(self, result, event_us, write_time):
        with self.lock:
            self.events += result.events_read
            end = time.time()
            self.batches.append((end - result.seconds, end, result.events_read))
            if self.record_freshness and event_us.size:
                self.freshness.append(write_time - event_us / 1e6)

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if self.events >= n:
                    return True
            time.sleep(0.1)
        return False


def _job(spark, store, topic, workdir: Path, trigger: float, max_offsets: int | None, starting: str = "earliest",
         writer: str = "pipelined"):
    from prometheus_client import CollectorRegistry

    from core.kafka_io import ensure_topics
    from streaming.metrics import StreamMetrics
    from tests.benchmarks.baseline.driver_job import StreamJob, StreamOptions

    name = f"bench{uuid.uuid4().hex[:6]}"
    ensure_topics([f"{topic}-dlq"], partitions=1, role="admin")  # the job itself may not create topics
    spec_views = __import__("streaming.feature_specs", fromlist=["x"]).load_stream_spec(store).views
    opts = StreamOptions(job_name=name, topic=topic, dlq_topic=f"{topic}-dlq", checkpoint_dir=workdir / name,
                         trigger_seconds=trigger, max_offsets_per_trigger=max_offsets, starting_offsets=starting,
                         metrics_port=0, online_writer=writer,
                         offline_dirs={v.name: str(workdir / name / "offline" / v.name) for v in spec_views})
    job = StreamJob(opts, spark=spark, store=store, metrics=StreamMetrics(CollectorRegistry()))
    rec = Recorder()
    query = job.start()
    job.processor.observers.append(rec)
    return job, query, rec


def bench_sustained(spark, store, bootstrap, workdir) -> dict:
    from core.kafka_io import ensure_topics

    topic = f"bench-sustained-{uuid.uuid4().hex[:6]}"
    ensure_topics([topic], partitions=3, bootstrap=bootstrap, role="admin")
    n = SUSTAINED_EVENTS
    start_us = int((time.time() - 600) * 1e6)  # 20k events/s of event time, ending ~10 min ago... + n*50us
    t0 = time.perf_counter()
    produce(bootstrap, topic, n, None, seed=1, start_us=start_us, step_us=50)
    preload_s = time.perf_counter() - t0
    from streaming.stream_job import DEFAULT_MAX_OFFSETS_PER_TRIGGER  # the same batches as the tiled job's

    job, query, rec = _job(spark, store, topic, workdir, trigger=0.5, max_offsets=DEFAULT_MAX_OFFSETS_PER_TRIGGER)
    ok = rec.wait_for(n, timeout=600)
    job.close()
    first_start = rec.batches[0][0]
    last_end = rec.batches[-1][1]
    # throughput after the first batch (which pays the numba/arrow warm-up)
    steady = rec.batches[1:]
    steady_events = sum(b[2] for b in steady)
    steady_s = steady[-1][1] - rec.batches[0][1] if steady else float("nan")
    return {
        "events": n,
        "completed": ok,
        "batches": len(rec.batches),
        "preload_seconds": round(preload_s, 1),
        "wall_seconds_all_batches": round(last_end - first_start, 2),
        "events_per_s_all_batches": round(rec.events / (last_end - first_start), 1),
        "events_per_s_steady": round(steady_events / steady_s, 1) if steady else None,
        "mean_batch_seconds": round(float(np.mean([b[1] - b[0] for b in rec.batches])), 3),
        "max_offsets_per_trigger": DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    }


def bench_rate(spark, store, bootstrap, workdir, rate: int, seconds: float, writer: str = "pipelined") -> dict:
    from core.kafka_io import ensure_topics

    topic = f"bench-rate{rate}-{uuid.uuid4().hex[:6]}"
    ensure_topics([topic], partitions=3, bootstrap=bootstrap, role="admin")
    job, query, rec = _job(spark, store, topic, workdir, trigger=0.25, max_offsets=None, starting="latest",
                           writer=writer)
    time.sleep(8)  # first (empty) trigger done
    warm = int(rate * RATE_WARMUP_SECONDS)  # the same unmeasured warm-up as the tiled job's (tiled_rate)
    if warm:
        proc, _done = _spawn_producer(bootstrap=bootstrap, topic=topic, n=warm, rate=rate, seed=rate)
        proc.join(timeout=RATE_WARMUP_SECONDS * 4 + 60)
        rec.wait_for(warm, timeout=120)
        time.sleep(1.0)
    with rec.lock:
        rec.events, rec.batches = 0, []
        rec.record_freshness = True
    n = int(rate * seconds)
    proc, done = _spawn_producer(bootstrap=bootstrap, topic=topic, n=warm + n, first=warm, rate=rate, seed=rate)
    t0 = time.time()
    proc.join(timeout=seconds * 4 + 60)
    produce_s = time.time() - t0
    caught_up = rec.wait_for(n, timeout=90)
    job.close()
    fresh = np.concatenate(rec.freshness) if rec.freshness else np.array([])
    p = percentiles(fresh)
    return {
        "target_rate": rate,
        "produced": n,
        "achieved_produce_rate": round(n / produce_s, 1),
        "processed": rec.events,
        "caught_up": caught_up,
        "freshness_p50_s": round(p["p50"], 3),
        "freshness_p90_s": round(p["p90"], 3),
        "freshness_p99_s": round(p["p99"], 3),
        "freshness_max_s": round(p["max"], 3),
        "batches": len(rec.batches),
        "mean_batch_seconds": round(float(np.mean([b[1] - b[0] for b in rec.batches])), 3) if rec.batches else None,
        "online_writer": writer, "warmup_seconds": RATE_WARMUP_SECONDS,
    }


# -- the tiled job (streaming.stream_job) ---------------------------------------------------------------------
class TiledRecorder:
    """Per micro-batch: write time and newest event time (from the writer), input rows (from Spark's progress)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.batches: dict[int, dict] = {}
        self.record = True

    def __call__(self, last: dict) -> None:
        if self.record:
            with self.lock:
                self.batches[last["batch_id"]] = dict(last)


def _tiled_job(spark, store, topic, workdir: Path, trigger: float, max_offsets: int | None,
               starting: str = "earliest", name: str | None = None):
    from prometheus_client import CollectorRegistry

    from core.kafka_io import ensure_topics
    from streaming.metrics import StreamMetrics
    from streaming.stream_job import StreamJob, StreamOptions

    name = name or f"tiled{uuid.uuid4().hex[:6]}"
    ensure_topics([f"{topic}-dlq"], partitions=1, role="admin")  # the job itself may not create topics
    opts = StreamOptions(job_name=name, topic=topic, dlq_topic=f"{topic}-dlq", checkpoint_dir=workdir / name,
                         trigger_seconds=trigger, max_offsets_per_trigger=max_offsets, starting_offsets=starting,
                         metrics_port=0)
    job = StreamJob(opts, spark=spark, store=store, metrics=StreamMetrics(CollectorRegistry()))
    rec = TiledRecorder()
    query = job.start()
    job.writer.observers = [rec]
    return job, query, rec


def _input_rows(query) -> dict[int, tuple[int, float]]:
    """batch id -> (input rows, trigger seconds) from Spark's recent progress."""
    out = {}
    for p in query.recentProgress:
        out[int(p["batchId"])] = (int(p.get("numInputRows") or 0), (p.get("durationMs") or {}).get("triggerExecution", 0) / 1e3)
    return out


def _wait_rows(query, n: int, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sum(r for r, _ in _input_rows(query).values()) >= n:
            return True
        time.sleep(0.2)
    return False


def tiled_sustained(spark, store, bootstrap, workdir) -> dict:
    from core.kafka_io import ensure_topics

    topic = f"bench-tsus-{uuid.uuid4().hex[:6]}"
    ensure_topics([topic], partitions=3, bootstrap=bootstrap, role="admin")
    n = SUSTAINED_EVENTS
    produce(bootstrap, topic, n, None, seed=1, start_us=int((time.time() - 600) * 1e6), step_us=50)
    from streaming.stream_job import DEFAULT_MAX_OFFSETS_PER_TRIGGER

    job, query, rec = _tiled_job(spark, store, topic, workdir, trigger=0.5, max_offsets=DEFAULT_MAX_OFFSETS_PER_TRIGGER)
    ok = _wait_rows(query, n, timeout=600)
    time.sleep(1.0)
    rows = _input_rows(query)
    job.close()
    batches = sorted((b, r, rec.batches.get(b)) for b, (r, _s) in rows.items() if r > 0)
    # steady: from the end of the first data batch (JVM/numba/arrow warm-up) to the end of the last
    ends = [x[2]["write_time"] for x in batches if x[2]]
    steady_events = sum(x[1] for x in batches[1:])
    steady_s = ends[-1] - ends[0] if len(ends) > 1 else float("nan")
    return {"events": n, "completed": ok, "batches": len(batches),
            "events_per_s_steady": round(steady_events / steady_s, 1) if len(ends) > 1 else None,
            "mean_batch_seconds": round(float(np.mean([x[2]["seconds"] for x in batches if x[2]])), 3),
            "max_offsets_per_trigger": DEFAULT_MAX_OFFSETS_PER_TRIGGER}


def tiled_rate(spark, store, bootstrap, workdir, rate: int, seconds: float, history_s: float = 0.0) -> dict:
    """Freshness at a steady ``rate``: a warm-up at that rate, then ``seconds`` measured. With ``history_s``, first
    that much event time of history at the same density (stamped ``now - history_s`` .. now, sent as fast as
    possible), so the job's state is as full as after running that long (the steady state: see
    :func:`steady_history_s`)."""
    from core.kafka_io import ensure_topics
    from streaming.stream_job import job_counters

    topic = f"bench-trate{rate}-{uuid.uuid4().hex[:6]}"
    ensure_topics([topic], partitions=3, bootstrap=bootstrap, role="admin")
    job, query, rec = _tiled_job(spark, store, topic, workdir, trigger=0.25, max_offsets=None, starting="latest")
    time.sleep(8)
    history = int(rate * history_s)
    state_rows: dict = {}
    if history:
        t0 = time.time()
        proc, _done = _spawn_producer(bootstrap=bootstrap, topic=topic, n=history, rate=None, seed=rate,
                                      start_us=int((t0 - history_s) * 1e6), step_us=1e6 / rate)
        proc.join(timeout=history_s * 2 + 600)
        _wait_events(job, history, timeout=900)
        state_rows = {"history_events": history, "history_seconds": round(time.time() - t0, 1),
                      "history_late_dropped": job_counters(job.options.checkpoint()).get("late_dropped", 0)}
    # Warm-up at the same rate, not measured: a new query's first batches run in the JVM's interpreter and
    # start the Python workers (seconds each); freshness is a property of the running job.
    warm = int(rate * RATE_WARMUP_SECONDS)
    if warm:
        proc, _done = _spawn_producer(bootstrap=bootstrap, topic=topic, n=history + warm, first=history, rate=rate,
                                      seed=rate)
        proc.join(timeout=RATE_WARMUP_SECONDS * 4 + 60)
        _wait_events(job, history + warm, timeout=120)
        time.sleep(1.0)
    rec.batches.clear()
    n = int(rate * seconds)
    proc, _done = _spawn_producer(bootstrap=bootstrap, topic=topic, n=history + warm + n, first=history + warm,
                                  rate=rate, seed=rate)
    t0 = time.time()
    proc.join(timeout=seconds * 4 + 60)
    produce_s = time.time() - t0
    caught_up = _wait_events(job, history + warm + n, timeout=90)
    time.sleep(1.0)
    rows = {b: r for b, r in _input_rows(query).items() if b in rec.batches}
    state_rows.update(_state_rows(query))
    job.close()
    fresh = []
    prev_max = None
    for b in sorted(rec.batches):
        last = rec.batches[b]
        count = rows.get(b, (0, 0))[0]
        if count and last["max_ts"]:
            newest = last["max_ts"] / 1e6
            oldest = prev_max if prev_max is not None else newest
            fresh.append(last["write_time"] - np.linspace(oldest, newest, count))
            prev_max = newest
    f = np.concatenate(fresh) if fresh else np.array([])
    p = percentiles(f)
    return {"target_rate": rate, "produced": n, "achieved_produce_rate": round(n / produce_s, 1),
            "processed": int(sum(r for r, _ in rows.values())), "caught_up": caught_up,
            "freshness_p50_s": round(p["p50"], 3), "freshness_p90_s": round(p["p90"], 3),
            "freshness_p99_s": round(p["p99"], 3), "freshness_max_s": round(p["max"], 3),
            "batches": len(rec.batches), "warmup_seconds": RATE_WARMUP_SECONDS,
            "mean_batch_seconds": round(float(np.mean([b["seconds"] for b in rec.batches.values()])), 3)
            if rec.batches else None, **state_rows}


def steady_history_s(store) -> float:
    """Event time after which the job's state stops growing at a steady rate: the duplicate filter keeps an event id
    until the watermark passes its tile end plus the allowed lateness, 2 x (lateness + the coarsest tile), from the
    feature repo (12 min for the fraud repo). The tile state is full after half of that."""
    from streaming.feature_specs import load_stream_spec

    spec = load_stream_spec(store)
    return 2 * (spec.watermark_delay_us + max(v.tile_us for v in spec.views)) / 1e6


def _wait_events(job, n: int, timeout: float) -> bool:
    """Wait until the job has read ``n`` events in all (its bounded batch log's totals, any number of batches)."""
    from streaming.stream_job import job_counters

    deadline = time.time() + timeout
    while time.time() < deadline:
        if job_counters(job.options.checkpoint()).get("events_read", 0) >= n:
            return True
        time.sleep(0.2)
    return False


def _state_rows(query) -> dict:
    """Rows held by each stateful operator and the time its watermark scan took, from the last progress."""
    progress = query.lastProgress or {}
    out = {}
    for op in progress.get("stateOperators", []):
        name = "dedup" if "dedup" in str(op.get("operatorName", "")).lower() else "tiles"
        out[f"{name}_state_rows"] = int(op.get("numRowsTotal") or 0)
        out[f"{name}_eviction_ms_per_batch"] = int(op.get("allRemovalsTimeMs") or 0)
    return out


def _dir_bytes(path: Path, newer_than: float | None = None) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            if newer_than is None or st.st_mtime >= newer_than:
                total += st.st_size
    return total


def _run_tile_keys(store, id_base: int, n_users: int) -> list[bytes]:
    """The Redis tile hash keys of a run's entities (users id_base+1.., merchants id_base+1..)."""
    from core.online_store import OnlineStore
    from streaming.feature_specs import load_stream_spec
    from streaming.tile_store import tile_keys

    writer = OnlineStore.from_settings(feast_store=store)
    keys = []
    for v in load_stream_spec(store).views:
        count = n_users if v.join_key == "user_id" else N_MERCHANTS
        keys += tile_keys(writer, v, np.arange(1, count + 1, dtype=np.int64) + id_base)
    return keys


def _redis_tile_bytes(store, id_base: int, n_users: int) -> tuple[int, int]:
    """(bytes, keys) of the Redis tile hashes of this run's entities (MEMORY USAGE, every field counted)."""
    from core.settings import settings

    client = connect(settings().redis_url, role="admin")
    total = found = 0
    keys = _run_tile_keys(store, id_base, n_users)
    for lo in range(0, len(keys), 5000):
        pipe = client.pipeline(transaction=False)
        for k in keys[lo : lo + 5000]:
            pipe.memory_usage(k, samples=0)
        sizes = [x for x in pipe.execute() if x]
        total += sum(sizes)
        found += len(sizes)
    client.close()
    return total, found


def _delete_tiles(store, id_base: int, n_users: int) -> None:
    """Free the run's tile hashes (Redis has a memory cap; other benchmarks follow)."""
    from core.settings import settings

    client = connect(settings().redis_url, role="admin")
    keys = _run_tile_keys(store, id_base, n_users)
    for lo in range(0, len(keys), 5000):
        client.unlink(*keys[lo : lo + 5000])
    client.close()


def _spark_live_state_bytes(spark, checkpoint: Path, sample: int = 5000) -> int:
    """Bytes of one state version: the rows of every stateful operator in the query's latest committed version
    (Spark's state data source), times the mean size of a row's key and value as the state store holds them
    (UnsafeRow bytes, measured on up to ``sample`` rows per operator)."""
    root = next(checkpoint.glob("spark-*"), None)
    if root is None or not (root / "state").exists():
        return 0
    total = 0.0
    for op in sorted(int(d.name) for d in (root / "state").iterdir() if d.name.isdigit()):
        df = spark.read.format("statestore").option("operatorId", op).load(str(root)).select("key", "value")
        rows = df.count()
        if not rows:
            continue
        n_key, n_value = len(df.schema["key"].dataType.fields), len(df.schema["value"].dataType.fields)
        sizes = []
        for row in df.limit(sample)._jdf.queryExecution().executedPlan().executeCollect():  # copies, in the JVM
            size = row.getStruct(0, n_key).getSizeInBytes()
            sizes.append(size + (0 if row.isNullAt(1) else row.getStruct(1, n_value).getSizeInBytes()))
        total += rows * sum(sizes) / len(sizes)
    return int(total)


def _wait_no_data_batch(query, timeout: float = 60) -> bool:
    """Wait for a micro-batch without input after the last one with input: Spark's no-data batch, which evicts
    the state rows the watermark has passed (so the state holds what a running job keeps)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        rows = _input_rows(query)
        last_data = max((b for b, (n, _) in rows.items() if n), default=-1)
        if any(b > last_data and n == 0 for b, (n, _) in rows.items()):
            return True
        time.sleep(0.5)
    return False


def _spark_state_bytes(checkpoint: Path) -> int:
    """Bytes of the query's whole state folder (every RocksDB snapshot and changelog file it keeps, all
    partitions): an upper bound of one state version."""
    state = next(checkpoint.glob("spark-*/state"), None)
    return _dir_bytes(state) if state else 0


def history_events(n: int, seed: int, start_us: int, step_us: float, id_base: int, n_users: int,
                   folder: Path, until_us: int, chunk: int = 2_000_000) -> int:
    """Write the events of :func:`produce`'s sequence (same seed: same users, merchants, amounts, times) with
    event time < ``until_us`` as Parquet history files; returns how many (the first index not written)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    users = rng.integers(1, n_users + 1, n) + id_base
    merchants = rng.integers(1, N_MERCHANTS + 1, n) + id_base
    amounts = np.round(rng.gamma(2.0, 30.0, n) + 0.01, 2)
    times = start_us + (np.arange(n) * step_us).astype(np.int64)
    m = int(np.searchsorted(times, until_us))
    folder.mkdir(parents=True, exist_ok=True)
    for lo in range(0, m, chunk):
        hi = min(m, lo + chunk)
        k = hi - lo
        table = pa.table({
            "transaction_id": pa.array([f"b{i}" for i in range(lo, hi)]),
            "user_id": pa.array(users[lo:hi], pa.int64()),
            "merchant_id": pa.array(merchants[lo:hi], pa.int64()),
            "amount": pa.array(amounts[lo:hi], pa.float64()),
            "currency": pa.array(["EUR"] * k), "country": pa.array(["DE"] * k), "channel": pa.array(["online"] * k),
            "event_timestamp": pa.array(times[lo:hi], pa.timestamp("us", tz="UTC")),
        })
        pq.write_table(table, folder / f"part-{lo // chunk:04d}.parquet")
    return m


def state_after_many_events(spark, store, bootstrap, workdir, n: int, n_users: int, driver: bool) -> dict:
    """n events over 24 h of event time for n_users, then a 1,000-event micro-batch: state size and its cost.

    Driver job: all n events through Kafka. Tiled job: the events older than the last STATE_STREAM_MINUTES
    bulk-loaded with the backfill path (Redis tile hashes, the same tile code), the rest through Kafka."""
    from core.kafka_io import ensure_topics

    topic = f"bench-state-{'d' if driver else 't'}-{uuid.uuid4().hex[:6]}"
    ensure_topics([topic], partitions=3, bootstrap=bootstrap, role="admin")
    day_us = 86_400_000_000
    start_us = int(time.time() * 1e6) - day_us - 600_000_000
    start_us -= start_us % 60_000_000  # tile-aligned, so the bulk/stream cut falls on a tile edge
    step_us = day_us / n
    id_base = (uuid.uuid4().int % 10**6 + 1) * 10**6
    t0 = time.time()
    first, bulk = 0, {}
    if not driver and STATE_STREAM_MINUTES > 0:
        from streaming.backfill import run_backfill

        cut_us = start_us + day_us - int(STATE_STREAM_MINUTES * 60_000_000)
        history = workdir / f"history-{topic}"
        first = history_events(n, 17, start_us, step_us, id_base, n_users, history, cut_us)
        cut = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=cut_us)
        done = run_backfill(cut - timedelta(minutes=1), cut, spark=spark, store=store, source_path=str(history),
                            offline_dirs={v: str(workdir / f"offline-{topic}" / v) for v in
                                          ("user_txn_aggregates", "merchant_txn_aggregates")}, materialize=True)
        bulk = {"bulk_events": first, "bulk_compute_seconds": round(done.compute_seconds, 1),
                "bulk_materialize_seconds": round(done.materialize_seconds, 1)}
        shutil.rmtree(history, ignore_errors=True)
        shutil.rmtree(workdir / f"offline-{topic}", ignore_errors=True)
    produce(bootstrap, topic, n, None, seed=17, start_us=start_us, step_us=step_us, id_base=id_base, n_users=n_users,
            first=first)
    produce_s = time.time() - t0
    name = f"state{uuid.uuid4().hex[:6]}"
    if driver:
        job, query, rec = _job(spark, store, topic, workdir, trigger=1.0, max_offsets=200_000)
        ok = rec.wait_for(n, timeout=3600)
    else:
        job, query, trec = _tiled_job(spark, store, topic, workdir, trigger=1.0, max_offsets=200_000, name=name)
        ok = _wait_rows(query, n - first, timeout=1800)
    time.sleep(3)
    ckpt = job.options.checkpoint()
    if driver:
        from tests.benchmarks.baseline.state_store import StateStore

        versions = StateStore(ckpt, ()).versions()
        state_bytes = _dir_bytes(ckpt / "state" / f"v{versions[-1]:012d}")
    else:
        state_bytes = _spark_state_bytes(ckpt)
    redis_bytes, redis_keys = _redis_tile_bytes(store, id_base, n_users) if not driver else (0, 0)
    # one small micro-batch of 1,000 events right after the 24 h
    mark = time.time()
    produce(bootstrap, topic, 1000, None, seed=18, start_us=start_us + day_us, step_us=1000, id_base=id_base,
            n_users=n_users)
    if driver:
        rec.wait_for(n + 1000, timeout=300)
        small_s = rec.batches[-1][1] - rec.batches[-1][0]
    else:
        _wait_rows(query, n - first + 1000, timeout=300)
        time.sleep(1.5)
        last = max(trec.batches)
        small_s = trec.batches[last]["seconds"]
        prog = _input_rows(query)
        small_s = max(small_s, prog.get(last, (0, 0))[1])
    written = _dir_bytes(ckpt / "state", mark) if driver else _dir_bytes(next(ckpt.glob("spark-*/state")), mark)
    job.close()
    if not driver:
        _delete_tiles(store, id_base, n_users)
    return {"events": n, "users": n_users, "completed": bool(ok), "produce_seconds": round(produce_s, 1), **bulk,
            "state_mb": round(state_bytes / 1e6, 2), "redis_tile_mb": round(redis_bytes / 1e6, 2),
            "redis_tile_keys": redis_keys, "redis_tile_bytes_per_event": round(redis_bytes / n, 1),
            "small_batch_state_mb_written": round(written / 1e6, 3), "small_batch_seconds": round(small_s, 3)}


def state_per_entity(spark, store, bootstrap, workdir, per_entity: int, entities: int, driver: bool) -> dict:
    """State bytes per entity with ``per_entity`` events per entity inside the longest window (24 h)."""
    from core.kafka_io import ensure_topics

    topic = f"bench-ent-{uuid.uuid4().hex[:6]}"
    ensure_topics([topic], partitions=3, bootstrap=bootstrap, role="admin")
    n = per_entity * entities
    day_us = 86_400_000_000
    start_us = int(time.time() * 1e6) - day_us
    id_base = (uuid.uuid4().int % 10**6 + 1) * 10**6
    produce(bootstrap, topic, n, None, seed=19, start_us=start_us, step_us=(day_us - 60_000_000) / n, id_base=id_base,
            n_users=entities)
    if driver:
        job, query, rec = _job(spark, store, topic, workdir, trigger=1.0, max_offsets=200_000)
        rec.wait_for(n, timeout=900)
        time.sleep(2)
        from tests.benchmarks.baseline.state_store import StateStore

        ckpt = job.options.checkpoint()
        versions = StateStore(ckpt, ()).versions()
        total = _dir_bytes(ckpt / "state" / f"v{versions[-1]:012d}")
        job.close()
        return {"events": n, "entities": entities, "state_bytes_per_entity": round(total / entities, 1)}

    from core.settings import settings

    job, query, trec = _tiled_job(spark, store, topic, workdir, trigger=1.0, max_offsets=200_000)
    _wait_rows(query, n, timeout=900)
    evicted = _wait_no_data_batch(query)
    time.sleep(2)
    spark_folder = _spark_state_bytes(job.options.checkpoint())
    spark_bytes = _spark_live_state_bytes(spark, job.options.checkpoint())
    job.close()
    from streaming.tile_store import tile_keys

    client = connect(settings().redis_url, role="admin")
    from core.online_store import OnlineStore

    writer = OnlineStore.from_settings(feast_store=store)
    pipe = client.pipeline(transaction=False)
    for v in job.spec.views:
        ids = np.arange(1, (entities if v.join_key == "user_id" else min(entities, N_MERCHANTS)) + 1) + id_base
        for k in tile_keys(writer, v, ids):
            pipe.memory_usage(k, samples=0)
            pipe.hlen(k)
    sizes = pipe.execute()
    redis_bytes, redis_fields = sum(x or 0 for x in sizes[0::2]), sum(sizes[1::2])
    client.close()
    return {"events": n, "entities": entities, "spark_state_bytes": spark_bytes,
            "spark_state_folder_bytes": spark_folder, "redis_tile_bytes": redis_bytes,
            "redis_tile_fields": redis_fields, "spark_state_after_eviction_batch": evicted,
            "state_bytes_per_entity": round((spark_bytes + redis_bytes) / entities, 1)}


def cluster_run() -> dict:
    """The standalone-cluster integration test (tests/streaming/test_cluster.py): executors used, equal to local[2]."""
    import subprocess
    import sys

    report = Path(tempfile.mkdtemp(prefix="rtml-bench-cluster-")) / "executors.json"
    env = {**os.environ, "RTML_CLUSTER_REPORT": str(report)}
    t0 = time.time()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore",
                           "tests/streaming/test_cluster.py"], capture_output=True, text=True, env=env, timeout=1200)
    used = json.loads(report.read_text()) if report.exists() else {}
    return {"passed": done.returncode == 0, "executors_used": len([h for h, n in used.items() if n > 0]),
            "tasks_per_executor": used, "seconds": round(time.time() - t0, 1),
            "tail": done.stdout[-300:] if done.returncode else ""}


# -- the plain Feast path: consumer + same aggregates + store.push per event -----------------------------------
def baseline(store, bootstrap, topic: str, n_expected: int, seconds: float, paced: bool) -> dict:
    from feast.data_source import PushMode

    from core.kafka_io import make_consumer
    from streaming.aggregates import TS, aggregate, latest_index, merge_sorted, sort_events
    from streaming.feature_specs import load_stream_spec

    spec = load_stream_spec(store)
    push_sources = {v.name: store.get_stream_feature_view(v.name).stream_source.name for v in spec.views}
    state = {v.name: sort_events(pd.DataFrame({v.join_key: [], TS: [], **{c: [] for c in v.value_columns}}), v)
             for v in spec.views}
    consumer = make_consumer([topic], group_id=None, max_poll_records=500, role="admin")
    done, fresh = 0, []
    t0 = time.time()
    try:
        while time.time() - t0 < seconds and done < n_expected:
            for records in consumer.poll(timeout_ms=200).values():
                for r in records:
                    e = json.loads(r.value)
                    ts_us = int(pd.Timestamp(e["event_timestamp"]).value // 1000)
                    for v in spec.views:
                        one = sort_events(pd.DataFrame({v.join_key: [e[v.join_key]], TS: [ts_us],
                                                        **{c: [e[c]] for c in v.value_columns}}), v)
                        state[v.name] = merge_sorted(state[v.name], one)
                        row = aggregate(state[v.name], v, latest_index(state[v.name], one.keys))
                        row[TS] = pd.to_datetime(row[TS], unit="us", utc=True)
                        store.push(push_sources[v.name], row, to=PushMode.ONLINE)
                    fresh.append(time.time() - ts_us / 1e6)
                    done += 1
                    if time.time() - t0 >= seconds:
                        break
    finally:
        consumer.close()
    elapsed = time.time() - t0
    out = {"processed": done, "seconds": round(elapsed, 2), "events_per_s": round(done / elapsed, 1)}
    if paced:
        p = percentiles(fresh)
        out.update({"freshness_p50_s": round(p["p50"], 3), "freshness_p99_s": round(p["p99"], 3),
                    "backlog_left": n_expected - done})
    return out


def bench_baseline(store, bootstrap) -> dict:
    from core.kafka_io import ensure_topics

    topic = f"bench-base-{uuid.uuid4().hex[:6]}"
    ensure_topics([topic], partitions=3, bootstrap=bootstrap, role="admin")
    n = 20_000
    produce(bootstrap, topic, n, None, seed=7, start_us=int((time.time() - 600) * 1e6), step_us=50)
    sustained = baseline(store, bootstrap, topic, n, BASELINE_SECONDS, paced=False)
    topic5k = f"bench-base5k-{uuid.uuid4().hex[:6]}"
    ensure_topics([topic5k], partitions=3, bootstrap=bootstrap, role="admin")
    n5k = int(5000 * min(15.0, BASELINE_SECONDS))
    proc, _ = _spawn_producer(bootstrap=bootstrap, topic=topic5k, n=n5k, rate=5000, seed=9)
    at5k = baseline(store, bootstrap, topic5k, n5k, min(15.0, BASELINE_SECONDS) + 2.0, paced=True)
    proc.join(timeout=120)
    return {"sustained": sustained, "at_5k": at5k}


# -- backfill ----------------------------------------------------------------------------------------------
def bench_backfill(spark, store, workdir) -> dict:
    from streaming.backfill import run_backfill

    rng = np.random.default_rng(3)
    n = BACKFILL_EVENTS
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=2)
    ts = np.sort(rng.integers(0, int(2 * 86400 * 1e6), n)) + int(start.timestamp() * 1e6)
    df = pd.DataFrame({
        "transaction_id": [f"h{i}" for i in range(n)],
        "user_id": rng.integers(1, N_USERS + 1, n) + ID_BASE, "merchant_id": rng.integers(1, N_MERCHANTS + 1, n) + ID_BASE,
        "amount": np.round(rng.gamma(2.0, 30.0, n) + 0.01, 2), "currency": "EUR", "country": "DE", "channel": "online",
        "event_timestamp": pd.to_datetime(ts, unit="us", utc=True).astype("datetime64[us, UTC]"),
    })
    src = workdir / "history"
    src.mkdir()
    for i, part in enumerate(np.array_split(df, 4)):
        part.to_parquet(src / f"part-{i}.parquet", index=False)
    from streaming.feature_specs import load_stream_spec

    views = load_stream_spec(store).views
    out = {v.name: str(workdir / "backfill" / v.name) for v in views}
    r = run_backfill(start, end + timedelta(seconds=1), spark=spark, store=store, source_path=str(src), buckets=4,
                     offline_dirs=out, materialize=True)
    return {"events": r.events_read, "rows_written": r.rows_written, "compute_seconds": round(r.compute_seconds, 2),
            "rows_per_s": round(r.events_read / r.compute_seconds, 1),
            "feature_rows_per_s_all_views": round(sum(r.rows_written.values()) / r.compute_seconds, 1),
            "materialize_seconds": round(r.materialize_seconds, 2), "materialized": r.materialized}


def _goals(get) -> dict:
    def le(value, limit):
        return None if value is None else bool(value <= limit)

    sustained = get("sustained", "events_per_s_steady")
    p99 = get("rates", "5000", "freshness_p99_s")
    return {
        "sustained_ge_30k": None if sustained is None else bool(sustained >= 30_000),
        "freshness_p99_le_1_5s_at_5k": None if p99 is None else bool(p99 <= 1.5 and get("rates", "5000", "caught_up")),
        "small_batch_state_mb_written_le_5": le(get("state_tiled", "small_batch_state_mb_written"), 5),
        "small_batch_seconds_le_1": le(get("state_tiled", "small_batch_seconds"), 1.0),
        "state_bytes_per_entity_ratio_le_1_5": le(get("per_entity_tiled", "ratio"), 1.5),
        "cluster_executors_ge_2": (get("cluster", "executors_used") or 0) >= 2,
        "cluster_equals_local": bool(get("cluster", "passed")),
    }


class _redis_memory:
    """Raise the local Redis ``maxmemory`` for the 20 M-event state (its tile hashes take GBs), then restore it."""

    def __init__(self, wanted: str):
        self.wanted, self.saved = wanted, None

    def __enter__(self):
        import redis

        from core.settings import settings

        if settings().redis_mode != "standalone" or not self.wanted:
            return self
        client = connect(settings().redis_url, role="admin")
        try:
            self.saved = client.config_get("maxmemory")["maxmemory"]
            client.config_set("maxmemory", self.wanted)
            log.info("Redis maxmemory %s -> %s for the state run", self.saved, self.wanted)
        except redis.RedisError as exc:
            log.warning("cannot raise Redis maxmemory (%s): the state run may be refused writes", exc)
        finally:
            client.close()
        return self

    def __exit__(self, *exc):

        from core.settings import settings

        if self.saved is not None:
            client = connect(settings().redis_url, role="admin")
            client.config_set("maxmemory", self.saved)
            client.close()
        return False


def _as_admin() -> None:
    """The benchmark's jobs read and write throwaway topics, outside the stream role's ACLs: every Kafka client
    of this process authenticates as admin (as the test session does)."""
    from core.kafka_io import credentials
    from core.settings import settings

    admin = credentials("admin", settings())
    if admin is not None and not settings().kafka_auth.user:
        os.environ["RTML_KAFKA_USER"], os.environ["RTML_KAFKA_PASSWORD"] = admin


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def main() -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for quiet in ("streaming", "kafka", "py4j", "feast"):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    from core.feast_store import apply_repo, get_store
    from core.settings import settings
    from infra.stack import up
    from streaming.spark_session import build_session

    up(progress=False)
    _as_admin()
    apply_repo()
    store = get_store()
    bootstrap = settings().kafka_bootstrap
    workdir = Path(tempfile.mkdtemp(prefix="rtml-bench-stream-", dir=settings().state_dir))
    spark = build_session("rtml-bench-stream", "local[2]", shuffle_partitions=2)
    t_all = time.time()
    load_start = os.getloadavg()
    r: dict = _previous_parts() if PARTS else {}
    r.setdefault("rates", {})

    def wanted(name: str) -> bool:
        return not PARTS or name in PARTS or name.split(".")[0] in PARTS

    def part(name: str, fn, *args):
        """One section of the benchmark: a failure is recorded, the other sections still run and are written."""
        if not wanted(name):
            return None
        try:
            value = fn(*args)
        except Exception as exc:  # noqa: BLE001 - record and go on
            log.exception("%s failed", name)
            value = {"error": repr(exc)[:500]}
        value = {**value, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "load_average_after": [round(x, 2) for x in os.getloadavg()]}
        if name.startswith("rates."):
            r["rates"][name.split(".", 1)[1]] = value
        else:
            r[name] = value
        log.info("%s: %s", name, {k: v for k, v in value.items() if not isinstance(v, dict)})
        _write(_result(r, t_all, load_start, complete=False))  # a stopped run keeps its parts
        return value

    def ratio(kind: str, driver: bool) -> dict:
        few = state_per_entity(spark, store, bootstrap, workdir, 10, RATIO_ENTITIES, driver)
        many = state_per_entity(spark, store, bootstrap, workdir, 1000, RATIO_ENTITIES, driver)
        return {"10": few, "1000": many, "ratio": round(many["state_bytes_per_entity"] / few["state_bytes_per_entity"], 2)}

    try:
        part("sustained", tiled_sustained, spark, store, bootstrap, workdir)
        for rate in TILED_RATES:
            part(f"rates.{rate}", tiled_rate, spark, store, bootstrap, workdir, rate, RATE_SECONDS)
        part("steady_5k", tiled_rate, spark, store, bootstrap, workdir, 5000, RATE_SECONDS, steady_history_s(store))
        part("driver_sustained", bench_sustained, spark, store, bootstrap, workdir)
        part("driver_rate_5k", bench_rate, spark, store, bootstrap, workdir, 5000, RATE_SECONDS)
        part("per_entity_tiled", ratio, "tiled", False)
        part("per_entity_driver", ratio, "driver", True)
        part("baseline", bench_baseline, store, bootstrap)
        part("backfill", bench_backfill, spark, store, workdir)
        if wanted("state_tiled"):
            with _redis_memory(STATE_REDIS_MAXMEMORY):
                part("state_tiled", state_after_many_events, spark, store, bootstrap, workdir, STATE_EVENTS,
                     STATE_USERS, False)
        part("state_driver", state_after_many_events, spark, store, bootstrap, workdir, DRIVER_STATE_EVENTS,
             STATE_USERS, True)
    finally:
        spark.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    part("cluster", lambda: cluster_run() if not os.environ.get("RTML_BENCH_SKIP_CLUSTER") else {
        "passed": None, "executors_used": None, "skipped": "RTML_BENCH_SKIP_CLUSTER: see tests/streaming/test_cluster.py"})
    complete = all(isinstance(r.get(k), dict) and "error" not in r[k] for k in PART_NAMES if k != "rates") and all(
        "error" not in r["rates"].get(str(rate), {"error": "absent"}) for rate in TILED_RATES)
    result = _result(r, t_all, load_start, complete=complete)
    path = _write(result)
    log.info("wrote %s", path)
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, dict)}, indent=2))
    return result


def _write(result: dict) -> Path:
    """Write the result file; a run of some parts (RTML_BENCH_PARTS) keeps the whole run's machine, time and
    load figures and records its own under ``parts``."""
    if not PARTS:
        return write_result("streaming", result)
    old = read_result("streaming")
    kept = ("machine", "measured_at", "parts", "total_seconds", "load_average_at_start", "load_average_at_end",
            "uptime_at_end")
    return write_result("streaming", {**result, **{k: old[k] for k in kept if k in old}}, part=",".join(sorted(PARTS)))


def _result(r: dict, t_all: float, load_start, complete: bool) -> dict:
    """The result file's content from the sections measured so far (``complete``: all of them ran)."""
    n_label, d_label = _label(STATE_EVENTS), _label(DRIVER_STATE_EVENTS)

    def get(*path):
        node = r
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return node

    st_mb, tile_mb = get("state_tiled", "state_mb"), get("state_tiled", "redis_tile_mb")
    result = {
        "sustained_events_per_s": get("sustained", "events_per_s_steady"),
        "freshness_p50_s_at_5k": get("rates", "5000", "freshness_p50_s"),
        "freshness_p99_s_at_5k": get("rates", "5000", "freshness_p99_s"),
        "freshness_p50_s_at_5k_steady_state": get("steady_5k", "freshness_p50_s"),
        "freshness_p99_s_at_5k_steady_state": get("steady_5k", "freshness_p99_s"),
        "backfill_rows_per_s": get("backfill", "rows_per_s"),
        f"state_mb_at_{n_label}_events": st_mb,
        f"redis_tile_mb_at_{n_label}_events": tile_mb,
        f"state_plus_redis_tile_mb_at_{n_label}_events": None if st_mb is None else round(st_mb + (tile_mb or 0), 2),
        f"small_batch_state_mb_written_at_{n_label}_events": get("state_tiled", "small_batch_state_mb_written"),
        f"small_batch_seconds_at_{n_label}_events": get("state_tiled", "small_batch_seconds"),
        "state_bytes_per_entity_ratio_100x_events": get("per_entity_tiled", "ratio"),
        "cluster_executors_used": get("cluster", "executors_used"),
        "cluster_equals_local": get("cluster", "passed"),
        "baseline_sustained_events_per_s": get("baseline", "sustained", "events_per_s"),
        "baseline_freshness_p50_s_at_5k": get("baseline", "at_5k", "freshness_p50_s"),
        "baseline_freshness_p99_s_at_5k": get("baseline", "at_5k", "freshness_p99_s"),
        "driver_job_sustained_events_per_s": get("driver_sustained", "events_per_s_steady"),
        "driver_job_freshness_p99_s_at_5k": get("driver_rate_5k", "freshness_p99_s"),
        f"driver_job_state_mb_at_{d_label}_events": get("state_driver", "state_mb"),
        f"driver_job_small_batch_state_mb_written_at_{d_label}_events": get("state_driver", "small_batch_state_mb_written"),
        f"driver_job_small_batch_seconds_at_{d_label}_events": get("state_driver", "small_batch_seconds"),
        "driver_job_state_bytes_per_entity_ratio_100x_events": get("per_entity_driver", "ratio"),
        "driver_job_cluster_executors_used": 0,
        "goals": _goals(get),
        **r,
        "notes": (
            "2-core machine shared with other workloads (see load averages); Spark local[2]; the load generator runs "
            "in a separate process on the same cores. Tiled job = streaming.stream_job (tiles in the RocksDB state "
            "store, merged into Feast rows on executors); driver job = tests.benchmarks.baseline.driver_job (the former design, "
            f"baseline). Sustained: {SUSTAINED_EVENTS:,} events preloaded, both jobs at the stream job's default "
            "maxOffsetsPerTrigger, throughput after the first batch. Rates: after an unmeasured warm-up of "
            f"{RATE_WARMUP_SECONDS:g} s at the same rate (a new query's first batches run before the JIT), "
            f"{RATE_SECONDS:g} s measured; the steady-state run first sends 2 x (lateness + one tile) of event time "
            "at the same density as fast as possible, so the state is as full as in a job running for that long. Freshness of the tiled job: per batch, events interpolated between the "
            f"previous and this batch's newest event time (see module doc). State figures: {STATE_EVENTS:,} events over 24 h of event "
            f"time for {STATE_USERS:,} users; the tiled job's history older than its last {STATE_STREAM_MINUTES:g} "
            "minutes is bulk-loaded through the backfill path (same tile code, Redis tile hashes), the rest streamed "
            "through Kafka; tiled state_mb = the Spark state store folder (RocksDB snapshot + changelogs, an upper "
            "bound of one version), Redis tile hashes of the run's entities separately (redis_tile_mb, MEMORY USAGE). "
            f"Driver job: {DRIVER_STATE_EVENTS:,} events through Kafka (its 24 h raw-event state is rewritten per "
            "batch; 20 M would take hours here), one state version. Per-entity "
            f"ratio: {RATIO_ENTITIES} entities with 1,000 vs 10 events each in 24 h; tiled bytes = Spark state (one "
            "version: the rows of every stateful operator after the eviction batch, state data source, UnsafeRow "
            "bytes; the whole folder in spark_state_folder_bytes) + Redis tile hashes (MEMORY USAGE). Baseline = "
            "plain Feast store.push per event."
        ),
        "total_seconds": round(time.time() - t_all, 1),
        "complete": complete,
        "load_average_at_start": [round(x, 2) for x in load_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "uptime_at_end": _uptime(),
    }
    return result


def _previous_parts() -> dict:
    """The sections of the committed streaming.json (a partial run, RTML_BENCH_PARTS, keeps the others)."""
    from tests.benchmarks.common import RESULTS_DIR

    path = RESULTS_DIR / "streaming.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    return {k: v for k, v in old.items() if k in PART_NAMES and isinstance(v, dict)}


def _uptime() -> str:
    import subprocess

    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


if __name__ == "__main__":
    main()
