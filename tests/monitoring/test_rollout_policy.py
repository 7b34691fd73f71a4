"""The rollout comparison and policy on hand-made prediction records (no services)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitoring.rollout import RolloutPolicy, RolloutTracker, render_html


def rec(rid: str, variant: str, score: float | None, decision: str, latency_ms: float = 0.1, served: bool = True) -> bytes:
    return json.dumps(
        {"request_id": rid, "transaction_id": f"t{rid}", "variant": variant, "model_version": variant[0], "served": served,
         "score": score, "decision": decision, "latency_ms": latency_ms}
    ).encode()


def test_shadow_pairs_give_divergence_and_agreement():
    t = RolloutTracker({"id": "r1", "mode": "shadow"}, {"production": 0.5, "challenger": 0.5})
    prod = [0.1, 0.6, 0.7, 0.2]
    chal = [0.15, 0.4, 0.9, 0.2]
    for i, (p, c) in enumerate(zip(prod, chal, strict=True)):
        t.add_record(rec(str(i), "production", p, "fraud" if p >= 0.5 else "legit"))
        t.add_record(rec(str(i), "challenger", c, "fraud" if c >= 0.5 else "legit", served=False))
    t.add_record(rec("0", "challenger", 0.15, "legit", served=False))  # a redelivery is not a second pair
    s = t.status()["shadow"]
    assert s["pairs"] == 4
    assert s["decision_agreement"] == pytest.approx(3 / 4)
    assert s["score_mean_abs_diff"] == pytest.approx(np.mean(np.abs(np.subtract(prod, chal))))
    assert s["score_max_abs_diff"] == pytest.approx(0.2)


def status_for(mode: str, prod_lat: float, chal_lat: float, chal_errors: int, n: int = 200) -> dict:
    t = RolloutTracker({"id": "r", "mode": mode})
    for i in range(n):
        t.add_record(rec(f"p{i}", "production", 0.3, "legit", prod_lat))
        t.add_record(rec(f"c{i}", "challenger", 0.3, "legit", chal_lat))
    for i in range(chal_errors):
        t.add_record(rec(f"e{i}", "challenger", None, "error", served=False))
    return t.status()


def test_policy_aborts_on_error_rate_and_latency_and_completes_a_clean_canary():
    policy = RolloutPolicy(canary_predictions=100, max_error_rate=0.01, max_latency_ratio=2.0, latency_slack_ms=0.25)
    errors = policy.decide(status_for("canary", 0.1, 0.1, chal_errors=5))
    assert errors.action == "abort" and "error rate 2.44%" in errors.reason  # 5 of 205
    slow = policy.decide(status_for("canary", 0.1, 0.5, chal_errors=0))
    assert slow.action == "abort" and "p99 0.500 ms > 0.350 ms" in slow.reason
    assert policy.decide(status_for("canary", 0.1, 0.3, chal_errors=0)).action == "complete"
    assert policy.decide(status_for("canary", 0.1, 0.1, chal_errors=0, n=50)).action == "hold"
    # latency is not judged in shadow (the challenger scores in batches there)
    assert policy.decide(status_for("shadow", 0.1, 0.5, chal_errors=0)).action == "hold"


def test_report_names_the_recommendation():
    s = status_for("canary", 0.1, 0.1, 0)
    s["rollout"].update(challenger="m:2", production="m:1")
    page = render_html(s, RolloutPolicy(canary_predictions=10).decide(s))
    assert "Recommendation: <b>complete</b>" in page and "m:2" in page
