"""Model rollouts in the running service (real HTTP, Redis, Kafka): shadow, canary and A/B variants declared
in the registry and picked up without a restart, prediction records per variant, hot reload under load
with no failed request, and reason codes."""

from __future__ import annotations

import asyncio
import math
import time
import zlib

import httpx
import numpy as np
import pandas as pd
import pytest

from core.contracts import domain_topics
from core.prediction_messages import expand
from tests.serving.conftest import MERCHANT_BASE, N_MERCHANTS, N_USERS, USER_BASE, api_headers
from tests.serving.test_service import known_transactions, model_and_booster, post, read_predictions, score_rows, txn

pytestmark = pytest.mark.integration


def deployment(url: str) -> dict:
    return httpx.post(f"{url}/deployment", json={}, timeout=5, headers=api_headers()).json()


def wait_for(url: str, **expected) -> dict:
    """Poll ``/deployment`` until it shows ``expected`` (the service polls the registry every 0.5 s)."""
    deadline = time.monotonic() + 20
    while True:
        d = deployment(url)
        if all(d.get(k) == v for k, v in expected.items()):
            return d
        if time.monotonic() > deadline:
            raise AssertionError(f"deployment {d} never showed {expected}")
        time.sleep(0.2)


def online_frame(serving, txns: list[dict], features: list[str], feature_service: str) -> pd.DataFrame:
    """Feast's own online features for these requests (model columns, nulls as NaN)."""
    from core.feast_store import get_store

    store = get_store()
    rows = [{k: t[k] for k in ("user_id", "merchant_id", "amount", "country")} for t in txns]
    online = store.get_online_features(features=store.get_feature_service(feature_service), entity_rows=rows).to_dict()
    return pd.DataFrame({f: [np.nan if v is None else v for v in online[f]] for f in features})


def variant_metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` carrying all ``labels`` (in any order)."""
    import re

    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5, headers=api_headers()).text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{([^}}]*)\}}\s+(\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def bucket(key, rollout_id: str) -> int:
    """The documented split: CRC-32 of the key, salted with the CRC-32 of the rollout id, mod 10000."""
    return zlib.crc32(str(key).encode(), zlib.crc32(rollout_id.encode())) % 10_000


@pytest.fixture(scope="module")
def challenger(serving) -> str:
    from tests.fixtures.models import save_test_model

    return save_test_model(n_rows=3000, rounds=60, seed=7, promote_it=False)


@pytest.fixture(autouse=True)
def no_rollout(serving):
    """Every test starts and ends with the fixture's production model and no rollout."""
    from core import model_store

    yield
    if model_store.rollout_state():
        model_store.abort_rollout("test cleanup")
    if model_store.production_tag() != serving.model_tag:
        model_store.promote(serving.model_tag, "test cleanup")
    wait_for(serving.url, production=serving.model_tag, challenger=None)


def start_shadow(serving, challenger: str) -> tuple[dict, object, dict, object]:
    """Put ``challenger`` in shadow behind production; (production meta, booster, challenger meta, booster)."""
    from core import model_store

    model_store.start_rollout(challenger, "shadow")
    wait_for(serving.url, challenger=challenger, mode="shadow")
    return (*model_and_booster(serving.model_tag), *model_and_booster(challenger))


def test_shadow_scores_every_request_logged_never_returned(serving, challenger):
    prod_meta, prod_booster, chal_meta, chal_booster = start_shadow(serving, challenger)
    txns = known_transactions(20, seed=21)
    bodies = [post(serving.url, "/predict", t).json() for t in txns]
    features = list(prod_meta["features"])
    X = online_frame(serving, txns, features, prod_meta["feature_service"])
    # Production answers, with its own score; the response names its version.
    np.testing.assert_allclose([b["score"] for b in bodies], score_rows(prod_booster, features, X), atol=1e-6)
    assert {b["model_version"] for b in bodies} == {serving.model_tag.split(":")[1]}
    assert {b["variant"] for b in bodies} == {"production"}
    # Two records per request: production (served) and the challenger (not served), on the same feature vector.
    found = read_predictions({b["request_id"] for b in bodies}, expect_per_key=2)
    chal_expected = score_rows(chal_booster, list(chal_meta["features"]), X)
    for b, expected in zip(bodies, chal_expected, strict=True):
        recs = {r["variant"]: r for r in found[b["request_id"]]}
        assert set(recs) == {"production", "challenger"}
        prod, shadow = recs["production"], recs["challenger"]
        assert prod["served"] is True and shadow["served"] is False
        assert prod["model_version"] == b["model_version"] and shadow["model_version"] == challenger.split(":")[1]
        assert prod["score"] == b["score"]
        assert shadow["features"] == prod["features"]
        assert shadow["score"] == pytest.approx(float(expected), abs=1e-6)
        assert shadow["decision"] == ("fraud" if shadow["score"] >= float(chal_meta["threshold"]) else "legit")
        assert shadow["latency_ms"] > 0
    assert not np.allclose(chal_expected, [b["score"] for b in bodies], atol=1e-3), "the two models should differ"
    # Per-variant metrics: the challenger's 20 shadow scores and decisions are counted under its own labels.
    chal = {"variant": "challenger", "model_version": challenger.split(":")[1]}
    assert variant_metric(serving.url, "rtml_serving_variant_score_count", **chal) >= 20
    decisions = variant_metric(serving.url, "rtml_serving_variant_decisions_total", **chal)
    assert decisions == variant_metric(serving.url, "rtml_serving_variant_score_count", **chal)
    assert variant_metric(serving.url, "rtml_serving_variant_latency_seconds_count", variant="production") >= 20


def test_shadow_scores_each_request_of_a_batch_on_its_own_feature_vector(serving, challenger):
    prod_meta, prod_booster, chal_meta, chal_booster = start_shadow(serving, challenger)
    txns = known_transactions(12, seed=23)
    batch = post(serving.url, "/predict_batch", {"transactions": txns})
    assert batch.status_code == 200, batch.text
    preds = batch.json()["predictions"]
    features = list(prod_meta["features"])
    X = online_frame(serving, txns, features, prod_meta["feature_service"])
    np.testing.assert_allclose([p["score"] for p in preds], score_rows(prod_booster, features, X), atol=1e-6)
    assert {p["variant"] for p in preds} == {"production"}
    found = read_predictions({p["request_id"] for p in preds}, expect_per_key=2)
    chal_expected = score_rows(chal_booster, list(chal_meta["features"]), X)
    for p, expected in zip(preds, chal_expected, strict=True):
        recs = {r["variant"]: r for r in found[p["request_id"]]}
        prod, shadow = recs["production"], recs["challenger"]
        assert prod["served"] is True and shadow["served"] is False and prod["score"] == p["score"]
        assert shadow["features"] == prod["features"]
        assert shadow["score"] == pytest.approx(float(expected), abs=1e-6)


def test_batch_explains_the_requests_that_ask_as_predict_does(serving):
    txns = known_transactions(6, seed=51)
    asks = [{**t, "explain": i % 2 == 0} for i, t in enumerate(txns)]
    batch = post(serving.url, "/predict_batch", {"transactions": asks})
    assert batch.status_code == 200, batch.text
    preds = batch.json()["predictions"]
    singles = [post(serving.url, "/predict", {**t, "explain": True}).json() for t in txns]
    for i, (p, single) in enumerate(zip(preds, singles, strict=True)):
        if i % 2:
            assert "reasons" not in p
            continue
        assert [r["feature"] for r in p["reasons"]] == [r["feature"] for r in single["reasons"]]
        for got, want in zip(p["reasons"], single["reasons"], strict=True):
            assert got["contribution"] == pytest.approx(want["contribution"], abs=1e-5)
            assert got["value"] == want["value"]


def test_canary_share_is_a_deterministic_hash_of_the_request_id(serving, challenger):
    from core import model_store

    rollout = model_store.start_rollout(challenger, "canary", "30%")
    wait_for(serving.url, challenger=challenger, mode="canary", share=0.3)
    _, prod_booster = model_and_booster(serving.model_tag)
    chal_meta, chal_booster = model_and_booster(challenger)
    txns = known_transactions(60, seed=22)
    bodies = [post(serving.url, "/predict", t).json() for t in txns]
    expected_variant = ["challenger" if bucket(t["transaction_id"], rollout["id"]) < 3000 else "production" for t in txns]
    assert [b["variant"] for b in bodies] == expected_variant
    assert 5 <= expected_variant.count("challenger") <= 35
    versions = {"production": serving.model_tag.split(":")[1], "challenger": challenger.split(":")[1]}
    assert [b["model_version"] for b in bodies] == [versions[v] for v in expected_variant]
    features = list(chal_meta["features"])
    X = online_frame(serving, txns, features, chal_meta["feature_service"])
    expected = np.where(
        np.array(expected_variant) == "challenger", score_rows(chal_booster, features, X), score_rows(prod_booster, features, X)
    )
    np.testing.assert_allclose([b["score"] for b in bodies], expected, atol=1e-6)
    # The same request id always lands on the same variant.
    again = post(serving.url, "/predict", txns[0]).json()
    assert again["variant"] == expected_variant[0]


def test_ab_is_sticky_by_entity(serving, challenger):
    from core import model_store

    rollout = model_store.start_rollout(challenger, "ab", "50%")
    wait_for(serving.url, challenger=challenger, mode="ab")
    users = [USER_BASE + 1 + i for i in range(N_USERS)]
    seen: dict[int, set[str]] = {}
    for i in range(3 * len(users)):
        user = users[i % len(users)]
        body = post(serving.url, "/predict", txn(user, MERCHANT_BASE + 1 + i % (N_MERCHANTS - 1), 10.0 + i, "DE")).json()
        seen.setdefault(user, set()).add(body["variant"])
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {u: next(iter(v)) for u, v in seen.items()} == {
        u: "challenger" if bucket(u, rollout["id"]) < 5000 else "production" for u in users
    }
    assert 0 < sum(next(iter(v)) == "challenger" for v in seen.values()) < len(users)


def test_complete_promotes_the_challenger_without_restart(serving, challenger):
    from core import model_store

    model_store.start_rollout(challenger, "canary", "10%")
    wait_for(serving.url, challenger=challenger)
    assert model_store.complete_rollout("test") == challenger
    wait_for(serving.url, production=challenger, challenger=None)
    body = post(serving.url, "/predict", known_transactions(1, seed=30)[0]).json()
    assert (body["model_version"], body["variant"]) == (challenger.split(":")[1], "production")
    assert [e["action"] for e in model_store.history()[-2:]] == ["rollout-canary", "rollout-complete"]


def test_rollout_changes_under_load_fail_no_request(serving, challenger):
    """Concurrent clients keep scoring while the registry changes six times; every request gets a 200."""
    from core import model_store

    txns = known_transactions(50, seed=40)
    statuses: dict[int, int] = {}
    stop = asyncio.Event()

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=serving.url, timeout=10, headers=api_headers()) as c:
            k = i
            while not stop.is_set():
                r = await c.post("/predict", json=txns[k % len(txns)])
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                k += 7

    async def changes() -> list[str]:
        seen = []
        steps = [
            lambda: model_store.start_rollout(challenger, "shadow"),
            lambda: model_store.set_rollout_mode("canary", "50%"),
            lambda: model_store.set_rollout_mode("ab", "50%"),
            lambda: model_store.complete_rollout("load test"),
            lambda: model_store.promote(serving.model_tag, "load test"),
            lambda: model_store.rollback("load test"),
        ]
        for step in steps:
            step()
            before = time.monotonic()
            while time.monotonic() - before < 15:
                d = await asyncio.to_thread(deployment, serving.url)
                if d["production"] == model_store.production_tag() and d["mode"] == (model_store.rollout_state() or {}).get("mode"):
                    break
                await asyncio.sleep(0.1)
            seen.append(f"{d['production']} {d['mode']}")
            await asyncio.sleep(0.5)
        stop.set()
        return seen

    async def main() -> list[str]:
        tasks = [asyncio.create_task(client(i)) for i in range(6)]
        seen = await changes()
        await asyncio.gather(*tasks)
        return seen

    seen = asyncio.run(main())
    assert statuses.get(200, 0) > 200, statuses
    assert set(statuses) == {200}, statuses
    assert seen[-1] == f"{challenger} None"  # rollback after promote: the completed challenger again
    reloads = httpx.get(f"{serving.url}/metrics", timeout=5, headers=api_headers()).text
    assert 'rtml_serving_reloads_total{result="ok"}' in reloads


def test_explain_returns_the_top_contributions_with_the_values_used(serving):
    import xgboost as xgb

    from core.settings import settings

    meta, booster = model_and_booster(serving.model_tag)
    features = list(meta["features"])
    txns = known_transactions(5, seed=50)
    bodies = [post(serving.url, "/predict", {**t, "explain": True}).json() for t in txns]
    X = online_frame(serving, txns, features, meta["feature_service"]).astype("float32")
    contribs = booster.predict(
        xgb.DMatrix(X.to_numpy(), missing=np.nan, feature_names=features), pred_contribs=True, approx_contribs=True
    )
    k = settings().serving.explain_top_k
    for body, row, c in zip(bodies, X.to_numpy(), contribs, strict=True):
        reasons = body["reasons"]
        assert len(reasons) == k
        order = np.argsort(-np.abs(c[:-1]), kind="stable")[:k]
        assert [r["feature"] for r in reasons] == [features[i] for i in order]
        for r, i in zip(reasons, order, strict=True):
            assert r["contribution"] == pytest.approx(float(c[i]), abs=1e-5)
            assert (r["value"] is None and math.isnan(row[i])) or r["value"] == pytest.approx(float(row[i]), rel=1e-6)
        # all contributions + bias are the log-odds of the score
        assert float(c.sum()) == pytest.approx(math.log(body["score"] / (1 - body["score"])), abs=1e-4)
    assert "reasons" not in post(serving.url, "/predict", txns[0]).json()


# ---- the rollout policy end to end: service -> Kafka -> monitoring.rollout -> registry -> service ----------


class Watcher:
    """What the monitor does for rollouts (``RolloutFeed.observe`` on every batch), on its own consumer."""

    def __init__(self, step_every_s: float = 0.5):
        import threading

        from core.kafka_io import make_consumer
        from core.settings import settings
        from monitoring.rollout import RolloutFeed

        topics = settings().topics
        self.consumer = make_consumer([topics.predictions, domain_topics().labels], group_id=None, auto_offset_reset="latest",
                                      role="admin")
        deadline = time.monotonic() + 20
        while not self.consumer.assignment() and time.monotonic() < deadline:
            self.consumer.poll(timeout_ms=200)
        assert self.consumer.assignment(), "no partitions assigned"
        self.consumer.seek_to_end()
        self.feed = RolloutFeed(topics.predictions, step_every_s=step_every_s)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            batch = self.consumer.poll(timeout_ms=200)
            for tp, records in batch.items():
                if tp.topic == self.feed.predictions_topic:  # as the monitor loop: one record per prediction
                    records = expand(records, on_malformed=lambda _m, _exc: None)
                self.feed.observe(tp.topic, records)
            self.feed.observe("", [])  # let the policy step while idle

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.consumer.close()


def wait_history(action: str, tag: str, since: int, timeout_s: float = 60.0) -> dict:
    """The registry's history event ``action`` of ``tag`` after the first ``since`` events (waits for the policy).

    ``since`` keeps events of earlier tests with the same (module-scoped) challenger out of the answer.
    """
    from core import model_store

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = [e for e in model_store.history()[since:] if e["action"] == action and e["tag"] == tag]
        if events:
            return events[-1]
        time.sleep(0.2)
    raise AssertionError(f"no {action} in {[e['action'] for e in model_store.history()[-5:]]}")


def test_policy_goes_shadow_canary_complete_on_its_own(serving, challenger, capsys):
    from core import model_store
    from monitoring.rollout import read_status
    from rtml.cli import main as cli

    watcher = Watcher()
    try:
        policy = {"shadow_predictions": 40, "min_agreement": 0.0, "canary_share": 0.5, "canary_predictions": 15, "min_error_sample": 10}
        since = len(model_store.history())
        rollout = model_store.start_rollout(challenger, "shadow", auto=True, policy=policy)
        wait_for(serving.url, challenger=challenger, mode="shadow")
        for t in known_transactions(50, seed=60):
            assert post(serving.url, "/predict", t).status_code == 200
        event = wait_history("rollout-canary", challenger, since)
        assert event["tag"] == challenger and event["reason"].startswith("policy: canary: shadow: ")
        status = read_status("shadow")
        assert status["rollout"]["id"] == rollout["id"] and status["shadow"]["pairs"] >= 40
        assert 0.0 <= status["shadow"]["decision_agreement"] <= 1.0 and status["shadow"]["score_mean_abs_diff"] > 0
        wait_for(serving.url, challenger=challenger, mode="canary", share=0.5)
        served = {"production": 0, "challenger": 0}
        for t in known_transactions(60, seed=61):
            served[post(serving.url, "/predict", t).json()["variant"]] += 1
        assert served["challenger"] > 0  # the policy completes after 15 of them: later requests see it as production
        wait_history("rollout-complete", challenger, since)
        wait_for(serving.url, production=challenger, challenger=None)
        assert model_store.production_tag() == challenger and model_store.rollout_state() is None
        status = read_status("canary")
        assert status["recommendation"]["action"] == "complete" and status["variants"]["challenger"]["predictions"] >= 15
        assert "Recommendation: <b>complete</b>" in (model_store.registry_dir().parent / "rollout" / "report.html").read_text()
    finally:
        watcher.close()
    capsys.readouterr()
    assert cli(["models", "rollout-status"]) == 0
    assert "no rollout is running" in capsys.readouterr().out


def test_policy_aborts_a_challenger_that_ranks_worse_once_labels_arrive(serving):
    """A challenger trained on shuffled labels: once labels arrive its PR-AUC is far below production's -> abort."""
    import json

    import xgboost as xgb

    from core import model_store
    from core.kafka_io import make_producer
    from tests.fixtures.models import synthetic_feature_frame
    from training.registry import register_model

    meta, _ = model_and_booster(serving.model_tag)
    features = list(meta["features"])
    X, y = synthetic_feature_frame(2000, seed=9, features=features)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "seed": 9, "nthread": 1},
                        xgb.DMatrix(X, label=np.random.default_rng(9).permutation(y), feature_names=features), 20)
    bad = register_model(booster, {**{k: meta[k] for k in ("feature_refs", "defaults")}, "features": features, "threshold": 0.5}, None)
    watcher = Watcher()
    producer = make_producer(value_serializer=None, key_serializer=None, role="admin")
    try:
        policy = {"shadow_predictions": 10**6, "min_labels": 40, "max_pr_auc_drop": 0.05}
        since = len(model_store.history())
        model_store.start_rollout(bad, "shadow", auto=True, policy=policy)
        wait_for(serving.url, challenger=bad, mode="shadow")
        txns = known_transactions(120, seed=70)
        bodies = [post(serving.url, "/predict", t).json() for t in txns]
        cut = np.quantile([b["score"] for b in bodies], 0.75)
        for t, b in zip(txns, bodies, strict=True):  # the truth follows production's ranking: production is right
            label = {"transaction_id": t["transaction_id"], "is_fraud": int(b["score"] >= cut)}
            producer.send(domain_topics().labels, key=t["transaction_id"].encode(), value=json.dumps(label).encode())
        producer.flush(10)
        event = wait_history("rollout-abort", bad, since)
        assert event["tag"] == bad and "PR-AUC" in event["reason"], event
        wait_for(serving.url, production=serving.model_tag, challenger=None)
    finally:
        producer.close()
        watcher.close()
