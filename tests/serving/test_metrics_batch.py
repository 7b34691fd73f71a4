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
