"""Per-request observations added up in the worker are written to the real metrics exactly as direct
observations would be (every bucket, sum and count), on flush."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

from bentos.metrics import STAGE_BUCKETS, Batched


def _samples(metric) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in next(iter(metric.collect())).samples
            if not s.name.endswith("_created")}


def test_batched_histogram_and_counter_equal_direct_observations_after_flush():
    reg = CollectorRegistry()
    direct = Histogram("direct_seconds", "d", buckets=STAGE_BUCKETS, registry=reg)
    parent = Histogram("via_seconds", "v", ["stage"], buckets=STAGE_BUCKETS, registry=reg)
    via = parent.labels(stage="x")
    values = [0.00005, 0.00004, 0.0001, 0.00025, 0.003, 0.0031, 0.25, 0.3, 7.0] * 3  # on, below and above bounds
    b = Batched(via)
    for v in values:
        direct.observe(v)
        b.observe(v)
    assert _samples(parent)[("via_seconds_count", (("stage", "x"),))] == 0  # nothing written yet
    b.flush()
    got = {(n.replace("via", "direct"), tuple(kv for kv in lbl if kv[0] != "stage")): v for (n, lbl), v in _samples(parent).items()}
    assert got == _samples(direct)

    counter = Counter("decisions", "c", registry=reg)
    c = Batched(counter)

    def hammer():
        for _ in range(5000):
            c.inc()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(50):
        c.flush()  # concurrent flushes lose nothing
    for t in threads:
        t.join()
    c.flush()
    assert counter._value.get() == 20_000


def test_batched_observe_many_and_observe_n_equal_one_observation_each():
    """A batch request's rows observed at once fill the same buckets, sum and count as one by one."""
    import pytest

    reg = CollectorRegistry()
    one = Histogram("one_seconds", "o", buckets=STAGE_BUCKETS, registry=reg)
    many = Histogram("many_seconds", "m", buckets=STAGE_BUCKETS, registry=reg)
    values = [0.00005, 0.00004, 0.0001, 0.00025, 0.003, 0.0031, 0.25, 0.3, 7.0] * 3
    a, b = Batched(one), Batched(many)
    for v in values:
        a.observe(v)
    for _ in range(4):
        a.observe(0.003)
    b.observe_many(values)
    b.observe_many([])
    b.observe_n(0.003, 4)
    a.flush()
    b.flush()
    got, want = _samples(many), _samples(one)
    assert {(n.replace("many", "one"), lbl) for n, lbl in got} == set(want)
    for (name, lbl), value in got.items():
        assert value == pytest.approx(want[(name.replace("many", "one"), lbl)], rel=1e-12)
    assert want[("one_seconds_count", ())] == len(values) + 4


_PID_SCRIPT = r"""
import os, sys
from prometheus_client import Counter, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import CollectorRegistry
import bentos.metrics as m

assert type(values.ValueClass).__name__ != "MutexValue" and m.cache_multiprocess_pid()
c = Counter("probe_total", "probe")
calls = []
real = os.getpid
os.getpid = lambda: calls.append(1) or real()  # updates must not ask the kernel any more
c.inc(3)
os.getpid = real
assert not calls, len(calls)
child = os.fork()
if child == 0:  # a fork still gets files of its own
    c.inc(10)
    os._exit(0)
os.waitpid(child, 0)
c.inc(1)
files = sorted(f for f in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]) if f.startswith("counter_"))
assert files == sorted([f"counter_{real()}.db", f"counter_{child}.db"]), files
total = {s.name: s.value for metric in MultiProcessCollector(CollectorRegistry()).collect() for s in metric.samples}
print(total["probe_total"])
"""


def test_multiprocess_metrics_use_a_cached_pid_and_still_notice_a_fork(tmp_path):
    """With the pid cached, a metric update makes no getpid call; a forked child still writes its own file,
    and the collector adds both processes up (3 + 1 here, 10 in the child)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _PID_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) == 14.0


def test_variant_observe_many_equals_observe_per_prediction():
    """Decisions and the variant's metrics of a batch equal those of its predictions observed one by one."""
    import pytest

    from bentos.variants import Variant

    def variant(prefix: str) -> tuple[Variant, CollectorRegistry]:
        reg = CollectorRegistry()
        v = Variant("production", "m:v1", None, ["x"], 0.5, [], "", {})
        v.decisions = ("legit", "fraud")
        v._m = {
            "latency": Batched(Histogram(f"{prefix}_latency", "l", buckets=STAGE_BUCKETS, registry=reg)),
            "score": Batched(Histogram(f"{prefix}_score", "s", buckets=[0.1, 0.5, 0.9], registry=reg)),
            "legit": Batched(Counter(f"{prefix}_legit", "c", registry=reg)),
            "fraud": Batched(Counter(f"{prefix}_fraud", "c", registry=reg)),
        }
        return v, reg

    scores = [0.01, 0.5, 0.49999, 0.93, 0.2, 0.5, 1.0]
    a, reg_a = variant("a")
    b, reg_b = variant("b")
    one = [a.observe(s, 0.0004) for s in scores]
    assert b.observe_many(scores, 0.0004) == one == ["legit", "fraud", "legit", "fraud", "legit", "fraud", "fraud"]
    for m in (*a._m.values(), *b._m.values()):
        m.flush()

    def samples(reg: CollectorRegistry, prefix: str) -> dict:
        return {s.name.replace(prefix, "", 1): s.value for metric in reg.collect() for s in metric.samples
                if not s.name.endswith("_created")}

    want, got = samples(reg_a, "a"), samples(reg_b, "b")
    assert got.keys() == want.keys() and want["_fraud_total"] == 4 and want["_legit_total"] == 3
    for name, value in want.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name
