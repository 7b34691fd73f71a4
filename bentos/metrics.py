"""Prometheus metrics of the prediction service (registered through BentoML, so they appear on its
``/metrics`` next to BentoML's own request metrics, across workers)."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left

import bentoml

STAGE_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
AGE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400)
SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)

stage_seconds = bentoml.metrics.Histogram(
    name="rtml_serving_stage_seconds",
    documentation="Time per serving stage of one request (feature_fetch, on_demand, predict).",
    labelnames=["stage"],
    buckets=STAGE_BUCKETS,
)
missing_features_total = bentoml.metrics.Counter(
    name="rtml_serving_missing_features_total",
    documentation="Features not found in the online store (unknown entity), by feature.",
    labelnames=["feature"],
)
feature_age_seconds = bentoml.metrics.Histogram(
    name="rtml_serving_feature_age_seconds",
    documentation="Age of the oldest online feature row used by a prediction (now - feature event time).",
    buckets=AGE_BUCKETS,
)
score = bentoml.metrics.Histogram(
    name="rtml_serving_score",
    documentation="Model scores served.",
    buckets=SCORE_BUCKETS,
)
redis_errors_total = bentoml.metrics.Counter(
    name="rtml_serving_redis_errors_total",
    documentation="Requests answered 503 because Redis was unreachable or too slow.",
)
prediction_log_dropped_total = bentoml.metrics.Counter(
    name="rtml_serving_prediction_log_dropped_total",
    documentation="Prediction log records dropped (queue full or Kafka send failed).",
    labelnames=["reason"],
)

# ---- per variant (production / challenger during a rollout) ---------------------------------------
VARIANT_LABELS = ["variant", "model_version"]
variant_latency_seconds = bentoml.metrics.Histogram(
    name="rtml_serving_variant_latency_seconds",
    documentation="Model scoring time per prediction, by variant (shadow: per row of a batched call).",
    labelnames=VARIANT_LABELS,
    buckets=STAGE_BUCKETS,
)
variant_score = bentoml.metrics.Histogram(
    name="rtml_serving_variant_score",
    documentation="Scores by variant (shadow scores included: logged, never returned).",
    labelnames=VARIANT_LABELS,
    buckets=SCORE_BUCKETS,
)
variant_decisions_total = bentoml.metrics.Counter(
    name="rtml_serving_variant_decisions_total",
    documentation="Decisions by variant (decision rate = fraud / all).",
    labelnames=[*VARIANT_LABELS, "decision"],
)
variant_errors_total = bentoml.metrics.Counter(
    name="rtml_serving_variant_errors_total",
    documentation="Predictions a variant failed to make (a failing challenger never fails a request).",
    labelnames=VARIANT_LABELS,
)
reloads_total = bentoml.metrics.Counter(
    name="rtml_serving_reloads_total",
    documentation="Deployment changes picked up from the registry without a restart, by result (ok, failed).",
    labelnames=["result"],
)


# ---- per-request observations, added up in the worker ----------------------------------------------------
# In BentoML's multi-process mode every prometheus_client observation takes a lock and writes an mmap'ed
# file (a histogram: its sum and one bucket): ~8 observations per request cost more than the model. The hot
# path observes into :class:`Batched` (a list increment under an uncontended lock); a daemon thread writes
# the totals into the real metric every FLUSH_S, and :class:`FlushBeforeScrape` before this worker answers
# /metrics, so a scrape of a worker sees every request it answered. prometheus_client's ``_sum``,
# ``_buckets`` and ``_upper_bounds`` (stable since 0.4) are only read here.
FLUSH_S = 0.25
_batched: dict[int, Batched] = {}
_flusher: threading.Thread | None = None
_registry_lock = threading.Lock()


class Batched:
    """``observe``/``inc`` of one histogram or counter (child), written to it in bulk by :func:`flush_all`."""

    __slots__ = ("metric", "bounds", "counts", "total", "n", "lock")

    def __init__(self, metric):
        self.metric = metric
        bounds = getattr(metric, "_upper_bounds", None)
        self.bounds = list(bounds) if bounds is not None else None
        self.counts = [0] * len(self.bounds) if self.bounds is not None else None
        self.total = 0.0
        self.n = 0
        self.lock = threading.Lock()

    def observe(self, value: float) -> None:
        i = bisect_left(self.bounds, value)  # prometheus: the first bucket with value <= bound
        with self.lock:
            self.counts[i] += 1
            self.total += value
            self.n += 1

    def observe_many(self, values: list[float]) -> None:
        """``observe`` of every value, under one lock (a batch request's rows)."""
        if not values:
            return
        bounds = self.bounds
        idx = [bisect_left(bounds, v) for v in values]
        total = sum(values)
        with self.lock:
            counts = self.counts
            for i in idx:
                counts[i] += 1
            self.total += total
            self.n += len(values)

    def observe_n(self, value: float, n: int) -> None:
        """``observe(value)`` ``n`` times."""
        i = bisect_left(self.bounds, value)
        with self.lock:
            self.counts[i] += n
            self.total += value * n
            self.n += n

    def inc(self, amount: float = 1.0) -> None:
        with self.lock:
            self.total += amount
            self.n += 1

    def flush(self) -> None:
        with self.lock:
            if not self.n:
                return
            counts, total = self.counts, self.total
            self.counts = [0] * len(counts) if counts is not None else None
            self.total, self.n = 0.0, 0
        if counts is None:
            self.metric.inc(total)
            return
        buckets = self.metric._buckets
        for i, c in enumerate(counts):
            if c:
                buckets[i].inc(c)
        self.metric._sum.inc(total)


def batched(metric) -> Batched:
    """The :class:`Batched` of a histogram/counter (child); one per metric child, flushed every FLUSH_S."""
    global _flusher
    b = _batched.get(id(metric))
    if b is None or b.metric is not metric:
        with _registry_lock:
            b = _batched[id(metric)] = Batched(metric)
            if _flusher is None:
                _flusher = threading.Thread(target=_flush_loop, name="metrics-flush", daemon=True)
                _flusher.start()
    return b


def flush_all() -> None:
    for b in list(_batched.values()):
        b.flush()


def _flush_loop() -> None:
    while True:
        time.sleep(FLUSH_S)
        try:
            flush_all()
        except Exception:  # noqa: BLE001 - a metrics hiccup must never stop the flusher
            pass


def cache_multiprocess_pid() -> bool:
    """Let prometheus_client's multiprocess values read a cached pid instead of calling ``os.getpid()``.

    In multiprocess mode (BentoML's workers) every counter, gauge or histogram update first compares
    ``os.getpid()`` with the pid its files belong to (a fork must get files of its own). ``getpid`` is a
    system call: with BentoML's request metrics that is several per request, about a tenth of a
    prediction's CPU on this VM. The pid is cached here and refreshed in a forked child
    (``os.register_at_fork``), so a fork is still noticed. The one reach into prometheus_client's
    internals: its ``process_identifier`` closure cell; if that is not where expected (another
    version), nothing changes. Returns whether the cache is in place."""
    import os

    from prometheus_client import values

    check = getattr(values.ValueClass, "_MmapedValue__check_for_pid_change", None)
    code = getattr(check, "__code__", None)
    if code is None or "process_identifier" not in code.co_freevars:
        return False
    cell = check.__closure__[code.co_freevars.index("process_identifier")]
    if getattr(cell.cell_contents, "__name__", "") == "_cached_pid":
        return True
    pid = [os.getpid()]

    def _cached_pid() -> int:
        return pid[0]

    os.register_at_fork(after_in_child=lambda: pid.__setitem__(0, os.getpid()))
    cell.cell_contents = _cached_pid
    return True


class FlushBeforeScrape:
    """Pure ASGI middleware: writes this worker's pending observations before it answers ``/metrics``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/metrics":
            flush_all()
        return await self.app(scope, receive, send)
