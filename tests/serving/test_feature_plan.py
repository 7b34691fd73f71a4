"""Model rows from fetched features (the fast path of /predict_batch and its feature-by-feature fallback), and
request ids."""

from __future__ import annotations

import math
import uuid

import numpy as np

from bentos.feature_plan import FeaturePlan
from core.online_store import EntityRead, FetchResult, ReadPlan, ViewRead


def _ratio(amount, total):
    try:
        return amount / total
    except TypeError:  # no total, or not a number
        return None


def _plan() -> FeaturePlan:
    user = EntityRead("user_id", lambda v: b"u%d" % v, [b"a", b"b", b"_ts"],
                      [ViewRead("user_aggs", 2, [("txn_count", 0), ("txn_sum", 1)], others=[("txn_count", 0), ("txn_sum", 1)],
                                floats=("txn_sum",))])
    return FeaturePlan(
        model_features=["txn_sum", "amount_ratio", "txn_count"],
        read=ReadPlan([user]),
        request_fields=["amount"],
        odfv_inputs=["txn_sum"],
        odfv_outputs=["amount_ratio"],
        compute_on_demand=lambda inputs: {"amount_ratio": [_ratio(a, s) for a, s in zip(inputs["amount"], inputs["txn_sum"],
                                                                                        strict=True)]},
        defaults={"txn_count": 0.0, "txn_sum": -1.0},
    )


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


def test_rows_equal_the_feature_by_feature_path():
    plan = _plan()
    fetched = [
        FetchResult({"txn_count": 3, "txn_sum": 50.0}, [], 1.0),  # all present
        FetchResult({"txn_count": None, "txn_sum": None}, ["txn_count", "txn_sum"], None),  # no row: defaults
        FetchResult({"txn_count": None, "txn_sum": 20.0}, [], 1.0),  # a null value (not missing): NaN
        FetchResult({"txn_count": "7", "txn_sum": "x"}, [], 1.0),  # numeric string / not a number
    ]
    reqs = [{"amount": 10.0}, {"amount": 5.0}, {"amount": 4.0}, {"amount": 1.0}]
    rows, missing = plan.rows(fetched, reqs)
    assert rows[0] == [50.0, 0.2, 3.0]
    assert rows[1][0] == -1.0 and math.isnan(rows[1][1]) and rows[1][2] == 0.0
    assert rows[2][:2] == [20.0, 0.2] and math.isnan(rows[2][2])
    assert math.isnan(rows[3][0]) and math.isnan(rows[3][1]) and rows[3][2] == 7.0
    assert missing == [[], ["txn_count", "txn_sum"], [], []]
    on_demand = {"amount_ratio": [_ratio(r["amount"], f.values["txn_sum"]) for r, f in zip(reqs, fetched, strict=True)]}
    for i, f in enumerate(fetched):  # the feature-by-feature path gives the same rows
        assert _same(plan._row(f.values, f.missing, on_demand, i), rows[i])


def test_the_batch_matrix_equals_the_rows_of_the_row_by_row_decoder():
    from feast.protos.feast.types.Value_pb2 import Value
    from google.protobuf.timestamp_pb2 import Timestamp

    plan = _plan()
    ts = Timestamp(seconds=1_700_000_000, nanos=5000).SerializeToString()
    replies = [
        [Value(int64_val=3).SerializeToString(), Value(double_val=50.0).SerializeToString(), ts],  # all present
        [None, None, None],  # no row: defaults
        [None, Value(double_val=20.0).SerializeToString(), ts],  # a null value (not missing): NaN
        [Value(string_val="7").SerializeToString(), Value(string_val="x").SerializeToString(), ts],  # not numbers
        [Value(int64_val=-2).SerializeToString(), Value(int64_val=8).SerializeToString(), ts],  # an int sum
    ]
    reqs = [{"amount": 10.0}, {"amount": 5.0}, {"amount": 4.0}, {"amount": 1.0}, {"amount": 2.0}]
    X, missing = plan.matrix(plan.read.columns(replies, len(reqs)), reqs)
    rows, missing_rows = plan.rows([plan.read.decode([r]) for r in replies], reqs)
    assert missing == missing_rows == [[], ["txn_count", "txn_sum"], [], [], []]
    assert X.dtype == np.float64 and X.shape == (5, 3)
    for got, want in zip(X.tolist(), rows, strict=True):
        assert _same(got, want), (got, want)
    assert rows[0] == [50.0, 0.2, 3.0] and rows[1][0] == -1.0 and rows[1][2] == 0.0 and rows[4] == [8.0, 0.25, -2.0]


def test_request_ids_are_uuid4_hex_and_unique():
    from bentos.prediction_log import request_ids

    ids = request_ids(2000)
    assert len(set(ids)) == 2000
    for h in ids:
        u = uuid.UUID(h)
        assert len(h) == 32 and u.hex == h and u.version == 4 and u.variant == uuid.RFC_4122
    assert len(request_ids(1)) == 1
