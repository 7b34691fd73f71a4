"""Predictions waiting for their label survive a monitor restart (saved state), and nothing read again after
the restart is joined twice."""

from __future__ import annotations

import json

from monitoring.performance import PerformanceTracker
from monitoring.state import MonitorState, StateFile


def test_waiting_joins_survive_a_restart_and_replays_join_once(tmp_path):
    before = PerformanceTracker(window=100)
    for i in range(10):
        before.add_prediction(f"t{i}", i / 10)
    before.add_label("t12", 1)  # its prediction comes later
    for i in range(5):
        before.add_label(f"t{i}", i % 2)
    assert len(before.pairs) == 5
    f = StateFile(tmp_path / "state.json")
    f.save(MonitorState(pairs=list(before.pairs), pending=before.to_state()))
    json.loads((tmp_path / "state.json").read_text())  # plain JSON

    saved = f.load()
    after = PerformanceTracker(window=100)
    after.pairs.extend(saved.pairs)
    after.load_state(saved.pending)
    for i in range(3, 10):  # labels 3 and 4 read again (committed offsets lag the saved state), then new ones
        after.add_label(f"t{i}", 1)
    after.add_prediction("t2", 0.2)  # a prediction read again
    after.add_prediction("t12", 0.9)
    assert len(after.pairs) == 11 and after.labelled == 6
    assert sorted(after.pairs)[-1] == (0.9, 1)


def test_state_with_numpy_numbers_and_many_pending_joins_round_trips(tmp_path):
    import numpy as np

    tracker = PerformanceTracker(window=10)
    scores = np.linspace(0.0, 1.0, 5000)
    for i, s in enumerate(scores):  # numpy scores, as a batch of predictions gives them
        tracker.add_prediction(f"t{i}", s)
    tracker.add_label("t7", np.int64(1))
    tracker.add_label("early", 0)
    f = StateFile(tmp_path / "state.json")
    f.save(MonitorState(window_id=3, feature_streak_start=np.float64(12.5), pairs=list(tracker.pairs),
                        pending=tracker.to_state()))
    saved = f.load()
    assert saved.window_id == 3 and saved.feature_streak_start == 12.5
    assert saved.pairs == [(float(scores[7]), 1)]
    after = PerformanceTracker(window=10)
    after.load_state(saved.pending)
    assert after.to_state()["scores"] == {f"t{i}": float(s) for i, s in enumerate(scores) if i != 7}
    assert dict(after.to_state()["early_labels"]) == {"early": 0} and after.to_state()["joined"] == ["t7"]
