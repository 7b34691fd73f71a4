"""The monitor reads what the serving path writes: a record from bentos.prediction_log decodes to the
model's feature order, with NaN features (sent as null) and listed missing features counted as missing."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

from bentos import prediction_log
from core.contracts import PREDICTION_FIELDS
from monitoring.decode import PredictionDecoder
from tests.fixtures.predictions import DEFAULT_FEATURES


def test_serving_prediction_record_decodes():
    features = list(DEFAULT_FEATURES)
    log = prediction_log.PredictionLog("transaction_id", ("user_id", "merchant_id"))  # not started: no Kafka needed
    row = [float(i) for i in range(len(features))]
    row[features.index("secs_since_prev_txn")] = math.nan
    variant = SimpleNamespace(tag="fraud_model:v1", model_version="v1", name="production", features=features)
    req = {"transaction_id": "txn-1", "user_id": 7, "merchant_id": 9, "amount": 3.0, "country": "DE"}
    entry = ("req-1", req, 1_764_000_000.5, 0.42, "approve", row, ["merchant_txn_count_1h"], 3.5, variant, True, 0.0001)
    record = log.record(entry)
    assert list(record) == list(PREDICTION_FIELDS)
    assert (record["variant"], record["model_version"], record["served"], record["latency_ms"]) == ("production", "v1", True, 0.1)
    raw = prediction_log._encode(record)  # the bytes the service sends
    decoded, txn = PredictionDecoder(features).decode(raw)
    assert txn == "txn-1" and decoded[-1] == 0.42
    for i, name in enumerate(features):
        if name in ("secs_since_prev_txn", "merchant_txn_count_1h"):
            assert math.isnan(decoded[i]), name
        else:
            assert decoded[i] == row[i], name
    assert json.loads(raw)["features"]["secs_since_prev_txn"] is None
