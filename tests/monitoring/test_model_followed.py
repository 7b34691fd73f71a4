"""The monitor compares each record with the reference of the model that made it, not the registry's pointer.

Serving may pin its model (``RTML_MODEL_TAG``, the image's tag) while the registry promotes or rolls
back. Two real registered models with different training traffic (B's continuous features are 2x A's)
go through a promotion and a rollback; the records (through the monitor's Kafka loop) name the model
that scored them. A monitor that follows the pointer raises FeatureDrift on A's records right after
B's promotion (the old behaviour, shown below); the monitor with the CLI's loaders does not.
"""

from __future__ import annotations

from monitoring.metrics import MonitorMetrics
from monitoring.monitor import FEATURE_DRIFT, Monitor, MonitorConfig
from monitoring.reference import registry_loaders
from monitoring.retrain import RetrainConfig
from monitoring.windows import WindowSpec
from tests.fixtures.models import save_test_model, synthetic_feature_frame
from tests.fixtures.predictions import prediction_messages
from tests.monitoring.helpers import FakeConsumer, records

WINDOW = 1000


class Clock:
    t = 1_764_000_000.0

    def __call__(self) -> float:
        return self.t


def traffic(tag: str, n: int, seed: int, scale: float, start_ts: float, variant: str = "production") -> list:
    """Kafka records of ``n`` requests scored by model ``tag`` on traffic like its training data (``scale``)."""
    import xgboost as xgb

    from core.model_store import get_model, load_booster

    model = get_model(tag)
    features = list(model.info.metadata["features"])
    frame, y = synthetic_feature_frame(n, seed, features, scale)
    score = load_booster(model).predict(xgb.DMatrix(frame, feature_names=features))
    frame = frame.assign(score=score, is_fraud=y)
    msgs = prediction_messages(frame, start_ts=start_ts, features=features, model_version=tag.split(":", 1)[1])
    for m in msgs:
        m["variant"], m["served"] = variant, True
    return records("predictions", msgs, start_ts_ms=int(start_ts * 1000), step_ms=1000)


def make(tmp_path, clock, follow_records: bool) -> Monitor:
    production, by_tag = registry_loaders(window_rows=WINDOW, calibrated=False)
    config = MonitorConfig(
        window=WindowSpec(size=WINDOW, min_events=200),
        retrain=RetrainConfig(enabled=False),
        render_reports=False,
        reference_check_every_s=0,  # the pointer is read on every tick
    )
    return Monitor(config, production, tmp_path, MonitorMetrics(), clock=clock, model_loader=by_tag if follow_records else None)


def run(mon: Monitor, recs: list) -> list:
    before = len(mon.results)
    mon.run(FakeConsumer(recs), "predictions", None, idle_exit_s=0.0, idle_flush_s=None)
    mon.tick()  # what the loop does every few seconds: re-read the registry's pointer (if followed)
    return mon.results[before:]


def feature_alerts(mon: Monitor) -> int:
    return sum(a.alert == FEATURE_DRIFT for a in mon.sink.sent)


def test_the_records_model_picks_the_reference_across_a_promotion_and_a_rollback(tmp_path, monkeypatch):
    from core import model_store

    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    a = save_test_model(n_rows=3000, seed=0)  # production, and what serving pins
    b = save_test_model(n_rows=3000, seed=1, scale=2.0, promote_it=False)
    clock = Clock()
    t0 = 1_764_000_000.0

    mon = make(tmp_path / "follows", clock, follow_records=True)
    old = make(tmp_path / "pointer", clock, follow_records=False)  # the old behaviour, for contrast
    assert mon.reference.model == old.reference.model == a
    for m in (mon, old):
        assert [r.drifted_features for r in run(m, traffic(a, 2000, 10, 1.0, t0))] == [[], []]

    model_store.promote(b, reason="test: promotion that the pinned service does not follow")
    clock.t += 60
    mon.tick(), old.tick()
    # serving still scores with A: its records name A
    later = traffic(a, 2000, 11, 1.0, t0 + 3000)
    got = run(mon, later)
    assert mon.reference.model == a and [r.drifted_features for r in got] == [[], []]
    assert feature_alerts(mon) == 0
    got_old = run(old, later)
    assert old.reference.model == b  # followed the pointer: A's records compared with B's reference
    assert all(len(r.drifted_features) >= 10 for r in got_old) and feature_alerts(old) == 1

    # the service picks up B; its first record closes A's partial window (1500 = 1000 + 500) against A
    recs = traffic(a, 1500, 12, 1.0, t0 + 6000) + traffic(b, 2000, 13, 2.0, t0 + 7500)
    got = run(mon, recs)
    assert [(r.n_rows, r.drifted_features) for r in got] == [(1000, []), (500, []), (1000, []), (1000, [])]
    assert mon.reference.model == b and feature_alerts(mon) == 0

    # a canary's challenger records (model A) are the rollout's: they do not switch the reference
    run(mon, traffic(a, 300, 14, 1.0, t0 + 9500, variant="challenger"))
    assert mon.reference.model == b and len(mon.results) == 8

    model_store.rollback(reason="test: rollback")  # serving goes back to A
    clock.t += 60
    got = run(mon, traffic(a, 2000, 15, 1.0, t0 + 10_000))
    assert mon.reference.model == a and [r.drifted_features for r in got] == [[], []]
    assert feature_alerts(mon) == 0
    assert mon.performance.threshold == model_store.get_model(a).info.metadata["threshold"]
