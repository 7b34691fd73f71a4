"""core.online_format reproduces Feast's Redis format byte for byte (keys, field hashes, values,
timestamps, versioned view names), checked against Feast's own functions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from core import online_format as fmt


@pytest.mark.parametrize("value", [0, 1, 7, 255, 9_100_001, 2**40 + 3, 2**63 - 1, -1, -(2**63)])
def test_int64_entity_key_equals_feast(value):
    expected = serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=value)]), 3) + b"rtml_fraud"
    assert fmt.entity_key_encoder("user_id", fmt.INT64, "rtml_fraud")(value) == expected
    assert fmt.entity_keys("user_id", fmt.INT64, np.array([value], dtype=np.int64), "rtml_fraud") == [expected]


def test_int64_entity_values_invert_feast_keys_and_refuse_other_keys():
    values = [0, 1, 9_100_001, 2**63 - 1, -1, -(2**63)]
    keys = [serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=v)]), 3) + b"rtml_fraud"
            for v in values]
    assert fmt.int64_entity_values("user_id", keys, "rtml_fraud").tolist() == values
    for other in (keys[1] + b"x", keys[1].replace(b"user_id", b"user_ix"), fmt.entity_keys("user_id", fmt.STRING, ["1"], "rtml_fraud")[0]):
        with pytest.raises(ValueError, match="not an int64 'user_id' key"):
            fmt.int64_entity_values("user_id", [keys[0], other], "rtml_fraud")


def test_int32_entity_values_invert_feast_keys_and_refuse_other_keys():
    values = [0, 7, 2**31 - 1, -(2**31)]
    keys = [serialize_entity_key(EntityKey(join_keys=["store_id"], entity_values=[Value(int32_val=v)]), 3) + b"p"
            for v in values]
    assert fmt.int32_entity_values("store_id", keys, "p").tolist() == values
    for other in (keys[1] + b"x", fmt.entity_keys("store_id", fmt.INT64, [7], "p")[0]):
        with pytest.raises(ValueError, match="not an int32 'store_id' key"):
            fmt.int32_entity_values("store_id", [keys[0], other], "p")


def test_string_entity_values_invert_feast_keys_and_refuse_other_keys():
    values = ["", "DE", "ünïcode-7", "x" * 300]
    keys = [serialize_entity_key(EntityKey(join_keys=["country"], entity_values=[Value(string_val=v)]), 3) + b"rtml_fraud"
            for v in values]
    assert fmt.string_entity_values("country", keys, "rtml_fraud").tolist() == values
    for other in (keys[1] + b"x", keys[1][:-1], keys[1].replace(b"country", b"countrx"),
                  fmt.entity_keys("country", fmt.INT64, [1], "rtml_fraud")[0]):
        with pytest.raises(ValueError, match="not a string 'country' key"):
            fmt.string_entity_values("country", [keys[0], other], "rtml_fraud")


@pytest.mark.parametrize("value", [0, -5, 2**31 - 1])
def test_int32_entity_key_equals_feast(value):
    expected = serialize_entity_key(EntityKey(join_keys=["k"], entity_values=[Value(int32_val=value)]), 3) + b"p"
    assert fmt.entity_key_encoder("k", fmt.INT32, "p")(value) == expected


@pytest.mark.parametrize("value", ["", "m-1", "ünïcode", "x" * 300])
def test_string_entity_key_equals_feast(value):
    expected = serialize_entity_key(EntityKey(join_keys=["merchant"], entity_values=[Value(string_val=value)]), 3) + b"proj"
    assert fmt.entity_key_encoder("merchant", fmt.STRING, "proj")(value) == expected
    assert fmt.entity_keys("merchant", fmt.STRING, [value], "proj") == [expected]


@pytest.mark.parametrize("ref", ["user_profile:credit_limit", "user_txn_aggregates:txn_mean_24h", "a:b", "vü:ß", "v_v3:x"])
def test_field_hash_equals_feast(ref):
    view, feature = ref.split(":")
    assert fmt.field_hash(view, feature) == _mmh3(ref)


class _Projection:
    def __init__(self, tag):
        self.version_tag = tag


class _View:
    def __init__(self, name, tag=None, current=None):
        self.name, self.projection, self.current_version_number = name, _Projection(tag), current


@pytest.mark.parametrize("tag,current", [(None, None), (None, 0), (None, 3), (2, 5), (0, 4), (7, None)])
@pytest.mark.parametrize("enabled", [False, True])
def test_versioned_name_equals_feast(tag, current, enabled):
    view = _View("user_txn_aggregates", tag, current)
    assert fmt.versioned_name(view.name, fmt.view_version(view), enabled) == compute_versioned_name(view, enabled)


VALUES = [
    Value(double_val=0.0), Value(double_val=-12.5), Value(double_val=1e300), Value(double_val=float("nan")),
    Value(int64_val=0), Value(int64_val=42), Value(int64_val=-42), Value(int64_val=2**62 + 5),
    Value(int32_val=-7), Value(int32_val=300), Value(float_val=1.25), Value(bool_val=True), Value(bool_val=False),
    Value(string_val=""), Value(string_val="DE"), Value(string_val="ünïcode " * 40),
    Value(unix_timestamp_val=1_700_000_000), Value(double_list_val={"val": [1.0, 2.5]}),
]


@pytest.mark.parametrize("value", VALUES, ids=[str(v.WhichOneof("val")) + str(i) for i, v in enumerate(VALUES)])
def test_value_decoding_equals_protobuf(value):
    expected = feast_value_type_to_python_type(value)
    got = fmt.decode_value(value.SerializeToString())
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    elif value.WhichOneof("val") == "unix_timestamp_val":
        assert got == value.unix_timestamp_val  # epoch seconds (Feast converts to datetime)
    else:
        assert got == expected
        assert type(got) is type(expected)


def test_absent_and_null_values_decode_to_none():
    assert fmt.decode_value(None) is None
    assert fmt.decode_value(b"") is None  # Feast writes an empty Value for nulls
    assert fmt.decode_value(Value(null_val=0).SerializeToString()) is None


def test_decode_values_equals_decode_value_and_stays_bounded(monkeypatch):
    """The memo gives decode_value's value and type on first and repeated sight, keeps only short strings,
    integers and booleans, and stops growing at its bound."""
    monkeypatch.setattr(fmt, "_SEEN", {None: None, b"": None})
    monkeypatch.setattr(fmt, "_SEEN_MAX", 8)
    raw = [v.SerializeToString() for v in VALUES] + [None, b"", Value(string_val="x" * 100).SerializeToString()]
    for _ in range(3):  # first sight, then from the memo
        got = fmt.decode_values(raw)
        for b, g in zip(raw, got, strict=True):
            want = fmt.decode_value(b)
            assert type(g) is type(want)
            assert g == want or (isinstance(g, float) and math.isnan(g) and math.isnan(want))
    assert len(fmt._SEEN) == 8
    assert all(type(v) in (str, int, bool) or v is None for v in fmt._SEEN.values())
    assert all(k is None or len(k) <= fmt._SEEN_LEN for k in fmt._SEEN)

@pytest.mark.parametrize("seconds,nanos", [(0, 0), (1_700_000_000, 0), (1_700_000_000, 123_456_000), (5, 999_999_999)])
def test_timestamp_decoding_equals_protobuf(seconds, nanos):
    raw = Timestamp(seconds=seconds, nanos=nanos).SerializeToString()
    assert fmt.decode_timestamp(raw) == pytest.approx(seconds + nanos / 1e9, abs=1e-9)
    assert fmt.decode_timestamp_us(raw) == seconds * 1_000_000 + nanos // 1000
    assert fmt.decode_timestamp(None) is None


def test_timestamp_encoding_equals_protobuf():
    us = np.array([0, 1, 999_999, 1_700_000_000_000_000, 1_700_000_000_123_456, -1_000_000])
    want = []
    for u in us.tolist():
        t = Timestamp()
        t.FromMicroseconds(u)
        want.append(t.SerializeToString())
    assert fmt.encode_timestamps(us) == want


def _feast_bytes(values, value_type) -> list[bytes]:
    return [p.SerializeToString() for p in python_values_to_proto_values(list(values), value_type)]


@pytest.mark.parametrize(
    "value_type,values",
    [
        (ValueType.INT64, [0, 1, -1, 127, 128, 2**40, -(2**63), 2**63 - 1]),
        (ValueType.DOUBLE, [0.0, -0.0, 1.5, -3.25, 1e300, 123456.78, float("nan")]),
        (ValueType.STRING, ["", "DE", "ünïcode", "x" * 200, None]),
        (ValueType.INT32, [0, 5, -5, 2**31 - 1]),
        (ValueType.FLOAT, [0.0, 1.25, -2.5]),
        (ValueType.BOOL, [True, False]),
    ],
)
def test_column_encoding_equals_feast(value_type, values):
    col = pd.Series(values)
    assert fmt.encode_column(int(value_type.value), col) == _feast_bytes(values, value_type)


def test_int64_column_with_nulls_encodes_empty_values():
    col = pd.Series([1, None, 3], dtype="Int64")
    assert fmt.encode_column(fmt.INT64, col) == [Value(int64_val=1).SerializeToString(), b"", Value(int64_val=3).SerializeToString()]


def test_timestamp_fast_path_equals_protobuf_on_random_times():
    import random

    rng = random.Random(1)
    for _ in range(20_000):
        sec = rng.choice([0, 1, 5, 2**28 - 1, 2**28, rng.randrange(2**28, 2**35), 2**35 - 1, 2**35, rng.randrange(0, 2**40)])
        nanos = rng.choice([0, 1, 999_999_999, rng.randrange(0, 10**9)])
        raw = Timestamp(seconds=sec, nanos=nanos).SerializeToString()
        assert fmt.decode_timestamp(raw) == sec + nanos / 1e9, (sec, nanos)


@pytest.mark.parametrize("n", [2, 3, 14])
def test_doubles_decoder_equals_one_by_one_or_declines(n):
    values = [float(i) * 1.5 - 3 for i in range(n)]
    raw = [Value(double_val=v).SerializeToString() for v in values]
    assert fmt.doubles_decoder(n)(raw) == tuple(values)
    assert fmt.doubles_decoder(n)([*raw[:-1], b""]) is None  # a null: decoded one by one instead
    assert fmt.doubles_decoder(n)([*raw[:-1], None]) is None  # an absent field
    assert fmt.doubles_decoder(n)([*raw[:-1], Value(int64_val=2**60).SerializeToString()]) is None
