"""The fast codec reproduces Feast's own Redis format byte for byte (keys, field hashes, values)."""

from __future__ import annotations

import math

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from bentos.feast_codec import (
    VALUE_TYPE_INT64,
    VALUE_TYPE_STRING,
    decode_timestamp,
    decode_value,
    entity_key_encoder,
    mmh3_field,
)


@pytest.mark.parametrize("value", [0, 1, 7, 255, 9_100_001, 2**40 + 3, 2**63 - 1, -1, -(2**63)])
def test_int64_entity_key_equals_feast(value):
    expected = serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=value)]), 3) + b"rtml_fraud"
    assert entity_key_encoder("user_id", VALUE_TYPE_INT64, "rtml_fraud")(value) == expected


@pytest.mark.parametrize("value", ["", "m-1", "ünïcode", "x" * 300])
def test_string_entity_key_equals_feast(value):
    expected = serialize_entity_key(EntityKey(join_keys=["merchant"], entity_values=[Value(string_val=value)]), 3) + b"proj"
    assert entity_key_encoder("merchant", VALUE_TYPE_STRING, "proj")(value) == expected


@pytest.mark.parametrize("ref", ["user_profile:credit_limit", "user_txn_aggregates:txn_mean_24h", "a:b", "vü:ß"])
def test_field_hash_equals_feast(ref):
    view, feature = ref.split(":")
    assert mmh3_field(view, feature) == _mmh3(ref)


VALUES = [
    Value(double_val=0.0),
    Value(double_val=-12.5),
    Value(double_val=1e300),
    Value(double_val=float("nan")),
    Value(int64_val=0),
    Value(int64_val=42),
    Value(int64_val=-42),
    Value(int64_val=2**62 + 5),
    Value(int32_val=-7),
    Value(int32_val=300),
    Value(float_val=1.25),
    Value(bool_val=True),
    Value(bool_val=False),
    Value(string_val=""),
    Value(string_val="DE"),
    Value(string_val="ünïcode " * 40),
    Value(unix_timestamp_val=1_700_000_000),
    Value(double_list_val={"val": [1.0, 2.5]}),
]


@pytest.mark.parametrize("value", VALUES, ids=[str(v.WhichOneof("val")) + str(i) for i, v in enumerate(VALUES)])
def test_value_decoding_equals_protobuf(value):
    expected = feast_value_type_to_python_type(value)
    got = decode_value(value.SerializeToString())
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    elif value.WhichOneof("val") == "unix_timestamp_val":
        assert got == value.unix_timestamp_val  # epoch seconds (Feast converts to datetime)
    else:
        assert got == expected
        assert type(got) is type(expected)


def test_absent_and_null_values_decode_to_none():
    assert decode_value(None) is None
    assert decode_value(b"") is None  # Feast writes an empty Value for nulls
    assert decode_value(Value(null_val=0).SerializeToString()) is None


@pytest.mark.parametrize("seconds,nanos", [(0, 0), (1_700_000_000, 0), (1_700_000_000, 123_456_000), (5, 999_999_999)])
def test_timestamp_decoding_equals_protobuf(seconds, nanos):
    ts = Timestamp(seconds=seconds, nanos=nanos)
    assert decode_timestamp(ts.SerializeToString()) == pytest.approx(seconds + nanos / 1e9, abs=1e-9)
    assert decode_timestamp(None) is None
