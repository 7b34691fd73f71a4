"""The audit trail (core.audit): promote / rollback / feature applies, JSONL always and the `audit` Kafka topic
when it answers; a lock keeps concurrent promotions from losing one another."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from core import audit
from tests.infra.conftest import free_port
from tests.training.conftest import state_dir  # noqa: F401  (the training tests' private model store)

pytestmark = pytest.mark.integration


@pytest.fixture
def model_state(state_dir, monkeypatch):  # noqa: F811
    """A private state dir with its own BentoML store and registry; no retraining trigger in the environment."""
    monkeypatch.delenv("RTML_RETRAIN_REASON", raising=False)
    return state_dir


def _no_kafka(monkeypatch) -> None:
    monkeypatch.setenv("RTML_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("RTML_KAFKA_SECURITY", "plaintext")


def _audit_topic_entries(reason: str) -> list[dict]:
    from kafka import KafkaConsumer, TopicPartition

    from core.kafka_io import client_security
    from core.settings import settings

    s = settings()
    consumer = KafkaConsumer(
        bootstrap_servers=s.kafka_bootstrap.split(","), enable_auto_commit=False, consumer_timeout_ms=3000,
        **client_security("admin"),
    )  # fmt: skip
    try:
        parts = [TopicPartition(s.topics.audit, p) for p in consumer.partitions_for_topic(s.topics.audit)]
        consumer.assign(parts)
        consumer.seek_to_beginning()
        values = [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()
    return [v for v in values if v.get("reason") == reason]


def test_promote_and_rollback_are_audited_in_jsonl_and_kafka(stack, model_state):
    from core import model_store
    from tests.fixtures import models as fixture_models

    a = fixture_models.save_test_model(n_rows=300, rounds=2, seed=1, promote_it=False)
    b = fixture_models.save_test_model(n_rows=300, rounds=2, seed=2, promote_it=False)
    tag = uuid.uuid4().hex[:8]
    model_store.promote(a, reason=f"first-{tag}", actor="alice")
    model_store.promote(b, reason=f"second-{tag}")
    assert model_store.rollback(reason=f"back-{tag}", actor="bob") == a

    entries = audit.read(action="model")
    assert [(e["action"], e["actor"], e["before"], e["after"], e["reason"]) for e in entries] == [
        ("model.promote", "alice", {"production": None}, {"production": a}, f"first-{tag}"),
        ("model.promote", audit.default_actor(), {"production": a}, {"production": b}, f"second-{tag}"),
        ("model.rollback", "bob", {"production": b}, {"production": a}, f"back-{tag}"),
    ]
    assert audit.default_actor() and "retraining" not in audit.default_actor()
    assert all(abs(time.time() - _epoch(e["time"])) < 120 for e in entries)
    assert [h["actor"] for h in model_store.history()] == ["alice", audit.default_actor(), "bob"]
    for reason, action in ((f"first-{tag}", "model.promote"), (f"back-{tag}", "model.rollback")):
        [published] = _audit_topic_entries(reason)
        assert published["action"] == action and published == next(e for e in entries if e["reason"] == reason)


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def test_an_automatic_promotion_names_the_retraining_trigger(model_state, monkeypatch):
    from core import model_store
    from tests.fixtures import models as fixture_models

    _no_kafka(monkeypatch)
    a = fixture_models.save_test_model(n_rows=300, rounds=2, seed=1, promote_it=False)
    monkeypatch.setenv("RTML_RETRAIN_REASON", "drift:txn_amount,recall_drop")
    model_store.promote(a, reason="gate: pr_auc 0.61 > 0.58 + margin")
    [entry] = audit.read()
    assert entry["trigger"] == "drift:txn_amount,recall_drop"
    assert entry["actor"].startswith("retraining (drift:txn_amount,recall_drop) as ")
    assert entry["reason"] == "gate: pr_auc 0.61 > 0.58 + margin"


def test_kafka_down_warns_and_the_jsonl_keeps_the_entry(model_state, monkeypatch, caplog):
    _no_kafka(monkeypatch)
    started = time.monotonic()
    entry = audit.record("key.create", "carol", before=None, after={"key_id": "k1", "scope": "predict"}, reason="t")
    assert time.monotonic() - started < 5
    assert audit.read() == [entry]
    warnings = [r.getMessage() for r in caplog.records if r.name == "core.audit"]
    assert len(warnings) == 1 and "Kafka unavailable" in warnings[0] and str(audit.path()) in warnings[0]


CONCURRENT = """
import sys
from core import model_store
tags, n, who = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3]
for i in range(n):
    model_store.promote(tags[i % len(tags)], reason=f"{who}-{i}", actor=who)
"""


def test_two_processes_promoting_at_once_lose_no_promotion(model_state, monkeypatch):
    from core import model_store
    from tests.fixtures import models as fixture_models

    _no_kafka(monkeypatch)
    tags = [fixture_models.save_test_model(n_rows=200, rounds=1, seed=i, promote_it=False) for i in range(3)]
    n = 150
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, ",".join(tags[k:] + tags[:k]), str(n), f"p{k}"],
                         env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    history = model_store.history()
    assert len(history) == 2 * n
    for who in ("p0", "p1"):
        assert [h["reason"] for h in history if h["actor"] == who] == [f"{who}-{i}" for i in range(n)]
    # each promotion saw the pointer the previous one wrote
    assert all(h["previous"] == prev["tag"] for prev, h in zip(history, history[1:], strict=False))
    assert len(audit.read(action="model.promote")) == 2 * n


def test_rtml_apply_audits_the_definition_diff(model_state, monkeypatch, tmp_path, capsys):
    from rtml.cli import main

    _no_kafka(monkeypatch)
    from core.settings import settings

    repo = tmp_path / "repo"
    shutil.copytree(settings().feature_repo, repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    monkeypatch.setenv("RTML_FEATURE_REPO", str(repo))
    assert main(["apply", "--reason", "first"]) == 0
    [first] = audit.read(action="features")
    added = first["details"]["added"]
    assert {"feature_view/user_profile", "feature_service/fraud_model_v1", "entity/user"} <= set(added)
    assert first["details"]["changed"] == first["details"]["removed"] == [] and first["before"] == {}
    assert set(first["after"]) == set(added) and first["reason"] == "first"

    assert main(["apply"]) == 0  # nothing changed: nothing audited
    assert "no feature definition changed" in capsys.readouterr().out
    assert len(audit.read(action="features")) == 1

    features = repo / "features.py"
    text = features.read_text()
    assert text.count("ttl=timedelta(days=400)") >= 1
    features.write_text(text.replace("ttl=timedelta(days=400)", "ttl=timedelta(days=30)", 1))
    assert main(["apply", "--reason", "shorter ttl"]) == 0
    [_, second] = audit.read(action="features")
    assert second["details"] == {"added": [], "changed": ["feature_view/user_profile"], "removed": []}
    assert second["before"]["feature_view/user_profile"] == first["after"]["feature_view/user_profile"]
    assert second["after"]["feature_view/user_profile"] != second["before"]["feature_view/user_profile"]

    capsys.readouterr()
    assert main(["audit", "--action", "features"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "features.apply" in lines[1] and "1 changed" in lines[1] and "(shorter ttl)" in lines[1]


def _rollout_view(production, challenger=None, mode=None, share=None) -> dict:
    return {"production": production, "challenger": challenger, "mode": mode, "share": share}


def test_rollout_start_mode_complete_and_abort_are_audited(model_state, monkeypatch, capsys):
    from core import model_store
    from rtml.cli import main
    from tests.fixtures import models as fixture_models

    _no_kafka(monkeypatch)
    a = fixture_models.save_test_model(n_rows=300, rounds=2, seed=1, promote_it=False)
    b = fixture_models.save_test_model(n_rows=300, rounds=2, seed=2, promote_it=False)
    model_store.promote(a, reason="base", actor="alice")
    r = model_store.start_rollout(b, "shadow", reason="try b", actor="dana")
    model_store.set_rollout_mode("canary", "20%", reason="shadow looked fine")  # default actor: the OS user
    assert model_store.complete_rollout(reason="canary clean", actor="erin") == b
    model_store.start_rollout(a, "ab", "50%", reason="try a again", actor="dana")
    assert model_store.abort_rollout(reason="changed my mind", actor="frank") == a
    assert model_store.production_tag() == b

    entries = audit.read(action="model.rollout")
    assert [(e["action"], e["actor"], e["before"], e["after"], e["reason"]) for e in entries] == [
        ("model.rollout.start", "dana", _rollout_view(a), _rollout_view(a, b, "shadow", 0.05), "try b"),
        ("model.rollout.mode", audit.default_actor(), _rollout_view(a, b, "shadow", 0.05), _rollout_view(a, b, "canary", 0.2),
         "shadow looked fine"),
        ("model.rollout.complete", "erin", _rollout_view(a, b, "canary", 0.2), _rollout_view(b), "canary clean"),
        ("model.rollout.start", "dana", _rollout_view(b), _rollout_view(b, a, "ab", 0.5), "try a again"),
        ("model.rollout.abort", "frank", _rollout_view(b, a, "ab", 0.5), _rollout_view(b), "changed my mind"),
    ]  # fmt: skip
    assert entries[0]["details"] == {"rollout_id": r["id"], "auto": False}
    assert entries[1]["details"] == entries[2]["details"] == {"rollout_id": r["id"]}
    assert entries[3]["details"]["rollout_id"] != r["id"]
    assert [h["actor"] for h in model_store.history()[1:]] == ["dana", audit.default_actor(), "erin", "dana", "frank"]

    capsys.readouterr()
    assert main(["models", "rollout", a.split(":")[1], "--mode", "canary", "--share", "10%", "--actor", "gina"]) == 0
    assert main(["models", "abort", "--reason", "cli abort", "--actor", "gina"]) == 0
    assert main(["audit", "--action", "model.rollout", "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()[-2:]
    assert "gina" in lines[0] and "model.rollout.start" in lines[0]
    assert f"challenger: null -> {a}, mode: null -> canary, share: null -> 0.1" in lines[0]
    assert "model.rollout.abort" in lines[1] and "(cli abort)" in lines[1]


def test_the_rollout_policy_moving_a_rollout_on_is_audited_as_the_policy(model_state, monkeypatch, tmp_path):
    from core import model_store
    from monitoring.rollout import RolloutController, RolloutTracker
    from tests.fixtures import models as fixture_models

    _no_kafka(monkeypatch)
    a = fixture_models.save_test_model(n_rows=300, rounds=2, seed=1)
    b = fixture_models.save_test_model(n_rows=300, rounds=2, seed=2, promote_it=False)
    policy = {"shadow_predictions": 20, "min_agreement": 0.5, "canary_share": 0.25, "canary_predictions": 30}
    rollout = model_store.start_rollout(b, "shadow", auto=True, policy=policy, actor="dana")

    def predictions(tracker, n, variants):
        for i in range(n):
            for v in variants:
                tracker.add_record(json.dumps({
                    "request_id": f"r{i}", "transaction_id": f"t{i}", "variant": v, "model_version": v,
                    "served": v == "production", "score": 0.2, "decision": "legit", "latency_ms": 0.1,
                }).encode())  # fmt: skip

    shadow = RolloutTracker(model_store.rollout_state())
    predictions(shadow, 25, ("production", "challenger"))
    assert RolloutController(tmp_path / "status").step(shadow).action == "canary"
    canary = RolloutTracker(model_store.rollout_state())
    predictions(canary, 10, ("challenger",))
    assert RolloutController(tmp_path / "status").step(canary).action == "hold"  # a hold changes nothing
    predictions(canary, 40, ("challenger",))
    assert RolloutController(tmp_path / "status").step(canary).action == "complete"
    assert model_store.production_tag() == b

    moves = audit.read(action="model.rollout")[1:]
    policy_actor = f"rollout policy (rollout {rollout['id']}) as {audit.default_actor()}"
    assert [(e["action"], e["actor"], e["before"], e["after"]) for e in moves] == [
        ("model.rollout.mode", policy_actor, _rollout_view(a, b, "shadow", 0.05), _rollout_view(a, b, "canary", 0.25)),
        ("model.rollout.complete", policy_actor, _rollout_view(a, b, "canary", 0.25), _rollout_view(b)),
    ]
    assert moves[0]["reason"] == "policy: canary: shadow: 25 pairs, agreement 100.00%, no regression"
    assert moves[1]["reason"] == "policy: complete: canary: 50 challenger predictions, no regression"
