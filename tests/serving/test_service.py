"""The prediction service over real HTTP (`bentoml serve`), real Redis (features written through Feast)
and real Kafka (prediction log)."""

from __future__ import annotations

import json
import math
import time
import uuid

import httpx
import numpy as np
import pandas as pd
import pytest

from core.contracts import PREDICTION_FIELDS
from tests.serving.conftest import (
    MERCHANT_BASE,
    N_MERCHANTS,
    N_USERS,
    UNKNOWN_MERCHANT,
    UNKNOWN_USER,
    USER_BASE,
    USERS_WITHOUT_AGGREGATES,
    api_headers,
)

pytestmark = pytest.mark.integration

COUNTRIES = ["DE", "FR", "NL", "US"]


def txn(user: int, merchant: int, amount: float, country: str, **extra) -> dict:
    return {
        "transaction_id": f"t-{uuid.uuid4().hex[:12]}",
        "user_id": user,
        "merchant_id": merchant,
        "amount": amount,
        "currency": "EUR",
        "country": country,
        "channel": "web",
        "timestamp": pd.Timestamp.now(tz="UTC").isoformat().replace("+00:00", "Z"),
        **extra,
    }


def known_transactions(n: int = 24, seed: int = 3) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        txn(
            USER_BASE + 1 + int(rng.integers(0, N_USERS)),
            MERCHANT_BASE + 1 + int(rng.integers(0, N_MERCHANTS - 1)),  # merchants with aggregates
            float(np.round(rng.gamma(2.0, 60.0), 2)),
            str(rng.choice(COUNTRIES)),
        )
        for _ in range(n)
    ]


def model_and_booster(tag: str):
    from core import model_store
    model = model_store.get_model(tag)
    return model.info.metadata, model_store.load_booster(model)


def score_rows(booster, features: list[str], X: pd.DataFrame) -> np.ndarray:
    import xgboost as xgb

    return booster.predict(xgb.DMatrix(X[features].astype("float32"), feature_names=features, missing=np.nan))


def post(url: str, path: str, body, client: httpx.Client | None = None) -> httpx.Response:
    c = client or httpx
    return c.post(f"{url}{path}", json=body, timeout=10, headers=api_headers())


# ------------------------------------------------------------------------------------------------


def test_score_equals_the_registry_model_on_offline_features(serving):
    """For known entities: the served score == the registry booster on Feast's offline (point-in-time) features."""
    from core.feast_store import get_store

    meta, booster = model_and_booster(serving.model_tag)
    features = list(meta["features"])
    txns = known_transactions()
    served = [post(serving.url, "/predict", t) for t in txns]
    assert all(r.status_code == 200 for r in served), [r.text for r in served if r.status_code != 200][:2]
    served = [r.json() for r in served]
    assert all(s["missing_features"] == [] for s in served)

    store = get_store()
    entity_df = pd.DataFrame(
        {
            "user_id": [t["user_id"] for t in txns],
            "merchant_id": [t["merchant_id"] for t in txns],
            "amount": [t["amount"] for t in txns],
            "country": [t["country"] for t in txns],
            "event_timestamp": serving.now + pd.Timedelta(minutes=1),
            "row": np.arange(len(txns)),
        }
    )
    offline = (
        store.get_historical_features(
            entity_df=entity_df, features=store.get_feature_service(meta["feature_service"]), full_feature_names=False
        )
        .to_df()
        .sort_values("row")
        .reset_index(drop=True)
    )
    assert len(offline) == len(txns)
    expected = score_rows(booster, features, offline)
    got = np.array([s["score"] for s in served])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert len(set(np.round(got, 6))) > 3, "scores should vary with the features"
    threshold = float(meta["threshold"])
    assert [s["decision"] for s in served] == ["fraud" if x >= threshold else "legit" for x in got]
    assert all(s["model_version"] == serving.model_tag.split(":")[1] for s in served)
    # Feature age: now minus the oldest row used (the profile snapshot, 3 days old).
    for s in served:
        assert 3 * 86400 <= s["feature_age_seconds"] < 3 * 86400 + 600


def online_expected(serving, txns: list[dict]) -> np.ndarray:
    """The registry booster on Feast's own online features (get_online_features with the feature service)."""
    from core.feast_store import get_store

    meta, booster = model_and_booster(serving.model_tag)
    store = get_store()
    rows = [{k: t[k] for k in ("user_id", "merchant_id", "amount", "country")} for t in txns]
    online = store.get_online_features(features=store.get_feature_service(meta["feature_service"]), entity_rows=rows).to_dict()
    X = pd.DataFrame({f: [np.nan if v is None else v for v in online[f]] for f in meta["features"]})
    return score_rows(booster, list(meta["features"]), X)


def test_unknown_and_partly_known_entities_get_defaults_and_are_listed(serving):
    meta, _ = model_and_booster(serving.model_tag)
    user_aggs = [r.split(":")[1] for r in meta["feature_refs"] if r.startswith("user_txn_aggregates:")]
    cases = [
        (txn(UNKNOWN_USER, UNKNOWN_MERCHANT, 50.0, "DE"), None),
        (txn(UNKNOWN_USER, MERCHANT_BASE + 1, 75.0, "FR"), {"account_age_days", "credit_limit", "home_country", *user_aggs}),
        (txn(USERS_WITHOUT_AGGREGATES[0], MERCHANT_BASE + 1, 20.0, "DE"), set(user_aggs)),
        (txn(USER_BASE + 1, MERCHANT_BASE + N_MERCHANTS, 20.0, "DE"), {"merchant_txn_count_1h", "merchant_amount_mean_1h"}),
    ]
    responses = [post(serving.url, "/predict", t) for t, _ in cases]
    assert [r.status_code for r in responses] == [200] * len(cases)
    body = [r.json() for r in responses]
    stored = set(body[0]["missing_features"])
    assert {"account_age_days", "risk_tier", "merchant_txn_count_1h", "txn_mean_24h"} <= stored
    for (_, expected_missing), b in zip(cases[1:], body[1:], strict=True):
        assert set(b["missing_features"]) == expected_missing
    # Scores equal the model on what Feast itself serves online for these rows (nulls -> NaN = defaults).
    np.testing.assert_allclose([b["score"] for b in body], online_expected(serving, [t for t, _ in cases]), atol=1e-6)
    assert body[0]["feature_age_seconds"] is None


def test_batch_equals_single_predictions(serving):
    txns = known_transactions(10, seed=5) + [txn(UNKNOWN_USER, UNKNOWN_MERCHANT, 10.0, "US")]
    batch = post(serving.url, "/predict_batch", {"transactions": txns})
    assert batch.status_code == 200, batch.text
    preds = batch.json()["predictions"]
    singles = [post(serving.url, "/predict", t).json() for t in txns]
    assert [p["transaction_id"] for p in preds] == [t["transaction_id"] for t in txns]
    np.testing.assert_allclose([p["score"] for p in preds], [s["score"] for s in singles], atol=1e-6)
    assert [p["missing_features"] for p in preds] == [s["missing_features"] for s in singles]
    assert len({p["request_id"] for p in preds}) == len(txns)


def _bad_requests() -> list[tuple[str, str, object, str]]:
    good = txn(USER_BASE + 1, MERCHANT_BASE + 1, 10.0, "DE")
    without_amount = {k: v for k, v in good.items() if k != "amount"}
    from core.settings import settings

    MAX_BATCH = settings().serving.max_batch  # noqa: N806

    return [
        ("missing field", "/predict", without_amount, "amount"),
        ("wrong type", "/predict", {**good, "user_id": "abc"}, "user_id"),
        ("numeric string id", "/predict", {**good, "merchant_id": "12"}, "merchant_id"),
        ("id above int64", "/predict", {**good, "user_id": 2**63}, "user_id"),
        ("negative id below int64", "/predict", {**good, "merchant_id": -(2**63) - 1}, "merchant_id"),
        ("short country", "/predict", {**good, "country": "D"}, "country"),
        ("explain not a bool", "/predict", {**good, "explain": "yes"}, "explain"),
        ("negative amount", "/predict", {**good, "amount": -5.0}, "amount"),
        ("zero amount", "/predict", {**good, "amount": 0}, "amount"),
        ("string amount", "/predict", {**good, "amount": "10"}, "amount"),
        ("bad timestamp", "/predict", {**good, "timestamp": "yesterday"}, "timestamp"),
        ("empty transaction id", "/predict", {**good, "transaction_id": ""}, "transaction_id"),
        ("batch too large", "/predict_batch", {"transactions": [good] * (MAX_BATCH + 1)}, "transactions"),
        ("empty batch", "/predict_batch", {"transactions": []}, "transactions"),
        ("bad item in batch", "/predict_batch", {"transactions": [good, {**good, "country": 5}]}, "country"),
    ]


@pytest.mark.parametrize("case", _bad_requests(), ids=lambda c: c[0])
def test_validation_errors_are_4xx_naming_the_field(serving, case):
    _, path, body, field = case
    r = post(serving.url, path, body)
    assert 400 <= r.status_code < 500, r.text
    detail = r.json()
    locs = [loc for d in detail["detail"] for loc in d["loc"]]
    assert field in locs, detail


def test_malformed_json_is_a_4xx(serving):
    r = httpx.post(f"{serving.url}/predict", content=b'{"user_id": 1,', headers={"content-type": "application/json", **api_headers()}, timeout=10)
    assert 400 <= r.status_code < 500


def test_health_readiness_and_metrics(serving):
    assert httpx.get(f"{serving.url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{serving.url}/readyz", timeout=5).status_code == 200
    post(serving.url, "/predict", txn(UNKNOWN_USER, MERCHANT_BASE + 1, 12.0, "DE"))
    text = httpx.get(f"{serving.url}/metrics", timeout=5, headers=api_headers()).text
    for stage in ("feature_fetch", "on_demand", "predict"):
        assert f'rtml_serving_stage_seconds_count{{stage="{stage}"}}' in text
    for name in (
        'rtml_serving_missing_features_total{feature="account_age_days"}',
        "rtml_serving_feature_age_seconds_count",
        "rtml_serving_score_count",
        "rtml_serving_redis_errors_total",
        "rtml_serving_prediction_log_dropped_total",
        "bentoml_service_request_duration_seconds",  # BentoML's own request metrics
    ):
        assert name in text, name


def _metric(text: str, sample: str) -> float:
    """The value of one sample line of a /metrics page (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_batch_counts_each_missing_feature_once_per_row(serving):
    sample = 'rtml_serving_missing_features_total{feature="account_age_days"}'
    before = _metric(httpx.get(f"{serving.url}/metrics", timeout=5, headers=api_headers()).text, sample)
    known = txn(USER_BASE + 1, MERCHANT_BASE + 1, 10.0, "DE")
    unknown = txn(UNKNOWN_USER, MERCHANT_BASE + 1, 12.0, "DE")
    body = post(serving.url, "/predict_batch", {"transactions": [unknown, known, unknown, unknown]}).json()
    assert ["account_age_days" in p["missing_features"] for p in body["predictions"]] == [True, False, True, True]
    after = _metric(httpx.get(f"{serving.url}/metrics", timeout=5, headers=api_headers()).text, sample)
    assert after - before == 3


def read_predictions(request_ids: set[str], timeout_s: float = 30.0, expect_per_key: int = 1,
                     timestamps: dict[str, int] | None = None) -> dict:
    """Messages of the ``predictions`` topic with these request ids (key = request id): one record per id,
    or with ``expect_per_key`` > 1 a list of that many (a shadow rollout logs two per request).
    ``timestamps``: filled with each id's Kafka message timestamp (ms)."""
    from core.kafka_io import make_consumer
    from core.prediction_messages import expand
    from core.settings import settings

    consumer = make_consumer([settings().topics.predictions], group_id=None, consumer_timeout_ms=500, role="admin")
    found: dict[str, list[dict]] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and sum(len(v) >= expect_per_key for v in found.values()) < len(request_ids):
            for msg in expand(consumer):  # one per prediction, batch messages included
                key = msg.key.decode() if msg.key else None
                if key in request_ids:
                    found.setdefault(key, []).append(json.loads(msg.value))
                    if timestamps is not None:
                        timestamps[key] = msg.timestamp
    finally:
        consumer.close()
    if expect_per_key == 1:
        return {k: v[0] for k, v in found.items()}
    return found


def test_prediction_log_messages_arrive_complete(serving):
    meta, _ = model_and_booster(serving.model_tag)
    txns = known_transactions(5, seed=9) + [txn(UNKNOWN_USER, UNKNOWN_MERCHANT, 99.0, "FR")]
    txns[0]["timestamp"] = "2025-11-28T03:15:00.5Z"  # a replayed request: its event time is days before it is scored
    responses = {}
    for t in txns:
        body = post(serving.url, "/predict", t).json()
        responses[body["request_id"]] = (t, body)
    kafka_ms: dict[str, int] = {}
    found = read_predictions(set(responses), timestamps=kafka_ms)
    assert set(found) == set(responses)
    for rid, record in found.items():
        t, body = responses[rid]
        assert list(record) == list(PREDICTION_FIELDS)
        for name, typ in PREDICTION_FIELDS.items():
            if name == "feature_age_seconds" and body["feature_age_seconds"] is None:
                assert record[name] is None
            else:
                assert isinstance(record[name], typ), (name, record[name])
        assert record["transaction_id"] == t["transaction_id"]
        assert (record["user_id"], record["merchant_id"]) == (t["user_id"], t["merchant_id"])
        assert record["score"] == body["score"] and record["decision"] == body["decision"]
        assert record["model_name"] == "fraud_model" and record["model_version"] == body["model_version"]
        assert list(record["features"]) == list(meta["features"])
        assert record["features"]["txn_amount"] == pytest.approx(t["amount"])
        assert record["missing_features"] == body["missing_features"]
        assert pd.Timestamp(record["prediction_timestamp"]).tzinfo is not None
        # the event time (the monitor windows by the message timestamp) is the request's
        assert pd.Timestamp(record["event_timestamp"]) == pd.Timestamp(t["timestamp"])
        assert abs(kafka_ms[rid] - pd.Timestamp(t["timestamp"]).value / 1e6) <= 1.0
    replayed = next(r for r in found.values() if r["transaction_id"] == txns[0]["transaction_id"])
    assert replayed["event_timestamp"] == "2025-11-28T03:15:00.500000Z"
    assert pd.Timestamp(replayed["prediction_timestamp"]) - pd.Timestamp(replayed["event_timestamp"]) > pd.Timedelta(days=1)
    unknown = next(r for r in found.values() if r["user_id"] == UNKNOWN_USER)
    assert unknown["features"]["account_age_days"] is None  # NaN default is logged as null
    assert not any(isinstance(v, float) and math.isnan(v) for r in found.values() for v in r["features"].values())


def test_a_batchs_predictions_arrive_as_the_records_single_requests_would_log(serving):
    """A ``/predict_batch`` is logged as one batch message; read through ``expand`` each of its predictions is a
    complete record (fields, values, event time as key and timestamp) equal to the batch's answers."""
    meta, _ = model_and_booster(serving.model_tag)
    txns = known_transactions(7, seed=21) + [txn(UNKNOWN_USER, UNKNOWN_MERCHANT, 99.0, "FR")]
    txns[1]["timestamp"] = "2025-11-28T03:15:00.5Z"
    body = post(serving.url, "/predict_batch", {"transactions": txns}).json()
    answers = {p["request_id"]: (t, p) for t, p in zip(txns, body["predictions"], strict=True)}
    kafka_ms: dict[str, int] = {}
    found = read_predictions(set(answers), timestamps=kafka_ms)
    assert set(found) == set(answers)
    prediction_times = {r["prediction_timestamp"] for r in found.values()}
    assert len(prediction_times) == 1  # one batch, one prediction time
    for rid, record in found.items():
        t, answer = answers[rid]
        assert list(record) == list(PREDICTION_FIELDS)
        assert record["transaction_id"] == t["transaction_id"] and record["user_id"] == t["user_id"]
        assert record["score"] == answer["score"] and record["decision"] == answer["decision"]
        assert record["missing_features"] == answer["missing_features"]
        assert record["feature_age_seconds"] == answer["feature_age_seconds"]
        assert record["served"] is True and record["variant"] == "production"
        assert list(record["features"]) == list(meta["features"])
        assert record["features"]["txn_amount"] == pytest.approx(t["amount"])
        assert abs(kafka_ms[rid] - pd.Timestamp(record["event_timestamp"]).value / 1e6) <= 1.0
    assert found[body["predictions"][1]["request_id"]]["event_timestamp"] == "2025-11-28T03:15:00.500000Z"
    unknown = found[body["predictions"][-1]["request_id"]]
    assert unknown["features"]["account_age_days"] is None and unknown["missing_features"]

def test_batch_score_equals_the_online_score_for_the_same_events(serving, tmp_path):
    """`rtml score` over events stamped after the feature rows sees the feature values the service read
    online: the same scores (max abs diff <= 1e-6), decisions and model version, with every join engine."""
    from bentos.batch_score import score_range
    from core.settings import settings

    txns = known_transactions(30, seed=80) + [txn(UNKNOWN_USER, UNKNOWN_MERCHANT, 12.0, "FR")]
    times = [serving.now + pd.Timedelta(minutes=2, milliseconds=i) for i in range(len(txns))]
    served = {t["transaction_id"]: post(serving.url, "/predict", t).json() for t in txns}
    events = pd.DataFrame(txns).drop(columns=["timestamp"]).assign(event_timestamp=times)
    folder = settings().data_dir / "transactions"
    folder.mkdir(parents=True, exist_ok=True)
    events.to_parquet(folder / "part-batch-test.parquet", index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    try:
        for engine in ("auto", "duckdb", "sorted", "feast"):
            result = score_range(serving.now + pd.Timedelta(minutes=1), serving.now + pd.Timedelta(minutes=3), engine=engine,
                                 out=tmp_path / f"{engine}.parquet")
            out = pd.read_parquet(result.path).set_index("transaction_id")
            assert result.rows == len(txns) and set(out.index) == set(served), engine
            diff = max(abs(out.loc[k, "score"] - b["score"]) for k, b in served.items())
            assert diff <= 1e-6, (engine, diff)
            assert all(out.loc[k, "decision"] == b["decision"] for k, b in served.items())
            assert set(out["model_version"]) == {serving.model_tag.split(":")[1]} and set(out["variant"]) == {"production"}
            assert list(out["user_id"]) == [t["user_id"] for t in txns]  # in event order
    finally:
        (folder / "part-batch-test.parquet").unlink()


def test_api_keys_guard_the_running_service(serving):
    """Secure by default: 401 without a valid key, 403 outside the key's scope, 429 past its rate, a new key
    works and a revoked one stops within seconds (no restart); the health probes stay open."""
    from bentos import auth

    def call(path: str, token: str | None, body=None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        if path == "/metrics":
            return httpx.get(f"{serving.url}{path}", headers=headers, timeout=5)
        return httpx.post(f"{serving.url}{path}", json=body if body is not None else good, headers=headers, timeout=5)

    def until(path: str, token: str, status: int, within_s: float = 5.0) -> float:
        t0 = time.monotonic()
        while call(path, token).status_code != status:
            assert time.monotonic() - t0 < within_s, f"{path} never answered {status} within {within_s} s"
            time.sleep(0.1)
        return time.monotonic() - t0

    good = txn(USER_BASE + 1, MERCHANT_BASE + 1, 20.0, "DE")
    token = auth.create_key("checkout", ["predict"])  # created while the service runs
    key_id = token.split("_")[1]
    until("/predict", token, 200)
    assert call("/predict", token).json()["score"] >= 0.0

    refused = call("/predict", None)
    assert refused.status_code == 401 and refused.json() == {"error": "missing or invalid API key"}
    assert refused.headers["www-authenticate"].startswith("Bearer")
    wrong_secret = call("/predict", f"rtml_{key_id}_{'x' * 32}")
    unknown = call("/predict", f"rtml_deadbeef_{'x' * 32}")
    assert (wrong_secret.status_code, wrong_secret.text) == (unknown.status_code, unknown.text) == (401, refused.text)
    assert call("/predict", "not-a-key").status_code == 401

    for path, body in (("/predict_batch", {"transactions": [good]}), ("/deployment", {}), ("/metrics", None)):
        r = call(path, token, body)
        assert r.status_code == 403, (path, r.text)
        assert "scope" in r.json()["error"]
    assert httpx.get(f"{serving.url}/readyz", timeout=5).status_code == 200
    assert httpx.get(f"{serving.url}/healthz", timeout=5).status_code == 200

    metrics_key = auth.create_key("prometheus", ["metrics"])
    until("/metrics", metrics_key, 200)
    assert "rtml_serving_stage_seconds" in call("/metrics", metrics_key).text
    assert call("/predict", metrics_key).status_code == 403

    slow = auth.create_key("trickle", ["predict"], rate_per_s=0.1)  # one request per 10 s
    until("/predict", slow, 200)  # takes the one token
    limited = [call("/predict", slow) for _ in range(3)]
    assert [r.status_code for r in limited] == [429] * 3
    assert limited[0].headers.get("retry-after") == "1" and "rate limit" in limited[0].json()["error"]

    auth.revoke_key(key_id)
    assert until("/predict", token, 401) < 3.0
    assert call("/predict", metrics_key).status_code == 403  # other keys unaffected
