"""Online predictions on BentoML for any feature repo: request-time features from Redis, XGBoost, a
prediction log, and model rollouts (shadow, canary, A/B) that change without a restart.

The service is configured by a model and the feature service it was trained on: the request model
(:mod:`bentos.request_schema`), the Redis read plan (:mod:`bentos.feature_plan`) and the on-demand
inputs all come from that feature service's definitions, so another domain is another feature repo.

Per request: one pipelined Redis round trip reads the online features in Feast's own format, the
on-demand features are computed with the feature repo's own body, the variant that answers is picked
(:mod:`bentos.variants`), XGBoost scores one preallocated row, and the prediction is queued for the
Kafka ``predictions`` topic (never blocking; the records are built and sent by a child process,
:mod:`bentos.prediction_log_process`). In shadow mode the challenger scores the same feature vector in
the prediction log's thread (off the request path). ``"explain": true`` adds the top feature
contributions (XGBoost ``pred_contribs``) with the values used.

Hot reload: a thread polls the registry's pointer file; when the production model or the rollout
changes it loads the new models and builds a new :class:`~bentos.variants.Deployment` beside the old
one, then swaps one attribute. Requests read the deployment once, so none fails during a change.

Endpoints: ``POST /predict``, ``POST /predict_batch``, ``GET /deployment``; BentoML's ``/healthz``
``/livez`` (process alive), ``/readyz`` (model loaded and Redis answers) and ``/metrics``.
Settings: ``settings().serving`` (``RTML_SERVING_*``).

Secure by default: every endpoint but the health probes needs an API key (``Authorization: Bearer
rtml_<id>_<secret>``, scopes per endpoint, 401/403/429, see :mod:`bentos.auth`; ``rtml keys create``).
``RTML_SERVING_AUTH=0`` turns the check off for local development only.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from itertools import chain
from typing import Any

import msgspec

from core.model_store import bentoml_home

bentoml_home()

import bentoml  # noqa: E402
from starlette.responses import Response  # noqa: E402

from bentos import metrics  # noqa: E402
from bentos.feature_plan import FeaturePlan, FetchResult, build_plan  # noqa: E402
from bentos.prediction_log import request_ids  # noqa: E402
from bentos.prediction_log_process import PredictionLogProcess  # noqa: E402
from bentos.readiness import Readiness  # noqa: E402
from bentos.request_schema import RequestSpec, request_models, request_spec  # noqa: E402
from bentos.variants import CHALLENGER, PRODUCTION, Deployment, Variant, load_model  # noqa: E402
from core.online_store import OnlineStore  # noqa: E402
from core.redis_client import RedisUnavailable  # noqa: E402
from core.resp import compile_kernels as compile_resp_kernels  # noqa: E402
from core.settings import settings  # noqa: E402

log = logging.getLogger("rtml.serving")

_SERVING = settings().serving
_perf = time.perf_counter
_now = time.time
_encode = msgspec.json.Encoder().encode  # compact JSON bytes, ~4x faster than the json module


def _json(payload: Any, status: int = 200) -> Response:
    return Response(_encode(payload), status_code=status, media_type="application/json")


def model_tag() -> str:
    """The model to serve: ``RTML_SERVING_MODEL_TAG``, else the registry's production model, else (inside a
    built Bento, where there is no registry pointer) the latest model of that name in the store."""
    from core import model_store

    tag = _SERVING.model_tag
    if tag:
        return tag if ":" in tag else f"{model_store.model_name()}:{tag}"
    current = model_store.production_tag()
    if current:
        return current
    log.warning("no production model in the registry; serving the latest %s in the model store", model_store.model_name())
    return f"{model_store.model_name()}:latest"


MODEL_TAG = model_tag()


def _request_spec() -> RequestSpec:
    from core import model_store

    meta = model_store.get_model(MODEL_TAG).info.metadata
    return request_spec(meta.get("feature_service"))


SPEC = _request_spec()
_instance: list[Any] = []  # the worker's PredictionService, once built
Request, RequestBatch = request_models(SPEC, _SERVING.max_batch)


@bentoml.service(
    name="prediction_service",
    workers=_SERVING.workers,
    traffic={"timeout": 10, "max_concurrency": _SERVING.max_concurrency},
    logging={"access": {"enabled": False}},
    # BentoML's request metrics stay on; per-request tracing spans (~0.2 ms of CPU each) are off for the hot path.
    tracing={"excluded_urls": ["predict", "livez", "healthz", "readyz", "metrics"]},
)
class PredictionService:
    """Scores requests with the production model (and a challenger during a rollout)."""

    # Resolved at import, so `bentoml build` packs the served model into the Bento.
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        from core.feast_store import get_store

        _instance.append(self)  # what bentos.direct_routes answers /predict and /predict_batch on
        self.spec = SPEC
        self.store = get_store()
        self.redis = OnlineStore.from_settings(feast_store=self.store, timeout_s=_SERVING.redis_timeout_s)
        self._models: dict[str, Variant] = {}
        self._plans: dict[tuple[str, ...], FeaturePlan] = {}
        self.pinned = bool(_SERVING.model_tag)
        self._readiness = Readiness(_SERVING.ready_grace_s)
        self._key, self.deployment = self._deployment(*self._wanted())
        self.deployment.plan.read.columns([], 0)  # the batch decoder compiled (or loaded) now, not on a request
        compile_resp_kernels()  # and the raw replies' framing
        # per-request observations are added up in the worker and written every 0.25 s (bentos.metrics)
        self._m_fetch = metrics.batched(metrics.stage_seconds.labels(stage="feature_fetch"))
        self._m_on_demand = metrics.batched(metrics.stage_seconds.labels(stage="on_demand"))
        self._m_predict = metrics.batched(metrics.stage_seconds.labels(stage="predict"))
        self._m_age = metrics.batched(metrics.feature_age_seconds)
        self._m_score = metrics.batched(metrics.score)
        self._m_missing: dict[str, Any] = {}
        dropped = {r: metrics.prediction_log_dropped_total.labels(reason=r) for r in ("queue_full", "send_failed", "shutdown")}
        self.prediction_log = PredictionLogProcess(
            self.spec.id_field,
            self.spec.entity_keys,
            maxsize=_SERVING.log_queue,
            on_drop=lambda reason, n: dropped[reason].inc(n),
        )
        self.prediction_log.start()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="registry-watch", daemon=True)
        if not self.pinned:
            self._watcher.start()
        d = self.deployment
        log.info(
            "serving %s (%d features, %d Redis reads/request, threshold %.4f)%s",
            d.production.tag, len(d.production.features), d.n_reads, d.production.threshold,
            f"; {d.mode} rollout of {d.challenger.tag} ({d.share:.1%})" if d.challenger else "",
        )

    # ---- deployments ------------------------------------------------------------------------------
    def _wanted(self) -> tuple[str, dict | None]:
        """(production tag, running rollout) as the registry says now (the pinned tag, no rollout, if pinned)."""
        from core import model_store

        if self.pinned or not model_store.pointer_path().exists():
            return MODEL_TAG, None
        state = model_store.pointer_state()
        return state.get("current") or MODEL_TAG, state.get("rollout") or None

    def _model(self, tag: str) -> Variant:
        model = self._models.get(tag)
        if model is None:
            model = self._models[tag] = load_model(tag, explain_approx=not _SERVING.explain_exact)
        return model

    def _deployment(self, production_tag: str, rollout: dict | None) -> tuple[tuple, Deployment]:
        """A deployment for the production model and the rollout (models loaded once, plans cached)."""
        prod = self._model(production_tag)
        chal = None
        if rollout and rollout.get("challenger") and rollout["challenger"] != prod.tag:
            chal = self._model(rollout["challenger"])
            if chal.feature_service != prod.feature_service:
                needs = request_spec(chal.feature_service)
                extra = set(needs.names) - set(self.spec.names)
                if extra:
                    raise RuntimeError(f"challenger {chal.tag} needs request fields {sorted(extra)} this service does not accept")
        features = list(prod.features)
        refs = list(prod.feature_refs)
        defaults = dict(prod.defaults)
        if chal is not None:
            by_name = dict(zip(chal.features, chal.feature_refs, strict=True))
            for f in chal.features:
                if f not in features:
                    features.append(f)
                    refs.append(by_name[f])
            defaults = {**chal.defaults, **defaults}
        plan = self._plans.get(tuple(refs))
        if plan is None:
            plan = self._plans[tuple(refs)] = build_plan(self.store, refs, features, defaults, self.redis)
        key = self._key_of(production_tag, rollout)
        d = Deployment(
            plan,
            prod.bind(PRODUCTION, features),
            chal.bind(CHALLENGER, features) if chal else None,
            mode=(rollout or {}).get("mode", "") if chal else "",
            share=float((rollout or {}).get("share") or 0.0),
            rollout_id=(rollout or {}).get("id", ""),
            id_field=self.spec.id_field,
            sticky_key=self.spec.entity_keys[0],
        )
        for tag in [t for t in self._models if t not in (prod.tag, chal.tag if chal else None)]:
            del self._models[tag]  # models no longer served
        return key, d

    @staticmethod
    def _key_of(production_tag: str, rollout: dict | None) -> tuple:
        """What a deployment serves; a rollout of the production model itself is no rollout."""
        r = rollout or {}
        challenger = r.get("challenger")
        if not challenger or challenger == production_tag:
            return (production_tag, None, None, None, None)
        return (production_tag, challenger, r.get("mode"), r.get("share"), r.get("id"))

    def reload(self) -> bool:
        """Serve what the registry says now; True if the deployment changed. Failures keep the current one."""
        production_tag, rollout = self._wanted()
        key = self._key_of(production_tag, rollout)
        if key == self._key:
            return False
        t0 = time.monotonic()
        try:
            new_key, new = self._deployment(production_tag, rollout)
        except Exception as exc:  # noqa: BLE001 - a bad model or rollout must not stop serving
            metrics.reloads_total.labels(result="failed").inc()
            log.error("reload of %s / %s failed, still serving %s: %s", production_tag, rollout, self._key, exc)
            self._key = key  # do not retry the same state every poll
            return False
        self.deployment = new  # one attribute: requests in flight keep the deployment they read
        self._key = new_key
        metrics.reloads_total.labels(result="ok").inc()
        gc.freeze()
        log.info("now serving %s in %.0f ms", new.describe(), 1000 * (time.monotonic() - t0))
        return True

    def _watch(self) -> None:
        from core import model_store

        path = model_store.pointer_path()
        last = None
        while not self._stop.wait(_SERVING.reload_interval_s):
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
            if sig == last:
                continue
            last = sig
            try:
                self.reload()
            except Exception as exc:  # noqa: BLE001 - e.g. a half-written pointer from another tool
                log.warning("registry watch: %s", exc)

    # ---- life cycle ----------------------------------------------------------------------------
    @bentoml.on_startup
    def _freeze_heap(self) -> None:
        """Start-up objects never need scanning again: keeps gen-2 GC pauses off the request path."""
        gc.collect()
        gc.freeze()
        metrics.cache_multiprocess_pid()
        # Background threads (prediction log, Kafka sender) give the GIL back to the event loop within
        # this interval instead of the default 5 ms, which would otherwise show up in p99.
        sys.setswitchinterval(_SERVING.switch_interval_s)
        if _SERVING.profile_path:  # developer option: cProfile the worker, dumped at shutdown
            import cProfile

            self._prof = cProfile.Profile()
            self._prof.enable()

    @bentoml.on_shutdown
    def _close(self) -> None:
        if getattr(self, "_prof", None):
            self._prof.disable()
            self._prof.dump_stats(_SERVING.profile_path)
        self._stop.set()
        self.prediction_log.stop()
        self.redis.close()

    async def __is_ready__(self) -> bool:
        """Ready while Redis answers, or has failed for less than ``ready_grace_s`` (one blip must not take
        every replica out of the load balancer at once)."""
        return self.deployment is not None and self._readiness.observe(await self.redis.ping(), time.monotonic())

    # ---- hot path -------------------------------------------------------------------------------
    async def _fetch(self, d: Deployment, req: dict) -> list[FetchResult]:
        """Online features of one request: one pipelined round trip (per node holding a key)."""
        return [await self.redis.read(d.plan.read, req)]

    def _redis_down(self, exc: RedisUnavailable) -> Response:
        metrics.redis_errors_total.inc()
        return _json({"error": "online feature store unavailable", "detail": str(exc)}, 503)

    def _count_missing(self, missing: Iterable[str]) -> None:
        """Count missing features: one metric update per feature name, however often it is missing."""
        for name, n in Counter(missing).items():
            child = self._m_missing.get(name)
            if child is None:
                child = self._m_missing[name] = metrics.missing_features_total.labels(feature=name)
            child.inc(n)

    def _challenger_failed(self, d: Deployment, v: Variant, req: dict, plan_row: list[float], now: float, exc: Exception) -> Variant:
        """A challenger that cannot score: counted and logged; production answers instead."""
        v.error()
        log.warning("challenger %s failed (%s); production answers", v.tag, exc)
        self.prediction_log.put((request_ids(1)[0], req, now, None, "error", v.row(plan_row), [], None, v, False, None))
        return d.production

    def _finish(
        self, d: Deployment, v: Variant, req: dict, fetched: FetchResult, plan_row: list[float], row: list[float],
        missing: list[str], score: float, seconds: float, now: float, request_id: str,
    ) -> dict:
        decision = v.observe(score, seconds)
        age = None if fetched.oldest_ts is None else max(0.0, now - fetched.oldest_ts)
        if missing:
            self._count_missing(missing)
        if age is not None:
            self._m_age.observe(age)
        self._m_score.observe(score)
        return self._answer(d, v, req, plan_row, row, missing, score, decision, seconds, now, request_id, age)

    def _answer(
        self, d: Deployment, v: Variant, req: dict, plan_row: list[float] | None, row: list[float] | None,
        missing: list[str], score: float, decision: str, seconds: float, now: float, request_id: str,
        age: float | None, log: bool = True,
    ) -> dict:
        """Log one observed prediction (and its shadow; not with ``log=False``: the caller logs a whole batch)
        and build its response. ``plan_row`` and ``row`` (the plan's and the variant's model input) are needed
        only to log or explain it."""
        if log:
            log_put = self.prediction_log.put
            log_put((request_id, req, now, score, decision, row, missing, age, v, True, seconds))
            shadow = d.shadow
            if shadow is not None:  # scored in the prediction log's thread
                log_put((request_id, req, now, None, None, shadow.row(plan_row), missing, age, shadow, False, None))
        out = {
            "request_id": request_id,
            d.id_field: req[d.id_field],
            "score": score,
            "decision": decision,
            "model_version": v.model_version,
            "variant": v.name,
            "missing_features": missing,
            "feature_age_seconds": age,
        }
        if req.get("explain"):
            out["reasons"] = v.explain(row, _SERVING.explain_top_k)
        return out

    @bentoml.api(input_spec=Request, route="/predict")
    async def predict(self, **req: Any) -> dict:
        """Score one request."""
        d = self.deployment
        t0 = _perf()
        try:
            fetched = await self._fetch(d, req)
        except RedisUnavailable as exc:
            return self._redis_down(exc)
        t1 = _perf()
        rows, missing = d.plan.rows(fetched, (req,))
        t2 = _perf()
        plan_row = rows[0]
        v = d.pick(req) if d.routes else d.production
        row = v.row(plan_row)
        try:
            score = v.predictor.predict_row(row)
        except Exception as exc:
            if v is d.production:
                raise
            v = self._challenger_failed(d, v, req, plan_row, _now(), exc)
            row = v.row(plan_row)
            score = v.predictor.predict_row(row)
        t3 = _perf()
        self._m_fetch.observe(t1 - t0)
        self._m_on_demand.observe(t2 - t1)
        self._m_predict.observe(t3 - t2)
        out = self._finish(d, v, req, fetched[0], plan_row, row, missing[0], score, t3 - t2, _now(), request_ids(1)[0])
        self.prediction_log.request_done()
        return _json(out)

    @bentoml.api(input_spec=RequestBatch, route="/predict_batch")
    async def predict_batch(self, requests: list) -> dict:
        """Score up to ``RTML_SERVING_MAX_BATCH`` requests with one Redis round trip and one predict call per variant."""
        d = self.deployment
        reqs = requests  # dicts (bentos.request_schema)
        t0 = _perf()
        try:  # one pipelined round trip (per node), decoded column by column
            columns = await self.redis.read_columns(d.plan.read, reqs)
        except RedisUnavailable as exc:
            return self._redis_down(exc)
        t1 = _perf()
        X, missing = d.plan.matrix(columns, reqs)
        rows: list[list[float]] = []  # X as lists, built only when a row is logged alone or explained
        t2 = _perf()
        n = len(reqs)
        picked = [d.pick(r) for r in reqs] if d.routes else [d.production] * n
        scored: list[tuple[Variant, list[int], list[float]]] = []
        for v in {id(v): v for v in picked}.values():
            idx = [i for i, p in enumerate(picked) if p is v]
            Xv = X if len(idx) == n else X[idx]
            try:
                raw = v.predictor.predict_rows(v.matrix(Xv))
            except Exception as exc:
                if v is d.production:
                    raise
                rows = rows or X.tolist()
                for i in idx:
                    picked[i] = self._challenger_failed(d, v, reqs[i], rows[i], _now(), exc)
                v = d.production
                raw = v.predictor.predict_rows(v.matrix(Xv))
            scored.append((v, idx, raw.tolist()))
        t3 = _perf()
        self._m_fetch.observe(t1 - t0)
        self._m_on_demand.observe(t2 - t1)
        self._m_predict.observe(t3 - t2)
        per_row = (t3 - t2) / n
        # the metrics of the whole batch at once: one lock per metric, not one per row
        scores: list[float] = [0.0] * n
        decisions: list[str] = [""] * n
        for v, idx, variant_scores in scored:
            for i, s, dec in zip(idx, variant_scores, v.observe_many(variant_scores, per_row), strict=True):
                scores[i], decisions[i] = s, dec
        self._m_score.observe_many(scores)
        now = _now()
        ages = [None if ts is None else max(0.0, now - ts) for ts in columns.oldest_ts]
        self._m_age.observe_many([a for a in ages if a is not None])
        ids = request_ids(n)
        answer = self._answer
        answers = []
        self._count_missing(chain.from_iterable(missing))
        # production only, no shadow: the batch goes to the log as one entry in columns (one message)
        whole = d.shadow is None and (not d.routes or all(v is d.production for v in picked))
        if not whole or any(r.get("explain") for r in reqs):
            rows = rows or X.tolist()
        for i in range(n):
            v = picked[i]
            plan_row = rows[i] if rows else None  # the model's input only where it is logged or explained
            row = v.row(plan_row) if plan_row is not None else None
            answers.append(answer(d, v, reqs[i], plan_row, row, missing[i], scores[i], decisions[i], per_row, now,
                                  ids[i], ages[i], log=not whole))
        if whole:
            self.prediction_log.put_batch(ids, reqs, now, scores, decisions, d.production.matrix(X), missing, ages,
                                          d.production, per_row)
        self.prediction_log.request_done()  # a batch's log entries go over right after it
        return _json({"predictions": answers, "model_version": d.production.model_version})

    @bentoml.api(route="/deployment")
    async def deployment_info(self) -> dict:
        """What this worker serves: production, challenger, rollout mode and share."""
        return self.deployment.describe()


def _middlewares() -> None:
    """Pure ASGI middlewares inside BentoML's own: pending metrics written before ``/metrics`` answers, API
    keys on every endpoint but the health probes, and the prediction routes answered directly
    (:mod:`bentos.direct_routes`)."""
    from bentos import auth
    from bentos.direct_routes import DirectRoutes

    PredictionService.add_asgi_middleware(metrics.FlushBeforeScrape)
    if _SERVING.auth:
        if not auth.keys_path().exists():
            log.warning("no API keys in %s yet: every request but the health probes gets 401 until "
                        "`rtml keys create --name NAME --scope predict`", auth.keys_path())
        PredictionService.add_asgi_middleware(auth.ApiKeyMiddleware)
    else:
        log.warning("RTML_SERVING_AUTH=0: the API accepts requests WITHOUT an API key (local development only)")
    # innermost (added last): after the key check, ahead of BentoML's per-request endpoint machinery
    PredictionService.add_asgi_middleware(
        DirectRoutes,
        service=PredictionService,
        instance=lambda: _instance[-1] if _instance else None,
        routes={"/predict": "predict", "/predict_batch": "predict_batch"},
    )


_middlewares()
