"""Feast's Redis online-store format, encoded and decoded without protobuf objects on the hot path.

Feast (entity key serialization v3) stores one Redis hash per entity key:
key = serialize_entity_key(join keys, values) + project; hash fields = mmh3("view:feature") (4 bytes)
holding serialized ``feast.types.Value`` protos, and ``_ts:<view>`` holding a serialized
``google.protobuf.Timestamp``. These functions reproduce exactly that (checked against Feast's own
functions in ``tests/serving/test_feast_codec.py``) so a request costs a few struct calls.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")

# feast.types.ValueType enum values used in entity keys.
VALUE_TYPE_STRING = 2
VALUE_TYPE_INT64 = 4
VALUE_TYPE_INT32 = 3


def entity_key_encoder(join_key: str, value_type: int, project: str) -> Callable[[Any], bytes]:
    """A function ``value -> Redis key`` for a single-join-key entity (Feast serialization v3)."""
    key_bytes = join_key.encode()
    head = _U32.pack(1) + _U32.pack(VALUE_TYPE_STRING) + _U32.pack(len(key_bytes)) + key_bytes
    tail = project.encode()
    if value_type == VALUE_TYPE_INT64:
        prefix = head + _U32.pack(VALUE_TYPE_INT64) + _U32.pack(8)
        pack = _I64.pack
        return lambda v: prefix + pack(v) + tail
    if value_type == VALUE_TYPE_INT32:
        prefix = head + _U32.pack(VALUE_TYPE_INT32) + _U32.pack(4)
        pack32 = struct.Struct("<i").pack
        return lambda v: prefix + pack32(v) + tail
    if value_type == VALUE_TYPE_STRING:
        prefix = head + _U32.pack(VALUE_TYPE_STRING)

        def encode_str(v: Any) -> bytes:
            b = str(v).encode()
            return prefix + _U32.pack(len(b)) + b + tail

        return encode_str
    raise ValueError(f"entity value type {value_type} is not supported by the fast path")


def mmh3_field(view: str, feature: str) -> bytes:
    """Redis hash field of ``view:feature`` (Feast's ``_mmh3``)."""
    import mmh3

    return struct.pack("<Q", mmh3.hash(f"{view}:{feature}", signed=False))[:4]


def _varint(b: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        byte = b[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _signed32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def _slow_value(b: bytes) -> Any:
    """Anything but a scalar: let protobuf and Feast's type map do it."""
    from feast.protos.feast.types.Value_pb2 import Value
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(Value.FromString(b))


def decode_value(b: bytes | None) -> Any:
    """Python value of a serialized ``feast.types.Value`` (``None`` when absent or null)."""
    if not b:
        return None
    tag = b[0]
    if tag == 0x29:  # double_val (5, fixed64)
        return _F64.unpack_from(b, 1)[0]
    if tag == 0x20:  # int64_val (4, varint)
        return _signed64(_varint(b, 1)[0])
    if tag == 0x12:  # string_val (2, length-delimited)
        n, pos = _varint(b, 1)
        return b[pos : pos + n].decode()
    if tag == 0x18:  # int32_val
        return _signed32(_varint(b, 1)[0])
    if tag == 0x35:  # float_val (6, fixed32)
        return _F32.unpack_from(b, 1)[0]
    if tag == 0x38:  # bool_val
        return bool(_varint(b, 1)[0])
    if tag == 0x40:  # unix_timestamp_val
        return _signed64(_varint(b, 1)[0])
    if tag == 0x98 and len(b) >= 2 and b[1] == 0x01:  # null_val (19)
        return None
    return _slow_value(b)


def decode_timestamp(b: bytes | None) -> float | None:
    """Epoch seconds of a serialized ``google.protobuf.Timestamp`` (``None`` when absent)."""
    if b is None:
        return None
    seconds = 0
    nanos = 0
    pos = 0
    n = len(b)
    while pos < n:
        tag = b[pos]
        value, pos = _varint(b, pos + 1)
        if tag == 0x08:
            seconds = _signed64(value)
        elif tag == 0x10:
            nanos = value
    return seconds + nanos / 1e9


def as_float(value: Any) -> float:
    """Model input of a feature value: numbers as float, bools as 0/1, anything else NaN."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
