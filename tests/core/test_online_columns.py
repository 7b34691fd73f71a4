"""The batch read's column-by-column decoding (core.online_columns, core.online_format.decode_fields) gives
exactly what the row-by-row decoder (ReadPlan.decode) gives: values, numbers, missing views, oldest times,
from parsed replies and from raw ones (core.resp.RespBatch) alike. Fields are serialized by protobuf itself
(Feast's Value and Timestamp messages)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from feast.protos.feast.types.Value_pb2 import Null, Value
from google.protobuf.timestamp_pb2 import Timestamp

from core import online_format as fmt
from core.online_store import EntityRead, ReadPlan, ViewRead
from core.resp import RespBatch


def _values(rng: random.Random) -> list[bytes | None]:
    """One of every encoding a stored field can hold, and a few that are not Feast's scalar encodings."""
    return [
        None,  # absent field
        b"",  # an empty Value
        Value(double_val=rng.uniform(-1e6, 1e6)).SerializeToString(),
        Value(double_val=float("nan")).SerializeToString(),
        Value(double_val=-0.0).SerializeToString(),
        Value(float_val=rng.uniform(-100, 100)).SerializeToString(),
        Value(int64_val=rng.randint(-(2**63), 2**63 - 1)).SerializeToString(),
        Value(int64_val=rng.randint(0, 127)).SerializeToString(),
        Value(int64_val=2**53 + 1).SerializeToString(),  # rounds when made a float, as float() does
        Value(int32_val=rng.randint(-(2**31), 2**31 - 1)).SerializeToString(),
        Value(bool_val=rng.random() < 0.5).SerializeToString(),
        Value(unix_timestamp_val=rng.randint(0, 2**40)).SerializeToString(),
        Value(string_val=rng.choice(["US", "7.5", "", "ünï"])).SerializeToString(),
        Value(null_val=Null.NULL).SerializeToString(),
        Value(double_list_val={"val": [1.0, 2.0]}).SerializeToString(),
        b"\x20\xff\xff",  # a truncated varint: left to decode_value
    ]


def _timestamps(rng: random.Random) -> list[bytes | None]:
    return [
        None,
        Timestamp(seconds=rng.randint(1, 2**33), nanos=rng.randint(0, 999_999_999)).SerializeToString(),
        Timestamp(seconds=rng.randint(1_600_000_000, 1_900_000_000)).SerializeToString(),
        Timestamp(seconds=1_700_000_000, nanos=123_000).SerializeToString(),
        Timestamp(seconds=-5, nanos=7).SerializeToString(),
        b"",  # the epoch itself
    ]


def _view(name: str, ts_index: int, features: list[tuple[str, int]], floats: tuple[str, ...] = ()) -> ViewRead:
    return ViewRead(name, ts_index, features, others=features, floats=floats)


def _plan() -> ReadPlan:
    """Two entity keys: a user (two views) and a merchant (one view)."""
    user = EntityRead("user_id", lambda v: b"u%d" % v, [b"a", b"b", b"_ts:p", b"c", b"d", b"e", b"_ts:q"], [
        _view("profile", 2, [("age", 0), ("country", 1)]),
        _view("aggs", 6, [("sum", 3), ("count", 4), ("mean", 5)], floats=("sum", "mean")),
    ])
    merchant = EntityRead("merchant_id", lambda v: b"m%d" % v, [b"f", b"_ts:r"], [
        _view("merchant", 1, [("risk", 0)], floats=("risk",)),
    ])
    return ReadPlan([user, merchant])


def _replies(plan: ReadPlan, n_rows: int, rng: random.Random) -> list[list]:
    replies = []
    for _ in range(n_rows):
        for read in plan.reads:
            ts_fields = {v.ts_index for v in read.views}
            replies.append([rng.choice(_timestamps(rng)) if i in ts_fields else rng.choice(_values(rng))
                            for i in range(len(read.fields))])
    return replies


def _raw(replies: list[list]) -> RespBatch:
    """The replies as Redis sends them."""
    data = b"".join(b"*%d\r\n" % len(r) + b"".join(b"$-1\r\n" if f is None else b"$%d\r\n%s\r\n" % (len(f), f) for f in r)
                    for r in replies)
    return RespBatch(data, len(replies))


def _columns(plan: ReadPlan, replies: list[list], n_rows: int, form: str):
    columns = plan.columns(_raw(replies) if form == "raw" else replies, n_rows)
    assert (columns.fields is None) == (form == "raw")  # raw replies are decoded where they lie
    return columns


def _decode(b):  # decode_value, or the exception it raises
    try:
        return fmt.decode_value(b)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


def _safe_rows(plan: ReadPlan, replies: list[list], n_rows: int):
    """Per row: decode's FetchResult, or None when decode raises (a malformed field of a present view)."""
    k = plan.n
    out = []
    for i in range(n_rows):
        try:
            out.append(plan.decode(replies[i * k : (i + 1) * k]))
        except Exception:  # noqa: BLE001
            out.append(None)
    return out


@pytest.mark.parametrize("form", ["parsed", "raw"])
@pytest.mark.parametrize("seed", range(6))
def test_columns_equal_the_row_by_row_decoder(seed, form):
    rng = random.Random(seed)
    plan = _plan()
    n_rows = 400
    replies = _replies(plan, n_rows, rng)
    columns = _columns(plan, replies, n_rows, form)
    expected = _safe_rows(plan, replies, n_rows)
    fine = [i for i, r in enumerate(expected) if r is not None]
    assert len(fine) > n_rows // 4
    names = ["age", "country", "sum", "count", "mean", "risk"]
    statuses = set(columns.status.ravel().tolist())
    assert statuses == {fmt.ABSENT, fmt.FLOAT_VALUE, fmt.INT_VALUE, fmt.BOOL_VALUE, fmt.NULL_VALUE, fmt.PYTHON_VALUE}
    for i in fine:
        assert columns.missing[i] == expected[i].missing
        assert columns.oldest_ts[i] == expected[i].oldest_ts
    fill = np.array([-1.0, -2.0, math.nan, 4.0, math.nan, 6.0])
    subset = _columns(plan, [r for i in fine for r in replies[i * plan.n : (i + 1) * plan.n]], len(fine), form)
    for name in names:
        for i, v in zip(fine, subset.values(name), strict=True):
            assert _same(v, expected[i].values[name]), (name, i, v, expected[i].values[name])
    X = dict(zip(fine, subset.matrix(names, fill).tolist(), strict=True))
    for i in fine:
        for j, name in enumerate(names):
            want = float(fill[j]) if name in expected[i].missing else fmt.as_number(expected[i].values[name])
            assert _same(float(X[i][j]), want), (name, i, X[i][j], want)


@pytest.mark.parametrize("form", ["parsed", "raw"])
def test_a_malformed_field_raises_as_the_row_decoder_does(form):
    plan = _plan()
    ts = Timestamp(seconds=1_700_000_000).SerializeToString()
    row = [[b"\x20\xff\xff", Value(string_val="US").SerializeToString(), ts, None, None, None, None], [None, None]]
    with pytest.raises(IndexError):
        plan.decode(row)
    columns = _columns(plan, row, 1, form)
    with pytest.raises(IndexError):
        columns.values("age")
    with pytest.raises(IndexError):
        columns.matrix(["age"], np.array([math.nan]))
    assert columns.values("country") == ["US"]


def test_no_rows_decode_to_empty_columns():
    plan = _plan()
    columns = plan.columns([], 0)
    assert columns.missing == [] and columns.oldest_ts == []
    assert columns.matrix(["sum", "risk"], np.array([0.0, 0.0])).shape == (0, 2)


@pytest.mark.parametrize("form", ["parsed", "raw"])
def test_replies_of_another_length_than_the_plan_asks_for_are_refused(form):
    plan = _plan()
    replies = _replies(plan, 3, random.Random(1))
    with pytest.raises(ValueError, match="reshape"):
        _columns(plan, [*replies[:-1], replies[-1] + [None]], 3, form)
