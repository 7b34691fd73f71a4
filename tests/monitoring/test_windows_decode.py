"""Windowing (tumbling/sliding, by count and event time) and message validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from monitoring.decode import MalformedMessage, PredictionDecoder, decode_label
from monitoring.windows import Windower, WindowSpec


def _feed(windower: Windower, n: int, ts_step: float = 1.0, before: bool = False):
    closed = []
    for i in range(n):
        if before:
            w = windower.close_before(i * ts_step)
            if w is not None:
                closed.append(w)
        w = windower.add([float(i)], i * ts_step)
        if w is not None:
            closed.append(w)
    return closed


def test_tumbling_count_windows_partition_the_stream():
    closed = _feed(Windower(WindowSpec(size=100, min_events=10)), 350)
    assert [len(w.rows) for w in closed] == [100, 100, 100]
    assert np.concatenate([w.rows[:, 0] for w in closed]).tolist() == [float(i) for i in range(300)]
    assert (closed[1].start, closed[1].end) == (100.0, 199.0)


def test_sliding_windows_overlap_and_step():
    closed = _feed(Windower(WindowSpec(size=100, mode="sliding", slide=25, min_events=100)), 200)
    # first evaluation once 100 rows are there, then every 25 events
    assert [w.rows[-1, 0] for w in closed] == [99.0, 124.0, 149.0, 174.0, 199.0]
    assert all(len(w.rows) == 100 for w in closed)
    assert closed[1].rows[0, 0] == 25.0


def test_time_windows_close_on_event_time_and_wait_for_min_events():
    # 1 event/s, 60 s windows: the event at t=60 opens the second window
    closed = _feed(Windower(WindowSpec(size=10_000, seconds=60, min_events=10)), 185, before=True)
    assert [len(w.rows) for w in closed] == [60, 60, 60]
    assert closed[0].end == 59.0 and closed[1].start == 60.0
    # sparse stream: 1 event per 30 s, min 5 events -> windows only close once 5 rows are in
    closed = _feed(Windower(WindowSpec(size=10_000, seconds=60, min_events=5)), 12, ts_step=30.0, before=True)
    assert [len(w.rows) for w in closed] == [5, 5]


def test_flush_closes_a_partial_window_only_if_big_enough():
    w = Windower(WindowSpec(size=100, min_events=10))
    _feed(w, 5)
    assert w.flush() is None and len(w) == 5
    _feed(w, 10)
    assert len(w.flush().rows) == 15 and len(w) == 0


def test_bad_window_spec_is_rejected():
    with pytest.raises(ValueError):
        WindowSpec(mode="hopping")
    with pytest.raises(ValueError):
        WindowSpec(size=0)


FEATURES = ["a", "b", "c"]


def _msg(**over):
    msg = {
        "request_id": "r1",
        "transaction_id": "t1",
        "score": 0.25,
        "features": {"a": 1.0, "b": 2, "c": None},
        "missing_features": ["c"],
    }
    msg.update(over)
    return json.dumps(msg)


def test_prediction_decoder_orders_features_and_marks_missing():
    row, txn = PredictionDecoder(FEATURES).decode(_msg())
    assert txn == "t1"
    assert row[:2] == [1.0, 2.0] and math.isnan(row[2]) and row[3] == 0.25
    # listed as missing although a (default) value was sent: counted as missing
    row, _ = PredictionDecoder(FEATURES).decode(_msg(features={"a": 1.0, "b": 2.0, "c": 7.0}, missing_features=["a"]))
    assert math.isnan(row[0]) and row[2] == 7.0
    # absent feature -> missing
    row, _ = PredictionDecoder(FEATURES).decode(_msg(features={"a": 1.0}, missing_features=[]))
    assert math.isnan(row[1]) and math.isnan(row[2])


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff\xfe", "not JSON"),
        (_msg(score="high"), "score"),
        (_msg(score=None), "score"),
        (_msg(score=True), "score"),
        (_msg(features=[1, 2]), "features"),
        (_msg(features={"a": "x", "b": 1.0}), "feature 'a'"),
        (_msg(transaction_id=None), "transaction_id"),
        (_msg(missing_features="a"), "missing_features"),
        ('{"score": NaN, "features": {}, "transaction_id": "t"}', "finite"),
        ('{"score": 0.5, "features": {"a": Infinity, "b": 1.0}, "transaction_id": "t"}', "feature 'a' must be finite"),
        ('{"score": 0.5, "features": {"a": 1.0, "b": -1e999}, "transaction_id": "t", "missing_features": []}',
         "feature 'b' must be finite"),
    ],
)
def test_malformed_predictions_raise_with_the_reason(raw, reason):
    with pytest.raises(MalformedMessage, match=reason):
        PredictionDecoder(FEATURES).decode(raw)


def test_labels():
    assert decode_label(json.dumps({"transaction_id": "t9", "is_fraud": 1})) == ("t9", 1)
    for bad in (
        {"transaction_id": "t9", "is_fraud": 2},
        {"transaction_id": "t9", "is_fraud": True},
        {"transaction_id": 5, "is_fraud": 0},
        {"is_fraud": 0},
    ):
        with pytest.raises(MalformedMessage):
            decode_label(json.dumps(bad))
