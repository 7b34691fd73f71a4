"""The fault matrix's machinery: processes it starts and kills by pid, load, and the oracles it counts against.

Everything runs against the real local stack of the current settings (Kafka, redis-server, `rtml stream`
on local Spark, `bentoml serve`, `rtml monitor`). Every process started here is stopped here, by pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from tests.streaming.helpers import make_events, oracle, publish, view_aggregations

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    """One scenario's counted result (a row of reliability.json)."""

    name: str
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    failed_requests_faulted: int = 0
    failed_requests_after_recovery: int = 0
    passed: bool = False
    detail: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def judge(self, also: bool = True) -> Outcome:
        self.passed = bool(also and self.lost == 0 and self.duplicated == 0 and self.failed_requests_after_recovery == 0)
        return self

    def row(self) -> dict:
        out = asdict(self)
        if not out["extra"]:
            del out["extra"]
        return out


def wait_until(pred: Callable[[], bool], timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval_s)
    return pred()


class Proc:
    """A child process in its own session, logged to a file; killed or stopped by pid (its process group)."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None):
        self.cmd, self.log = cmd, log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      cwd=REPO_ROOT, env=env or os.environ.copy(), start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float = 60.0) -> int | None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(10)
        else:
            self.kill(signal.SIGKILL)  # its children (Spark's Python workers) too
        self._out.close()
        return self.popen.returncode

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


def new_topic(prefix: str, partitions: int = 2) -> str:
    from core.kafka_io import ensure_topics

    name = f"faults-{prefix}-{uuid.uuid4().hex[:8]}"
    ensure_topics([name], partitions=partitions, role="admin")
    return name


# ---- the stream job -----------------------------------------------------------------------------------
@dataclass
class StreamRun:
    """`rtml stream` on its own topic and checkpoint (restartable: same topic and checkpoint)."""

    work: Path
    name: str
    topic: str = ""
    dlq: str = ""
    max_offsets: int = 100
    proc: Proc | None = None
    starts: int = 0

    def __post_init__(self):
        self.topic = self.topic or new_topic(f"{self.name}-txns")
        self.dlq = self.dlq or new_topic(f"{self.name}-dlq", 1)
        self.checkpoint = self.work / self.name / "checkpoint"

    def start(self, kill_at: str | None = None) -> Proc:
        env = os.environ.copy()
        env.pop("RTML_FAULT_KILL_AT", None)
        if kill_at:
            env["RTML_FAULT_KILL_AT"] = kill_at
        cmd = [sys.executable, "-m", "rtml.cli", "stream", "--job-name", self.name, "--topic", self.topic,
               "--dlq-topic", self.dlq, "--checkpoint-dir", str(self.checkpoint), "--trigger-seconds", "0.5",
               "--max-offsets-per-trigger", str(self.max_offsets), "--metrics-port", "0", "--master", "local[2]"]
        self.starts += 1
        self.proc = Proc(cmd, self.work / self.name / f"stream-{self.starts}.log", env)
        return self.proc

    def batches(self) -> int:
        folder = self.checkpoint / "batches"
        return len(list(folder.glob("*.json"))) if folder.exists() else 0

    def committed(self) -> list[int]:
        """Micro-batches whose offsets and state Spark has committed (its commit log)."""
        out = []
        for d in self.checkpoint.glob("spark-*/commits"):
            out += [int(p.name) for p in d.iterdir() if p.name.isdigit()]
        return sorted(out)

    def ensure_running(self) -> bool:
        """Restart the job if it exited (what a supervisor does); True if it had to."""
        if self.proc is not None and not self.proc.alive():
            self.proc.stop()
            self.start()
            return True
        return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def fresh_ids(n_users: int, n_merchants: int) -> tuple[list[int], list[int]]:
    from tests.streaming.helpers import fresh_id_base

    base = fresh_id_base()
    return [base + i for i in range(n_users)], [base + 500 + i for i in range(n_merchants)]


def recent_events(seed: int, n: int, users: list[int], merchants: list[int], minutes: float = 40.0) -> list[dict]:
    """``n`` valid events in the last ``minutes`` (minus 5): inside every view's longest count window."""
    rng = np.random.default_rng(seed)
    start = datetime.now(UTC) - timedelta(minutes=minutes + 5)
    return make_events(rng, n, users, merchants, start, timedelta(minutes=minutes))


def publish_paced(topic: str, events: list[dict], chunks: int, pause_s: float, during: Callable[[int], None] | None = None):
    """Publish in ``chunks`` (time order), calling ``during(i)`` after chunk i (the moment to inject a fault)."""
    size = max(1, -(-len(events) // chunks))
    for i in range(chunks):
        part = events[i * size:(i + 1) * size]
        if part:
            publish_retrying(topic, part)
        if during is not None:
            during(i)
        time.sleep(pause_s)


def publish_retrying(topic: str, events: list[dict], attempts: int = 5) -> None:
    """The helper's publish (acks=all, idempotent); a send that fails on a broker loss is sent again."""
    for attempt in range(attempts):
        try:
            publish(topic, events)
            return
        except Exception:  # noqa: BLE001 - broker failing over
            if attempt == attempts - 1:
                raise
            time.sleep(2)


# ---- oracles ------------------------------------------------------------------------------------------
def count_agg(spec):
    """The view's count aggregation with the longest window (every event of the scenario is inside it)."""
    counts = [a for a in spec.aggs if a.function == "count"]
    return max(counts, key=lambda a: a.window_us) if counts else None


def online_vs_oracle(store, specs, events: list[dict], only: list[dict] | None = None) -> tuple[int, int, bool, str]:
    """(lost, duplicated, exact, detail): events missing from / counted twice in the online counts of the
    entities (each event is in every view: the view that misses most), and whether every online value
    equals the brute-force oracle over ``events``.
    ``only``: check just the entities of these events (each view's join key), the oracle still over all."""
    from tests.streaming.helpers import assert_rows_equal
    from tests.streaming.test_stream_online import online_values

    lost = dup = 0
    exact, notes = True, []
    for spec in specs:
        keys = sorted({e[spec.join_key] for e in (events if only is None else only)})
        want = {k: row for (k, _t), row in oracle(events, spec.join_key, view_aggregations(spec)).items() if k in keys}
        got = online_values(store, spec, keys)
        agg = count_agg(spec)
        if agg is not None:
            diffs = [int(got[k][agg.name] or 0) - int(want[k][agg.name]) for k in keys]
            lost = max(lost, sum(max(-d, 0) for d in diffs))
            dup = max(dup, sum(max(d, 0) for d in diffs))
        try:
            assert_rows_equal(want, got, spec.name)
        except AssertionError as exc:
            exact = False
            notes.append(str(exc)[:300])
    return lost, dup, exact, "; ".join(notes)


def wait_online(store, specs, events: list[dict], timeout_s: float, also: Callable[[], None] | None = None,
                only: list[dict] | None = None):
    """Poll until the online values equal the oracle (or timeout); ``also`` runs each poll (supervision)."""
    result = online_vs_oracle(store, specs, events, only)
    deadline = time.monotonic() + timeout_s
    while not result[2] and time.monotonic() < deadline:
        if also is not None:
            also()
        time.sleep(2)
        try:
            result = online_vs_oracle(store, specs, events, only)
        except Exception as exc:  # noqa: BLE001 - Redis restarting
            result = (0, 0, False, f"read failed: {exc}")
    return result


def read_topic(topic: str, timeout_s: float = 60.0, value=json.loads) -> list:
    """Every record of ``topic`` from the start up to its end offsets at the call (not "until idle": a slow
    first fetch on a loaded machine must not read as an empty topic)."""
    from kafka import TopicPartition

    from core.kafka_io import make_consumer

    consumer = make_consumer([topic], group_id=None, role="admin")
    out: list = []
    deadline = time.monotonic() + timeout_s
    try:
        consumer.unsubscribe()
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if not parts:
                time.sleep(0.2)
        assert parts, f"no partitions known for {topic} within {timeout_s} s"
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic}: end offsets {ends} not reached within {timeout_s} s"
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(value(r.value) if value else r for r in records)
    finally:
        consumer.close()
    return out


# ---- serving ------------------------------------------------------------------------------------------
class Serving:
    """`bentoml serve` of the production model on a port of the 3300-3399 range, and paced load against it."""

    def __init__(self, work: Path, port: int):
        self.work, self.port = work, port
        self.pid: int | None = None

    def start(self) -> None:
        from bentos import auth
        from bentos.commands import serve

        # the load's key (API keys are on by default): no rate limit within reach of the matrix
        self.api_key = auth.create_key("faults", ["predict"], rate_per_s=1e9)
        self.pid, self.url = serve.start_detached("prediction", "127.0.0.1", self.port, workers=1, timeout=180)

    def stop(self) -> None:
        from bentos.commands import serve

        serve.stop(self.port)

    def rss_bytes(self) -> int:
        from bentos.commands.serve import descendants

        total = 0
        for pid in [self.pid, *descendants(self.pid)] if self.pid else []:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def load(self, bodies: list[dict], rate: float, duration_s: float, name: str, connections: int = 8) -> Load:
        return Load(self, bodies, rate, duration_s, self.work / f"load-{name}", connections)


class Load:
    """A running :mod:`tests.faults.pacer`; :meth:`result` stops it and reads its per-second counts."""

    def __init__(self, serving: Serving, bodies: list[dict], rate: float, duration_s: float, stem: Path, connections: int):
        stem.parent.mkdir(parents=True, exist_ok=True)
        self.bodies_file, self.out_file = stem.with_suffix(".bodies.json"), stem.with_suffix(".json")
        self.bodies_file.write_text(json.dumps(bodies))
        self.proc = Proc([sys.executable, "-m", "tests.faults.pacer", "127.0.0.1", str(serving.port), "/predict",
                          str(rate), str(duration_s), str(connections), str(self.bodies_file), str(self.out_file)],
                         stem.with_suffix(".log"), {**os.environ, "RTML_API_KEY": serving.api_key})

    def result(self) -> dict:
        if self.proc.alive():
            self.proc.kill(signal.SIGTERM)
        self.proc.popen.wait(60)
        self.proc.stop()
        return json.loads(self.out_file.read_text())


def split_failures(result: dict, fault_start: float, recovered: float, grace_s: float = 2.0) -> tuple[int, int, int]:
    """(requests sent, failed while faulted [fault_start, recovered + grace], failed after that)."""
    sent = faulted = after = 0
    for sec, (ok, bad) in result["buckets"].items():
        sec = int(sec)
        sent += ok + bad
        if sec + 1 < fault_start:
            after += 0 if not bad else bad  # before the fault: counted with "after" (the service must be healthy)
        elif sec <= recovered + grace_s:
            faulted += bad
        else:
            after += bad
    return sent, faulted, after


def request_bodies(users: list[int], merchants: list[int], n: int = 200, seed: int = 0) -> list[dict]:
    """Valid requests of the served feature service for these entities (fields from its request spec)."""
    from bentos.request_schema import request_spec

    spec = request_spec()
    rng = np.random.default_rng(seed)
    bodies = []
    for i in range(n):
        body = {}
        for f in spec.fields:
            if f.name == spec.id_field:
                body[f.name] = f"faults-{seed}-{i}"
            elif f.name in spec.entity_keys:
                pool = users if f.name == "user_id" else merchants
                body[f.name] = int(pool[i % len(pool)])
            elif f.kind == "float64":
                body[f.name] = round(float(rng.uniform(1, 500)), 2)
            elif f.kind == "string":
                body[f.name] = "DE"
            elif f.kind == "bool":
                body[f.name] = False
            else:
                body[f.name] = int(rng.integers(1, 1000))
        bodies.append(body)
    return bodies
