"""Online fraud scoring on BentoML: request-time features from Redis, XGBoost, a prediction log.

Per request: one pipelined Redis round trip reads the model's online features in Feast's own storage
format (see :mod:`bentos.feature_plan`), the on-demand features are computed from the request with the
feature repo's own body, XGBoost scores with ``inplace_predict`` (one thread), and the prediction is
queued for the Kafka ``predictions`` topic (never blocking). Everything that can be resolved once
(feature references, field hashes, the feature order, metric children) is resolved at start-up.

Endpoints: ``POST /predict``, ``POST /predict_batch``; BentoML's ``/healthz`` ``/livez`` (process
alive), ``/readyz`` (model loaded and Redis answers) and ``/metrics``.

Settings (environment): ``RTML_SERVING_WORKERS`` (1), ``RTML_SERVING_MAX_BATCH`` (256),
``RTML_SERVING_REDIS_TIMEOUT_MS`` (100), ``RTML_SERVING_LOG_QUEUE`` (10000), ``RTML_SERVING_MODEL_TAG``
(default: the registry's production model), ``RTML_SERVING_SWITCH_INTERVAL_MS`` (0.5: GIL switch
interval), ``RTML_SERVING_PROFILE`` (path: cProfile the worker, for
developers).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import sys
import time
import uuid
from datetime import datetime
from typing import Any

from core.model_store import bentoml_home

bentoml_home()

import bentoml  # noqa: E402
from starlette.responses import Response  # noqa: E402

from bentos import metrics  # noqa: E402
from bentos.feature_plan import FeaturePlan, build_plan  # noqa: E402
from bentos.prediction_log import PredictionLog  # noqa: E402
from bentos.predictor import RowPredictor  # noqa: E402
from bentos.schemas import Transaction, TransactionBatch  # noqa: E402
from core.online_store import OnlineStore  # noqa: E402
from core.redis_client import RedisUnavailable  # noqa: E402
from core.settings import settings  # noqa: E402

log = logging.getLogger("rtml.serving")

_SERVING = settings().serving
WORKERS = _SERVING.workers
REDIS_TIMEOUT_S = _SERVING.redis_timeout_s
LOG_QUEUE = _SERVING.log_queue
SWITCH_INTERVAL_S = _SERVING.switch_interval_s

_perf = time.perf_counter
_now = time.time
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _json(payload: Any, status: int = 200) -> Response:
    return Response(_dumps(payload).encode(), status_code=status, media_type="application/json")


def model_tag() -> str:
    """The model to serve: ``RTML_SERVING_MODEL_TAG``, else the registry's production model, else (inside a
    built Bento, where there is no registry pointer) the latest ``fraud_model`` in the store."""
    from core import model_store
    tag = os.environ.get("RTML_SERVING_MODEL_TAG")
    if tag:
        return tag if ":" in tag else f"{model_store.model_name()}:{tag}"
    current = model_store.production_tag()
    if current:
        return current
    log.warning("no production model in the registry; serving the latest %s in the model store", model_store.model_name())
    return f"{model_store.model_name()}:latest"


MODEL_TAG = model_tag()


@bentoml.service(
    name="fraud_scorer",
    workers=WORKERS,
    traffic={"timeout": 10},
    logging={"access": {"enabled": False}},
    # BentoML's request metrics stay on; per-request tracing spans (~0.2 ms of CPU each) are off for the hot path.
    tracing={"excluded_urls": ["predict", "livez", "healthz", "readyz", "metrics"]},
)
class FraudScorer:
    """Scores card transactions for fraud."""

    # Resolved at import, so `bentoml build` packs the served model into the Bento.
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from core.feast_store import get_store

        self.model = self.model_ref
        self.booster = bentoml.xgboost.load_model(self.model)
        meta = self.model.info.metadata
        self.model_name = self.model.tag.name
        self.model_version = self.model.tag.version
        self.features: list[str] = list(meta["features"])
        self.threshold = float(meta["threshold"])
        defaults = {k: v for k, v in (meta.get("defaults") or {}).items() if v is not None and not _isnan(v)}
        feast_store = get_store()
        self.redis = OnlineStore.from_settings(feast_store=feast_store, timeout_s=REDIS_TIMEOUT_S)
        self.plan: FeaturePlan = build_plan(feast_store, meta["feature_refs"], self.features, defaults, self.redis)
        self.n_reads = len(self.plan.reads)
        self.predictor = RowPredictor(self.booster, len(self.features))
        self._m_fetch = metrics.stage_seconds.labels(stage="feature_fetch")
        self._m_on_demand = metrics.stage_seconds.labels(stage="on_demand")
        self._m_predict = metrics.stage_seconds.labels(stage="predict")
        self._m_missing: dict[str, Any] = {}
        dropped = {r: metrics.prediction_log_dropped_total.labels(reason=r) for r in ("queue_full", "send_failed")}
        self.prediction_log = PredictionLog(
            self.model_name,
            self.model_version,
            self.features,
            maxsize=LOG_QUEUE,
            on_drop=lambda reason, n: dropped[reason].inc(n),
        )
        self.prediction_log.start()
        log.info(
            "serving %s (%d features, %d Redis reads/request, threshold %.4f)",
            self.model.tag, len(self.features), self.n_reads, self.threshold,
        )

    @bentoml.on_startup
    def _freeze_heap(self) -> None:
        """Start-up objects never need scanning again: keeps gen-2 GC pauses off the request path."""
        gc.collect()
        gc.freeze()
        # Background threads (prediction log, Kafka sender) give the GIL back to the event loop within
        # this interval instead of the default 5 ms, which would otherwise show up in p99.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        if os.environ.get("RTML_SERVING_PROFILE"):  # developer option: cProfile the worker, dumped at shutdown
            import cProfile
            self._prof = cProfile.Profile()
            self._prof.enable()

    @bentoml.on_shutdown
    def _close(self) -> None:
        if getattr(self, "_prof", None):
            self._prof.disable()
            self._prof.dump_stats(os.environ["RTML_SERVING_PROFILE"])
        self.prediction_log.stop()
        self.redis.close()

    async def __is_ready__(self) -> bool:
        return self.booster is not None and await self.redis.ping()

    # ---- hot path -------------------------------------------------------------------------------
    def _redis_down(self, exc: RedisUnavailable) -> Response:
        metrics.redis_errors_total.inc()
        return _json({"error": "online feature store unavailable", "detail": str(exc)}, 503)

    def _count_missing(self, missing: list[str]) -> None:
        for name in missing:
            child = self._m_missing.get(name)
            if child is None:
                child = self._m_missing[name] = metrics.missing_features_total.labels(feature=name)
            child.inc()

    def _finish(self, req: dict, fetched, row: list[float], missing: list[str], score: float, now: float) -> dict:
        decision = "fraud" if score >= self.threshold else "legit"
        age = None if fetched.oldest_ts is None else max(0.0, now - fetched.oldest_ts)
        request_id = uuid.uuid4().hex
        if missing:
            self._count_missing(missing)
        if age is not None:
            metrics.feature_age_seconds.observe(age)
        metrics.score.observe(score)
        self.prediction_log.put(
            (request_id, req["transaction_id"], req["user_id"], req["merchant_id"], now, score, decision, row, missing, age)
        )
        return {
            "request_id": request_id,
            "transaction_id": req["transaction_id"],
            "score": score,
            "decision": decision,
            "model_version": self.model_version,
            "missing_features": missing,
            "feature_age_seconds": age,
        }

    @bentoml.api(input_spec=Transaction, route="/predict")
    async def predict(
        self,
        transaction_id: str,
        user_id: int,
        merchant_id: int,
        amount: float,
        country: str,
        currency: str = "EUR",
        channel: str = "unknown",
        timestamp: datetime | None = None,
    ) -> dict:
        """Score one transaction."""
        req = {"transaction_id": transaction_id, "user_id": user_id, "merchant_id": merchant_id, "amount": amount, "country": country}
        plan = self.plan
        t0 = _perf()
        try:
            fetched = await self.redis.read(plan.read, req)
        except RedisUnavailable as exc:
            return self._redis_down(exc)
        t1 = _perf()
        rows, missing = plan.rows((fetched,), (req,))
        t2 = _perf()
        score = self.predictor.predict_row(rows[0])
        t3 = _perf()
        self._m_fetch.observe(t1 - t0)
        self._m_on_demand.observe(t2 - t1)
        self._m_predict.observe(t3 - t2)
        return _json(self._finish(req, fetched, rows[0], missing[0], score, _now()))

    @bentoml.api(input_spec=TransactionBatch, route="/predict_batch")
    async def predict_batch(self, transactions: list[Transaction]) -> dict:
        """Score up to ``RTML_SERVING_MAX_BATCH`` transactions with one Redis round trip and one predict call."""
        plan = self.plan
        reqs = [
            {"transaction_id": t.transaction_id, "user_id": t.user_id, "merchant_id": t.merchant_id, "amount": t.amount, "country": t.country}
            for t in transactions
        ]
        t0 = _perf()
        try:
            fetched = await self.redis.read_many(plan.read, reqs)
        except RedisUnavailable as exc:
            return self._redis_down(exc)
        t1 = _perf()
        rows, missing = plan.rows(fetched, reqs)
        t2 = _perf()
        scores = self.predictor.predict_rows(rows)
        t3 = _perf()
        self._m_fetch.observe(t1 - t0)
        self._m_on_demand.observe(t2 - t1)
        self._m_predict.observe(t3 - t2)
        now = _now()
        out = [self._finish(reqs[i], fetched[i], rows[i], missing[i], float(scores[i]), now) for i in range(len(reqs))]
        return _json({"predictions": out, "model_version": self.model_version})


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)
