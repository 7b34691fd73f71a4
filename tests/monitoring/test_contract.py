"""The monitor reads what the serving path writes: a record from bentos.prediction_log decodes to the
model's feature order, with NaN features (sent as null) and listed missing features counted as missing."""

from __future__ import annotations

import json
import math

from bentos import prediction_log
from core.contracts import PREDICTION_FIELDS
from monitoring.decode import PredictionDecoder
from tests.fixtures.predictions import DEFAULT_FEATURES


def test_serving_prediction_record_decodes():
    features = list(DEFAULT_FEATURES)
    log = prediction_log.PredictionLog("fraud_model", "v1", features)  # not started: no Kafka needed
    row = [float(i) for i in range(len(features))]
    row[features.index("secs_since_prev_txn")] = math.nan
    entry = ("req-1", "txn-1", 7, 9, 1_764_000_000.5, 0.42, "approve", row, ["merchant_txn_count_1h"], 3.5)
    record = log.record(entry)
    assert set(record) == set(PREDICTION_FIELDS)
    raw = prediction_log._dumps(record).encode()  # the bytes the service sends
    decoded, txn = PredictionDecoder(features).decode(raw)
    assert txn == "txn-1" and decoded[-1] == 0.42
    for i, name in enumerate(features):
        if name in ("secs_since_prev_txn", "merchant_txn_count_1h"):
            assert math.isnan(decoded[i]), name
        else:
            assert decoded[i] == row[i], name
    assert json.loads(raw)["features"]["secs_since_prev_txn"] is None
