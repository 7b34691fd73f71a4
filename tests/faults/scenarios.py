"""The scenarios of the fault matrix. Each injects one fault into the running stack and counts what was
lost or duplicated against an independent oracle (events sent vs online values recomputed by brute
force, dead letters by source offset, acknowledged sends vs records read back, labels joined vs sent)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from tests.faults.harness import (
    REPO_ROOT,
    Outcome,
    Serving,
    StreamRun,
    fresh_ids,
    new_topic,
    online_vs_oracle,
    publish_paced,
    read_topic,
    recent_events,
    request_bodies,
    split_failures,
    wait_online,
    wait_until,
)
from tests.streaming.helpers import iso, publish


@dataclass
class Ctx:
    work: Path
    store: object  # feast store
    specs: tuple  # stream ViewSpecs
    serving: Serving | None = None
    brokers: int = 1
    load_rate: float = 50.0


def _dlq_counts(letters: list[dict]) -> tuple[Counter, int]:
    keys = Counter(f"{m['source_topic']}:{m['partition']}:{m['offset']}" for m in letters)
    return keys, sum(n - 1 for n in keys.values())


BAD_RECORDS = [b"not json {", json.dumps({"transaction_id": "bad-type", "user_id": "abc"}).encode()]


# ---- SIGKILL of the stream job at each step of a micro-batch -------------------------------------------
STEPS = {
    "before_online_write": "before_write",  # the batch's tiles computed, nothing written yet
    "after_online_write": "after_write",  # Redis tiles + Feast rows and dead letters written, batch not recorded
    "after_batch_record": "after_record",  # the job's per-batch record written, Spark's commit not yet
    "after_state_commit": None,  # Spark committed offsets and state (external SIGKILL on its commit file)
}


def stream_kill(ctx: Ctx, step: str, seed: int) -> Outcome:
    t0 = time.monotonic()
    out = Outcome(f"stream_sigkill_{step}")
    users, merchants = fresh_ids(6, 3)
    events = recent_events(seed, 400, users, merchants)
    run = StreamRun(ctx.work, out.name, max_offsets=60)
    # dead letters land in the batch that is killed; stamped like their neighbours, as a live producer does
    publish(run.topic, events[:150], raw=BAD_RECORDS,
            raw_timestamp_ms=int(events[149]["event_timestamp"].timestamp() * 1000))
    hook = STEPS[step]
    proc = run.start(kill_at=f"{hook}@2" if hook else None)
    if hook is None:
        wait_until(lambda: 2 in run.committed() or not proc.alive(), 900, 0.02)
        proc.kill(signal.SIGKILL)
    publish_paced(run.topic, events[150:], 5, 0.5)
    proc.popen.wait(900)  # a JVM start and three micro-batches: minutes on a loaded 2-core machine
    rc = proc.popen.returncode
    proc.stop()
    batches_at_kill = run.batches()
    run.start()
    lost, dup, exact, note = wait_online(ctx.store, ctx.specs, events, 900)
    letters = read_topic(run.dlq)
    run.stop()
    from streaming.stream_job import job_counters

    counters = job_counters(run.checkpoint)  # tells a loss apart: dropped as late, or never read (not caught up)
    keys, dlq_dup = _dlq_counts(letters)
    out.sent = len(events) + len(BAD_RECORDS)
    out.lost = lost + max(len(BAD_RECORDS) - len(keys), 0)
    out.duplicated = dup + dlq_dup
    killed = rc == -signal.SIGKILL
    out.detail = (f"SIGKILL at {step} of batch 2 (exit {rc}, {batches_at_kill} batches recorded), restarted from the "
                  f"checkpoint; online values {'equal' if exact else 'DIFFER from'} the oracle; "
                  f"{len(letters)} dead letters for {len(BAD_RECORDS)} bad records; job counters: events read "
                  f"{counters.get('events_read', 0)}, dropped late {counters.get('late_dropped', 0)}, duplicates "
                  f"dropped {counters.get('duplicates_dropped', 0)} {note}")
    out.seconds = time.monotonic() - t0
    return out.judge(killed and exact)


def retention_gap(ctx: Ctx, seed: int = 12) -> Outcome:
    """Records deleted from the topic (as retention does) before the stopped job read them: the restarted job
    must stop loudly (failOnDataLoss), not skip them silently. Counted: events skipped without an error."""
    t0 = time.monotonic()
    from kafka import TopicPartition

    from core.kafka_io import make_admin

    out = Outcome("stream_retention_deleted_unread_offsets")
    users, merchants = fresh_ids(4, 2)
    events = recent_events(seed, 200, users, merchants)
    run = StreamRun(ctx.work, out.name, max_offsets=1000)
    publish(run.topic, events[:100])
    proc = run.start()
    wait_until(lambda: run.batches() >= 1 or not proc.alive(), 300)
    run.stop()
    publish(run.topic, events[100:])
    admin = make_admin(role="admin")
    try:
        parts = admin.describe_topics([run.topic])[0]["partitions"]
        ends = {}
        from core.kafka_io import make_consumer

        c = make_consumer([run.topic], group_id=None, role="admin")
        try:
            tps = [TopicPartition(run.topic, p["partition_index"]) for p in parts]
            ends = c.end_offsets(tps)
        finally:
            c.close()
        admin.delete_records({tp: off for tp, off in ends.items()}, timeout_ms=30_000)
    finally:
        admin.close()
    proc = run.start()
    exited = wait_until(lambda: not proc.alive(), 240, 1.0)
    log = proc.tail(200_000)
    run.stop()
    loud = exited and proc.popen.returncode not in (0, None) and "lost" in log.lower()  # Spark: "data may have been lost"
    skipped = 0 if loud else 100
    out.sent, out.lost = len(events), skipped
    out.detail = (f"100 events read, job stopped, 100 more published then deleted unread (delete_records to the end "
                  f"offsets), restart: {'the job stopped with a data-loss error' if loud else 'the job went on: 100 events skipped silently'}"
                  f" (exit {proc.popen.returncode})")
    out.seconds = time.monotonic() - t0
    return out.judge(loud)


# ---- poison inputs (one stream job, six scenarios) -------------------------------------------------------
def poison(ctx: Ctx, seed: int = 7) -> list[Outcome]:
    t0 = time.monotonic()
    from streaming.stream_job import job_counters

    rng = np.random.default_rng(seed)
    users, merchants = fresh_ids(6, 3)
    normal = recent_events(seed, 300, users, merchants)
    fut_user, flood_user = users[0] + 50, users[0] + 51
    late_users = [users[0] + 60 + i for i in range(5)]
    past_users = [users[0] + 70 + i for i in range(3)]
    dup_users = [users[0] + 80 + i for i in range(3)]
    template = dict(normal[0])

    def ev(user: int, ts: datetime, **kw) -> dict:
        return dict(template, transaction_id=kw.pop("tid", f"p{rng.integers(1 << 62):x}"), user_id=user,
                    amount=round(float(rng.uniform(1, 300)), 2), event_timestamp=ts, **kw)

    # Event times of the poison events from the clock when they are sent (the job may take minutes to start):
    # all inside the allowed lateness, except the ones meant to be too far in the past or future.
    def poison_events(now: datetime):
        late60 = [ev(u, now - timedelta(seconds=60) + timedelta(milliseconds=i)) for i, u in enumerate(late_users * 4)]
        far_past = [ev(u, datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=i)) for i, u in enumerate(past_users)]
        # +1 day: its Kafka record carries the send time (a broker refuses record timestamps > 1 h ahead)
        far_future = json.dumps({**ev(users[1], now), "event_timestamp": iso(now + timedelta(days=1))}).encode()
        dups = [ev(dup_users[i % 3], now - timedelta(seconds=150) + timedelta(seconds=i), merchant_id=merchants[0] + 50)
                for i in range(30)]  # a merchant of their own: a double count shows here only
        flood = sorted((ev(flood_user, now - timedelta(seconds=150) + timedelta(milliseconds=int(x)))
                        for x in rng.integers(0, 120_000, 3000)), key=lambda e: e["event_timestamp"])
        good = json.loads(json.dumps({**template, "event_timestamp": iso(now - timedelta(minutes=1))}, default=str))
        wrong = [json.dumps({**good, "user_id": "abc"}).encode(), json.dumps({**good, "amount": "12,5"}).encode(),
                 json.dumps({**good, "event_timestamp": 1700000000}).encode(),
                 json.dumps({**good, "merchant_id": True}).encode()]
        return late60, far_past, far_future, dups, flood, wrong

    binary = bytes(rng.integers(0, 256, 150_000, dtype=np.uint8))
    oversized = b'{"transaction_id": "' + b"x" * 900_000 + b'"}'

    run = StreamRun(ctx.work, "poison", max_offsets=2000)
    publish(run.topic, normal)
    proc = run.start()
    wait_until(lambda: run.batches() >= 1 or not proc.alive(), 300)
    future_ok = [ev(fut_user, datetime.now(UTC) + timedelta(seconds=290))]
    publish(run.topic, future_ok)  # watermark poisoning: does it make the 60 s late events below "too late"?
    wait_until(lambda: run.batches() >= 2 or not proc.alive(), 180)
    late60, far_past, far_future, dups, flood, wrong = poison_events(datetime.now(UTC))
    publish(run.topic, late60 + far_past + dups + dups + flood, raw=[far_future, binary, oversized, *wrong])
    valid = normal + future_ok + late60 + dups + flood
    lost, dup, exact, note = wait_online(ctx.store, ctx.specs, valid, 300, only=normal + flood + late60 + future_ok)
    time.sleep(3)
    letters = read_topic(run.dlq)
    run.stop()
    counters = job_counters(run.checkpoint)
    outs = []

    def per(name: str, evs: list[dict]) -> tuple[int, int, bool, str]:
        return online_vs_oracle(ctx.store, ctx.specs, valid, only=evs)

    by_offset, dlq_dup = _dlq_counts(letters)
    reasons = Counter(m["reason"] for m in letters)

    # 1. timestamps in the future: the one inside the tolerance is a feature; 60 s late events after it too
    lf, df, ef, nf = per("future", future_ok + late60)
    fut_letter = [m for m in letters if m["reason"] == "future_timestamp"]
    o = Outcome("poison_future_timestamp", sent=len(future_ok) + len(late60) + 1, lost=lf + max(1 - len(fut_letter), 0),
                duplicated=df + max(len(fut_letter) - 1, 0))
    o.detail = (f"+290 s event (inside the 300 s tolerance) then {len(late60)} events 60 s late: online values "
                f"{'equal' if ef else 'DIFFER from'} the oracle {nf}; +1 day event -> {len(fut_letter)} dead letter(s)")
    outs.append(o.judge(ef))
    # 2. far past: dropped as too late, and counted (nothing silent)
    dropped = int(counters.get("late_dropped", 0))
    o = Outcome("poison_far_past_timestamp", sent=len(far_past), lost=max(len(far_past) - dropped, 0),
                duplicated=max(dropped - len(far_past), 0))
    o.detail = f"{len(far_past)} events of 2020 after the watermark passed: {dropped} counted as dropped late (rtml_stream_late_events_total)"
    outs.append(o.judge())
    # 3. oversized and binary records: one bounded dead letter each, the original size and hash kept
    big = [m for m in letters if m.get("raw_bytes", 0) >= 150_000]
    sizes_ok = all(len(json.dumps(m)) < 2 * 65536 + 4096 and m.get("raw_truncated") for m in big)
    hashes = {m.get("raw_sha256") for m in big}
    o = Outcome("poison_oversized_and_binary", sent=2, lost=max(2 - len(big), 0), duplicated=max(len(big) - 2, 0))
    o.detail = (f"150 KB binary + 900 KB record -> {len(big)} dead letters, bounded: {sizes_ok}, "
                f"hashes match: {hashes == {hashlib.sha256(binary).hexdigest(), hashlib.sha256(oversized).hexdigest()}}")
    outs.append(o.judge(sizes_ok))
    # 4. wrong types
    wrong_letters = [m for m in letters if base64.b64decode(m["raw_base64"]) in set(wrong)]
    o = Outcome("poison_wrong_types", sent=len(wrong), lost=max(len(wrong) - len(wrong_letters), 0),
                duplicated=max(len(wrong_letters) - len(wrong), 0))
    o.detail = f"{len(wrong)} records with a wrong type -> dead letters {sorted(Counter((m['reason'], m['field']) for m in wrong_letters).items())}"
    outs.append(o.judge())
    # 5. duplicate transaction ids: the oracle counts each transaction once
    ld, dd, ed, nd = per("dups", dups)
    o = Outcome("poison_duplicate_transaction_ids", sent=2 * len(dups), lost=ld, duplicated=dd)
    o.detail = f"{len(dups)} transactions each sent twice: online counts vs one per transaction id {nd}"
    outs.append(o.judge(ed))
    # 6. a flood of one key, with everything else flowing
    lk, dk, ek, nk = per("flood", flood)
    o = Outcome("poison_flood_one_key", sent=len(flood) + len(normal), lost=max(lk, lost), duplicated=max(dk, dup))
    o.detail = (f"{len(flood)} events of one user in one batch beside {len(normal)} others: flood key "
                f"{'exact' if ek else 'DIFFERS'} {nk}; the other entities exact: {exact} {note}; dead letters by reason "
                f"{dict(reasons)}, repeated letters {dlq_dup}; stream restarts 0 (exit {proc.popen.returncode})")
    outs.append(o.judge(ek and exact))
    for o in outs:
        o.seconds = round((time.monotonic() - t0) / len(outs), 1)
    return outs


# ---- Kafka ------------------------------------------------------------------------------------------------
def _leader_node(topic: str) -> int:
    from core.kafka_io import make_admin

    admin = make_admin(role="admin")
    try:
        [described] = admin.describe_topics([topic])
        return {p["partition_index"]: p["leader_id"] for p in described["partitions"]}[0]
    finally:
        admin.close()


def _kill_kafka_node(topic: str) -> tuple[int, int]:
    from infra import kafka_broker

    nodes = kafka_broker.nodes()
    node_id = _leader_node(topic) if len(nodes) > 1 else nodes[0].id
    node = next(n for n in nodes if n.id == node_id)
    pid = int(node.paths.pid_file.read_text().strip())
    os.kill(pid, signal.SIGKILL)
    return node_id, pid


def _restart_kafka() -> None:
    from infra import kafka_broker

    kafka_broker.start(progress=False)


def flowing(ctx: Ctx, name: str, fault, recover, seed: int, hold_s: float = 8.0) -> Outcome:
    """Events flow into the stream job and requests are served while ``fault()`` hits; ``recover()`` after
    ``hold_s``. Counts online values vs the oracle and failed requests during and after the fault."""
    t0 = time.monotonic()
    out = Outcome(name)
    users, merchants = fresh_ids(8, 4)
    events = recent_events(seed, 600, users, merchants)
    run = StreamRun(ctx.work, name, max_offsets=100)
    publish(run.topic, events[:60])
    proc = run.start()
    wait_until(lambda: run.batches() >= 1 or not proc.alive(), 300)
    load = ctx.serving.load(request_bodies(users, merchants), ctx.load_rate, 600, name) if ctx.serving else None
    marks: dict[str, float] = {}
    notes: list[str] = []

    def during(i: int) -> None:
        if i == 2:
            marks["fault"] = time.time()
            notes.append(str(fault(run.topic)))
            time.sleep(hold_s)
            recover()
            marks["recovered"] = time.time()
        run.ensure_running()

    try:
        publish_paced(run.topic, events[60:], 8, 1.0, during)
        lost, dup, exact, note = wait_online(ctx.store, ctx.specs, events, 900, also=run.ensure_running)
        time.sleep(5)  # requests after the recovery
    finally:  # a scenario that raises leaves no stream job or load behind
        run.stop()
        res = load.result() if load is not None else None
    if load is not None:
        sent, out.failed_requests_faulted, out.failed_requests_after_recovery = split_failures(
            res, marks["fault"], marks["recovered"])
        notes.append(f"{sent} requests at {ctx.load_rate:.0f}/s; first failures {res['failures'][:3]}")
    out.sent, out.lost, out.duplicated = len(events), lost, dup
    out.detail = (f"fault {notes[0]} for {hold_s:.0f} s; stream job started {run.starts} time(s); online values "
                  f"{'equal' if exact else 'DIFFER from'} the oracle {note}; " + "; ".join(notes[1:]))
    out.seconds = time.monotonic() - t0
    return out.judge(exact)


def kafka_sigkill(ctx: Ctx, seed: int) -> Outcome:
    def fault(topic):
        node, pid = _kill_kafka_node(topic)
        return f"SIGKILL of Kafka node {node} (pid {pid}, leader of partition 0, {ctx.brokers} node(s))"

    return flowing(ctx, "kafka_broker_sigkill", fault, _restart_kafka, seed)


def kafka_lose_one_acked(ctx: Ctx, n: int = 6000) -> Outcome:
    """acks=all + idempotence on a 3-node cluster (min.insync.replicas 2): one node SIGKILLed mid-send and
    not restarted until the end; every acknowledged record is read back once."""
    t0 = time.monotonic()
    from core.kafka_io import make_producer

    out = Outcome("kafka_3broker_lose_one_broker", sent=n)
    topic = new_topic("acked", 3)
    producer = make_producer(role="admin", linger_ms=5)
    acked: set[int] = set()
    failed = 0
    futures = []
    node = None
    for i in range(n):
        if i == n // 3:
            node = _kill_kafka_node(topic)
        try:
            futures.append((i, producer.send(topic, key=str(i), value={"i": i})))
        except Exception:  # noqa: BLE001 - not accepted: not acknowledged
            failed += 1
        if i % 500 == 0:
            time.sleep(0.05)
    producer.flush(timeout=120)
    for i, f in futures:
        try:
            f.get(timeout=60)
            acked.add(i)
        except Exception:  # noqa: BLE001 - not acknowledged: the sender knows, nothing is lost silently
            failed += 1
    producer.close(timeout=10)
    got = Counter(r["i"] for r in read_topic(topic, timeout_s=60))
    _restart_kafka()
    out.lost = len(acked - set(got))
    out.duplicated = sum(c - 1 for c in got.values() if c > 1)
    out.detail = (f"SIGKILL of node {node[0]} (leader of partition 0) after {n // 3} sends: {len(acked)} acknowledged, "
                  f"{failed} not (the producer knew), {len(got)} distinct read back")
    out.seconds = time.monotonic() - t0
    return out.judge(len(acked) > 0)


# ---- Redis -------------------------------------------------------------------------------------------------
def _redis_pid() -> int:
    from infra import redis_server

    pid = redis_server.running_pid()
    if pid is None:
        raise RuntimeError("the fault matrix needs the redis-server started by rtml (pid file)")
    return pid


def redis_sigkill(ctx: Ctx, seed: int) -> Outcome:
    from core.settings import settings
    from infra.stack import start_redis

    def fault(_topic):
        pid = _redis_pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", 5, 0.05)
        return f"SIGKILL of redis-server (pid {pid}, append-only file {'on' if settings().redis_appendonly else 'OFF'})"

    return flowing(ctx, "redis_sigkill", fault, lambda: start_redis(), seed)


def redis_slow(ctx: Ctx, seed: int, stall_s: float = 4.0) -> Outcome:
    def fault(_topic):
        pid = _redis_pid()
        os.kill(pid, signal.SIGSTOP)
        marks["pid"] = pid
        return f"redis-server stalled (SIGSTOP, pid {pid}): every command waits"

    marks: dict = {}
    return flowing(ctx, "redis_slow", fault, lambda: os.kill(marks["pid"], signal.SIGCONT), seed, hold_s=stall_s)


# ---- the monitor --------------------------------------------------------------------------------------
def monitor_sigkill(ctx: Ctx, n: int = 1200) -> Outcome:
    """Predictions consumed (windows evaluated, offsets committed), then half the labels, SIGKILL, the other
    half, restart: every prediction is joined with its label exactly once."""
    t0 = time.monotonic()

    from tests.faults.harness import Proc
    from tests.fixtures.predictions import label_messages, prediction_messages
    from tests.monitoring.test_monitor_kafka import _produce

    out = Outcome("monitor_sigkill_labels_outstanding", sent=n)
    from core import model_store

    ref = model_store.reference_sample(model_store.production_model())
    features = model_store.production_model().info.metadata["features"]
    frame = ref.sample(n, replace=True, random_state=3).reset_index(drop=True)
    frame["is_fraud"] = (np.random.default_rng(3).random(n) < 0.3).astype(int)
    preds = prediction_messages(frame[[*features, "score", "is_fraud"]], start_ts=time.time(), features=features)
    labels = label_messages(preds, frame)
    p_topic, l_topic, a_topic = new_topic("preds", 1), new_topic("labels", 1), new_topic("alerts", 1)
    group = f"faults-{p_topic[-8:]}"
    from core.settings import settings

    state = settings().state_dir  # the registry's production model is the monitor's reference
    (state / "monitor" / "state.json").unlink(missing_ok=True)  # this scenario's pairs only
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "rtml.cli", "monitor", "--window-size", "400", "--min-window", "100",
           "--perf-window", str(2 * n), "--metrics-port", "0", "--predictions-topic", p_topic, "--labels-topic",
           l_topic, "--alerts-topic", a_topic, "--no-retrain", "--no-reports", "--group", group]

    def committed(topic: str) -> int:
        from kafka import TopicPartition

        from core.kafka_io import make_admin

        admin = make_admin(role="admin")
        try:
            offsets = admin.list_consumer_group_offsets(group)
        except Exception:  # noqa: BLE001 - group not there yet
            return 0
        finally:
            admin.close()
        return sum(o.offset for tp, o in offsets.items() if tp.topic == topic and isinstance(tp, TopicPartition))

    _produce(p_topic, preds)
    proc = Proc(cmd, ctx.work / "monitor-1.log", env)
    wait_until(lambda: committed(p_topic) >= n - 400 or not proc.alive(), 180)
    _produce(l_topic, labels[: n // 2])
    wait_until(lambda: committed(l_topic) >= n // 2 or not proc.alive(), 60)
    proc.kill(signal.SIGKILL)
    proc.popen.wait(30)
    proc.stop()
    _produce(l_topic, labels[n // 2:])
    proc = Proc(cmd, ctx.work / "monitor-2.log", env)
    path = state / "monitor" / "state.json"

    def pairs() -> int:
        try:
            return len(json.loads(path.read_text()).get("pairs", []))
        except (OSError, ValueError):
            return 0

    wait_until(lambda: committed(l_topic) >= n and pairs() >= n, 120)
    time.sleep(6)
    proc.stop()
    joined = pairs()
    out.lost, out.duplicated = max(n - joined, 0), max(joined - n, 0)
    out.detail = (f"{n} predictions consumed, {n // 2} labels consumed, SIGKILL, {n - n // 2} more labels, restart: "
                  f"{joined} (score, label) pairs in the saved state (oracle {n})")
    out.seconds = time.monotonic() - t0
    return out.judge()


# ---- disk full on the offline store ---------------------------------------------------------------------
DISK_FULL_CHILD = """
import json, resource, sys
import pandas as pd
from streaming.feature_specs import load_stream_spec
from core.feast_store import get_store
from streaming.offline_writer import write_offline
limit, folder, rows_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]
spec = load_stream_spec(get_store()).views[0]
rows = pd.read_parquet(rows_file)
if limit:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG
done = []
for i, part in enumerate([rows.iloc[j:j + 2000] for j in range(0, len(rows), 2000)]):
    try:
        write_offline(spec, part, f"part-{i:03d}", folder)
        done.append(i)
    except OSError as exc:
        print(json.dumps({"done": done, "failed": i, "error": f"{type(exc).__name__}: {exc}"}))
        sys.exit(3)
print(json.dumps({"done": done}))
"""


def offline_disk_full(ctx: Ctx) -> Outcome:
    """The offline writer with its file size capped (RLIMIT_FSIZE, as `ulimit -f`: no root needed for a
    small filesystem) fails mid-file like a full disk; the store keeps no partial or temporary file, and the
    rerun after space is freed holds every row once."""
    t0 = time.monotonic()
    import pandas as pd

    from tests.streaming.helpers import read_offline

    spec = ctx.specs[0]
    rng = np.random.default_rng(11)
    n = 12_000
    rows = pd.DataFrame({spec.join_key: rng.integers(1, 10**6, n),
                         "event_timestamp": np.sort(rng.integers(1_700_000_000_000_000, 1_700_086_400_000_000, n))})
    for a in spec.aggs:
        rows[a.name] = rng.integers(0, 100, n) if a.is_int else rng.random(n)
    rows_file = ctx.work / "disk-full-rows.parquet"
    rows.to_parquet(rows_file)
    folder = ctx.work / "offline-disk-full"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def child(limit: int) -> tuple[int, dict]:
        r = subprocess.run([sys.executable, "-c", DISK_FULL_CHILD, str(limit), str(folder), str(rows_file)],
                           capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=300)
        last = (r.stdout.strip().splitlines() or ["{}"])[-1]
        return r.returncode, json.loads(last) if last.startswith("{") else {"stderr": r.stderr[-500:]}

    first = child(0)  # learn a file size, then cap below it for a rerun
    sizes = sorted(p.stat().st_size for p in folder.glob("*.parquet"))
    for p in folder.glob("*"):
        p.unlink()
    # the cap admits the small files of the first parts only if the cap is above them: make the last part bigger
    cap = sizes[len(sizes) // 2] - 1 if sizes else 4096
    rc_full, info = child(cap)
    leftovers = [p.name for p in folder.iterdir() if not p.name.endswith(".parquet")]
    readable = True
    try:
        partial = read_offline(folder)
    except Exception:  # noqa: BLE001 - a torn parquet file
        readable, partial = False, pd.DataFrame()
    rc_rerun, _ = child(0)
    final = read_offline(folder)
    key = [spec.join_key, "event_timestamp"]
    merged = Counter(map(tuple, final[key].astype("int64").to_numpy().tolist())) if len(final) else Counter()
    want = Counter(map(tuple, rows[key].to_numpy().tolist()))
    out = Outcome("offline_disk_full", sent=n)
    out.lost = sum(max(c - merged.get(k, 0), 0) for k, c in want.items())
    out.duplicated = sum(max(c - want.get(k, 0), 0) for k, c in merged.items())
    out.detail = (f"writer capped at {cap} bytes per file (RLIMIT_FSIZE): exit {rc_full}, {info.get('error', info)}; "
                  f"store readable during the fault: {readable} ({len(partial)} complete rows), files left that are not "
                  f"parquet: {leftovers}; rerun exit {rc_rerun}: {len(final)} rows for {n} (first run {first[0]})")
    out.seconds = time.monotonic() - t0
    return out.judge(rc_full != 0 and readable and not leftovers and rc_rerun == 0)


# ---- soak ---------------------------------------------------------------------------------------------------
def soak(ctx: Ctx, rate: float = 500.0, duration_s: float = 600.0, seed: int = 99) -> Outcome:
    """The prediction service held at ``rate`` requests/s for ``duration_s`` while the stream job runs: no
    failed request, RSS growth (after a 30 s warm-up) under 10 %."""
    t0 = time.monotonic()
    out = Outcome("soak_500rps_10min")
    users, merchants = fresh_ids(50, 10)
    events = recent_events(seed, 3000, users, merchants)
    run = StreamRun(ctx.work, "soak", max_offsets=200)
    run.start()
    load = ctx.serving.load(request_bodies(users, merchants, 1000, seed), rate, duration_s + 30, "soak", connections=16)
    time.sleep(30)
    rss0 = ctx.serving.rss_bytes()
    publish_paced(run.topic, events, 30, duration_s / 30 - 0.1)
    rss1 = ctx.serving.rss_bytes()
    res = load.result()
    lost, dup, exact, note = wait_online(ctx.store, ctx.specs, events, 120)
    run.stop()
    sent = sum(ok + bad for ok, bad in res["buckets"].values())
    failed = sum(bad for _, bad in res["buckets"].values())
    span = res["end"] - res["start"]
    growth = (rss1 - rss0) / rss0 if rss0 else float("nan")
    out.sent, out.lost, out.duplicated = sent, lost, dup
    out.failed_requests_after_recovery = failed
    out.extra = {"achieved_rps": round(sent / span, 1), "rss_start_mb": round(rss0 / 2**20, 1),
                 "rss_end_mb": round(rss1 / 2**20, 1), "rss_growth": round(growth, 4)}
    out.detail = (f"{sent} requests in {span:.0f} s ({sent / span:.0f}/s offered {rate:.0f}/s), {failed} failed "
                  f"{res['failures'][:3]}; RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MB ({growth:+.1%}); stream "
                  f"online values {'equal' if exact else 'DIFFER from'} the oracle {note}")
    out.seconds = time.monotonic() - t0
    return out.judge(exact and growth < 0.10 and sent / span >= 0.95 * rate)
