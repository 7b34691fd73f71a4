"""Feast's Redis online format, the one place rtml writes it down (pure functions, no I/O).

Feast (entity key serialization v3) stores one Redis hash per entity key:

* key = ``serialize_entity_key(join keys, values) + project``;
* field ``mmh3("<stored view>:<feature>")`` (4 bytes) holds a serialized ``feast.types.Value``;
* field ``_ts:<stored view>`` holds a serialized ``google.protobuf.Timestamp`` (the row's event time);
* ``<stored view>`` is the view name, or ``<view>_v<N>`` when the registry enables online feature view
  versioning (``compute_versioned_name`` in ``feast.infra.online_stores.helpers``).

The scalar functions serve the request hot path (a few ``struct`` calls); the ``encode_*`` functions
encode whole columns (NumPy) for the writers. ``tests/core/test_online_format.py`` checks every one
against Feast's own functions byte for byte.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import length_hint as _length
from typing import Any

import numpy as np

_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_I32 = struct.Struct("<i")
_F64 = struct.Struct("<d")
_F32 = struct.Struct("<f")

# feast.types.ValueType numbers (value_type.proto)
STRING, INT32, INT64, DOUBLE, FLOAT, BOOL, UNIX_TIMESTAMP = 2, 3, 4, 5, 6, 7, 8
ENTITY_KEY_SERIALIZATION_VERSION = 3


# ---- names ---------------------------------------------------------------------------------------
def versioned_name(name: str, version: int | None, enabled: bool) -> str:
    """The name a view's fields are stored under: ``name`` or ``name_v<version>`` (Feast's rule)."""
    if enabled and version is not None and version > 0:
        return f"{name}_v{version}"
    return name


def view_version(view: Any) -> int | None:
    """The version Feast uses for a view object: its projection's version tag, else its current version."""
    version = getattr(getattr(view, "projection", None), "version_tag", None)
    if version is None:
        version = getattr(view, "current_version_number", None)
    return version


def field_hash(stored_view: str, feature: str) -> bytes:
    """Redis hash field of ``view:feature`` (Feast's ``_mmh3``: murmur3 x86 32, little endian)."""
    import mmh3

    return _U32.pack(mmh3.hash(f"{stored_view}:{feature}", signed=False))


def ts_field(stored_view: str) -> bytes:
    """The hash field holding the event time of a view's row."""
    return f"_ts:{stored_view}".encode()


# ---- entity keys ---------------------------------------------------------------------------------
def _key_head(join_key: str) -> bytes:
    jk = join_key.encode()
    return _U32.pack(1) + _U32.pack(STRING) + _U32.pack(len(jk)) + jk


def int64_key_parts(join_key: str, project: str) -> tuple[bytes, bytes]:
    """The bytes before and after the 8 value bytes (little-endian int64) of an int64 entity's Redis key."""
    return _key_head(join_key) + _U32.pack(INT64) + _U32.pack(8), project.encode()


def entity_key_encoder(join_key: str, value_type: int, project: str) -> Callable[[Any], bytes]:
    """A function ``value -> Redis key`` for a single-join-key entity (serialization v3)."""
    head, tail = _key_head(join_key), project.encode()
    if value_type == INT64:
        (prefix, _), pack = int64_key_parts(join_key, project), _I64.pack
        return lambda v: prefix + pack(v) + tail
    if value_type == INT32:
        prefix32, pack32 = head + _U32.pack(INT32) + _U32.pack(4), _I32.pack
        return lambda v: prefix32 + pack32(v) + tail
    if value_type == STRING:
        prefix_s = head + _U32.pack(STRING)

        def encode_str(v: Any) -> bytes:
            b = str(v).encode()
            return prefix_s + _U32.pack(len(b)) + b + tail

        return encode_str
    raise ValueError(f"entity value type {value_type} is not supported")


def entity_keys(join_key: str, value_type: int, values: Sequence[Any] | np.ndarray, project: str) -> list[bytes]:
    """Redis keys of many entities (vectorised for int64 ids)."""
    if value_type == INT64:
        prefix, tail = int64_key_parts(join_key, project)
        raw = np.ascontiguousarray(values, dtype="<i8").tobytes()
        return [prefix + raw[i : i + 8] + tail for i in range(0, len(raw), 8)]
    encode = entity_key_encoder(join_key, value_type, project)
    return [encode(v.item() if isinstance(v, np.generic) else v) for v in values]


def int64_entity_values(join_key: str, keys: Sequence[bytes], project: str) -> np.ndarray:
    """The int64 entity ids of Redis keys built by :func:`entity_keys` (the inverse, for one join key)."""
    prefix, tail = int64_key_parts(join_key, project)
    width = len(prefix) + 8 + len(tail)
    for k in keys:
        if len(k) != width or not k.startswith(prefix) or not k.endswith(tail):
            raise ValueError(f"not an int64 {join_key!r} key of project {project!r}: {k!r}")
    return np.frombuffer(b"".join(k[len(prefix) : len(prefix) + 8] for k in keys), dtype="<i8").astype(np.int64)


def int32_entity_values(join_key: str, keys: Sequence[bytes], project: str) -> np.ndarray:
    """The ids (as int64) of int32 entities' Redis keys built by :func:`entity_keys` (the inverse)."""
    prefix, tail = _key_head(join_key) + _U32.pack(INT32) + _U32.pack(4), project.encode()
    width = len(prefix) + 4 + len(tail)
    for k in keys:
        if len(k) != width or not k.startswith(prefix) or not k.endswith(tail):
            raise ValueError(f"not an int32 {join_key!r} key of project {project!r}: {k!r}")
    return np.frombuffer(b"".join(k[len(prefix) : len(prefix) + 4] for k in keys), dtype="<i4").astype(np.int64)


def string_entity_values(join_key: str, keys: Sequence[bytes], project: str) -> np.ndarray:
    """The string entity values (an object array) of Redis keys built by :func:`entity_keys` (the inverse)."""
    prefix, tail = _key_head(join_key) + _U32.pack(STRING), project.encode()
    out = []
    for k in keys:
        n = _U32.unpack_from(k, len(prefix))[0] if len(k) >= len(prefix) + 4 else -1
        if not k.startswith(prefix) or not k.endswith(tail) or len(k) != len(prefix) + 4 + n + len(tail):
            raise ValueError(f"not a string {join_key!r} key of project {project!r}: {k!r}")
        out.append(k[len(prefix) + 4 : len(prefix) + 4 + n].decode())
    return np.array(out, dtype=object)


# ---- values: encode (columns) ----------------------------------------------------------------------
def _tagged_varints(tag: int, values: np.ndarray) -> list[bytes]:
    """Protobuf ``tag + varint(value)`` for every value (two's complement, 64 bit), vectorised."""
    v = np.asarray(values, dtype=np.int64).view(np.uint64)
    n = v.shape[0]
    groups = np.empty((n, 11), dtype=np.uint8)
    groups[:, 0] = tag
    for k in range(10):
        groups[:, k + 1] = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
    nbytes = np.ones(n, dtype=np.int64)
    for k in range(1, 10):
        nbytes += v >= (np.uint64(1) << np.uint64(7 * k))
    cont = np.arange(10)[None, :] < (nbytes - 1)[:, None]
    groups[:, 1:] |= np.where(cont, 0x80, 0).astype(np.uint8)
    keep = np.arange(11)[None, :] < (nbytes + 1)[:, None]
    blob = groups[keep].tobytes()
    ends = np.cumsum(nbytes + 1).tolist()
    return [blob[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def _nulls(out: list[bytes], mask: np.ndarray) -> list[bytes]:
    for i in np.flatnonzero(mask).tolist():
        out[i] = b""  # Feast writes an empty Value for a null
    return out


def encode_int64_values(values: np.ndarray, null: np.ndarray | None = None) -> list[bytes]:
    """``Value(int64_val=v).SerializeToString()`` for each value (``b""`` where ``null``)."""
    out = _tagged_varints(0x20, values)
    return out if null is None else _nulls(out, null)


def encode_int32_values(values: np.ndarray, null: np.ndarray | None = None) -> list[bytes]:
    out = _tagged_varints(0x18, np.asarray(values, dtype=np.int64))
    return out if null is None else _nulls(out, null)


def encode_bool_values(values: np.ndarray, null: np.ndarray | None = None) -> list[bytes]:
    out = _tagged_varints(0x38, np.asarray(values, dtype=bool).astype(np.int64))
    return out if null is None else _nulls(out, null)


def encode_unix_timestamp_values(seconds: np.ndarray, null: np.ndarray | None = None) -> list[bytes]:
    out = _tagged_varints(0x40, seconds)
    return out if null is None else _nulls(out, null)


def _fixed(tag: int, arr: np.ndarray, width: int) -> list[bytes]:
    n = arr.shape[0]
    framed = np.empty((n, 1 + width), dtype=np.uint8)
    framed[:, 0] = tag
    framed[:, 1:] = arr.view(np.uint8).reshape(n, width)
    blob = framed.tobytes()
    w = 1 + width
    return [blob[w * i : w * i + w] for i in range(n)]


def encode_double_values(values: np.ndarray) -> list[bytes]:
    """``Value(double_val=v)`` bytes; NaN (null) gives ``Value()`` (empty), like Feast."""
    arr = np.ascontiguousarray(values, dtype="<f8")
    return _nulls(_fixed(0x29, arr, 8), np.isnan(arr))


def encode_float_values(values: np.ndarray) -> list[bytes]:
    arr = np.ascontiguousarray(values, dtype="<f4")
    return _nulls(_fixed(0x35, arr, 4), np.isnan(arr))


def encode_string_values(values: Sequence[Any]) -> list[bytes]:
    """``Value(string_val=v)`` bytes; ``None``/NaN gives ``Value()``."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(b"")
        else:
            b = str(v).encode()
            out.append(b"\x12" + _varint(len(b)) + b)
    return out


def encode_timestamps(ts_us: np.ndarray) -> list[bytes]:
    """``google.protobuf.Timestamp`` bytes (zero fields omitted) of microsecond epoch times."""
    us = np.asarray(ts_us, dtype=np.int64)
    seconds, micros = np.divmod(us, 1_000_000)
    sec = _tagged_varints(0x08, seconds)
    nan = _tagged_varints(0x10, micros * 1000)
    zs, zn = (seconds == 0).tolist(), (micros == 0).tolist()
    return [(b"" if a0 else a) + (b"" if b0 else b) for a, b, a0, b0 in zip(sec, nan, zs, zn, strict=True)]


def encode_column(value_type: int, column: Any) -> list[bytes]:
    """Serialized ``Value`` of every element of a pandas column of the given Feast value type."""
    import pandas as pd

    col = pd.Series(column)
    if value_type == DOUBLE:
        return encode_double_values(col.to_numpy(np.float64, na_value=np.nan))
    if value_type == FLOAT:
        return encode_float_values(col.to_numpy(np.float32, na_value=np.nan))
    if value_type == STRING:
        return encode_string_values(col.astype(object).where(col.notna(), None).tolist())
    null = col.isna().to_numpy()
    filled = col.where(~null, 0)
    if value_type == INT64:
        return encode_int64_values(filled.to_numpy(np.int64), null if null.any() else None)
    if value_type == INT32:
        return encode_int32_values(filled.to_numpy(np.int64), null if null.any() else None)
    if value_type == BOOL:
        return encode_bool_values(filled.to_numpy(bool), null if null.any() else None)
    if value_type == UNIX_TIMESTAMP:
        secs = pd.to_datetime(filled, utc=True).astype("datetime64[us, UTC]").astype("int64") // 1_000_000
        return encode_unix_timestamp_values(secs.to_numpy(np.int64), null if null.any() else None)
    raise ValueError(f"feature value type {value_type} is not supported by the online writer")


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


# ---- values: decode (hot path) ---------------------------------------------------------------------
def _read_varint(b: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
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
    """Anything but a scalar: protobuf and Feast's type map."""
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
        if len(b) == 2:  # 0..127: one varint byte
            return b[1]
        return _signed64(_read_varint(b, 1)[0])
    if tag == 0x12:  # string_val (2, length-delimited)
        if b[1] < 0x80:  # shorter than 128 bytes: one length byte
            return b[2 : 2 + b[1]].decode()
        n, pos = _read_varint(b, 1)
        return b[pos : pos + n].decode()
    if tag == 0x18:  # int32_val
        return _signed32(_read_varint(b, 1)[0])
    if tag == 0x35:  # float_val (6, fixed32)
        return _F32.unpack_from(b, 1)[0]
    if tag == 0x38:  # bool_val
        return bool(_read_varint(b, 1)[0])
    if tag == 0x40:  # unix_timestamp_val
        return _signed64(_read_varint(b, 1)[0])
    if tag == 0x98 and len(b) >= 2 and b[1] == 0x01:  # null_val (19)
        return None
    return _slow_value(b)


# Serialized strings, integers and booleans seen before, with their value: a batch's categorical columns
# (countries, channels, small counts) repeat a few values, and a dict lookup is 6x cheaper than a decode.
_SEEN: dict[bytes | None, Any] = {None: None, b"": None}
_SEEN_MAX = 1 << 14  # entries; values seen after that are decoded every time
_SEEN_LEN = 66  # bytes of a remembered serialized value at most (a 64-byte string)
_UNSEEN = object()


def decode_values(raw: Sequence[bytes | None]) -> list:
    """``[decode_value(b) for b in raw]``, repeated short strings, integers and booleans from a bounded memo."""
    seen = _SEEN.get
    out = [seen(b, _UNSEEN) for b in raw]
    for i, v in enumerate(out):
        if v is _UNSEEN:
            b = raw[i]
            v = out[i] = decode_value(b)
            if type(v) in (str, int, bool) and len(b) <= _SEEN_LEN and len(_SEEN) < _SEEN_MAX:  # type: ignore[arg-type]
                _SEEN[b] = v
    return out


def doubles_decoder(n: int) -> Callable[[Sequence[bytes | None]], tuple[float, ...] | None]:
    """A function decoding ``n`` serialized ``Value(double_val=...)`` at once (one ``struct`` call), or
    returning ``None`` unless all ``n`` are present doubles (then decode them one by one)."""
    unpack = struct.Struct("<" + "xd" * n).unpack
    size, tags, join = 9 * n, b"\x29" * n, b"".join

    def decode(raw: Sequence[bytes | None]) -> tuple[float, ...] | None:
        try:
            joined = join(raw)
        except TypeError:  # an absent field
            return None
        if len(joined) == size and joined[::9] == tags:
            return unpack(joined)
        return None

    return decode


def _timestamp_parts(b: bytes) -> tuple[int, int]:
    seconds = nanos = pos = 0
    n = len(b)
    while pos < n:
        tag = b[pos]
        value, pos = _read_varint(b, pos + 1)
        if tag == 0x08:
            seconds = _signed64(value)
        elif tag == 0x10:
            nanos = value
    return seconds, nanos


def decode_timestamp(b: bytes | None) -> float | None:
    """Epoch seconds of a serialized ``google.protobuf.Timestamp`` (``None`` when absent).

    Fast path (inline, no calls) for the times Feast writes: a 5-byte seconds varint (1978 .. 3058),
    optionally followed by nanos; anything else takes the general decoder."""
    if b is None:
        return None
    n = len(b)
    if n >= 6 and b[0] == 0x08 and b[5] < 0x80 and b[1] & b[2] & b[3] & b[4] & 0x80:
        sec = (b[1] & 0x7F) | (b[2] & 0x7F) << 7 | (b[3] & 0x7F) << 14 | (b[4] & 0x7F) << 21 | b[5] << 28
        if n == 6:
            return float(sec)
        if b[6] == 0x10 and n <= 12:
            nanos = shift = 0
            pos = 7
            while pos < n:
                byte = b[pos]
                pos += 1
                nanos |= (byte & 0x7F) << shift
                if byte < 0x80:
                    if pos == n:
                        return sec + nanos / 1e9
                    break
                shift += 7
    seconds, nanos = _timestamp_parts(b)
    return seconds + nanos / 1e9


def decode_timestamp_us(b: bytes | None) -> int | None:
    """Epoch microseconds of a serialized Timestamp (``None`` when absent)."""
    if b is None:
        return None
    seconds, nanos = _timestamp_parts(b)
    return seconds * 1_000_000 + nanos // 1000


# ---- many fields at once (the batch read's decoder) ---------------------------------------------
# What :func:`decode_fields` found in each field; ``FLOAT`` / ``INT`` / ``BOOL``: its number is exact
# (``float(decode_value(b))``, or the ``decode_timestamp`` of a timestamp field).
ABSENT, FLOAT_VALUE, INT_VALUE, BOOL_VALUE, NULL_VALUE, PYTHON_VALUE = 0, 1, 2, 3, 4, 5
_FIELDS_KERNEL: list = []


def _decode_fields(buf, starts, lens, is_ts, out, status):  # pragma: no cover - compiled by numba
    """The numbers of serialized fields in ``buf`` (field ``p``: ``lens[p]`` bytes from ``starts[p]``, -1:
    absent); field ``p`` is a Timestamp when ``is_ts[p % len(is_ts)]``, else a ``Value``. Anything but the
    scalar encodings :func:`decode_value` / :func:`decode_timestamp` read (a string, a truncated varint,
    another type) is left to them: ``PYTHON_VALUE``."""
    period = is_ts.size
    for p in range(lens.size):
        n = lens[p]
        out[p] = np.nan
        if n < 0:
            status[p] = 0  # ABSENT
            continue
        s = starts[p]
        end = s + n
        ts = is_ts[p % period]  # google.protobuf.Timestamp: seconds (1), nanos (2), varints
        if not ts:  # feast.types.Value: one field
            if n == 0:  # an empty Value
                status[p] = 4  # NULL_VALUE
                continue
            tag = buf[s]
            if tag == 0x29 and n >= 9:  # double_val
                out[p] = buf[s + 1 : s + 9].view(np.float64)[0]
                status[p] = 1  # FLOAT_VALUE
                continue
            if tag == 0x35 and n >= 5:  # float_val
                out[p] = buf[s + 1 : s + 5].view(np.float32)[0]
                status[p] = 1
                continue
            if tag == 0x98:  # null_val
                status[p] = 4 if n >= 2 and buf[s + 1] == 0x01 else 5
                continue
            if tag != 0x20 and tag != 0x40 and tag != 0x18 and tag != 0x38:
                status[p] = 5  # a string or anything else: decode_value decides (PYTHON_VALUE)
                continue
        status[p] = 1
        sec = np.int64(0)
        nanos = np.uint64(0)
        j = s
        while j < end:  # (tag, varint) pairs: every field of a Timestamp, the one field of a Value
            tag = buf[j]
            j += 1
            v = np.uint64(0)
            shift = np.uint64(0)
            complete = False
            while j < end:
                b = buf[j]
                j += 1
                v |= np.uint64(b & 0x7F) << shift
                if b < 0x80:
                    complete = True
                    break
                shift += np.uint64(7)
            if not complete:  # truncated: decode_value / decode_timestamp raise
                status[p] = 5
                break
            if not ts:
                if tag == 0x38:  # bool_val
                    out[p] = 1.0 if v != 0 else 0.0
                    status[p] = 3  # BOOL_VALUE
                elif tag == 0x18:  # int32_val
                    w = np.int64(v & np.uint64(0xFFFFFFFF))
                    out[p] = w - 4294967296 if w >= 2147483648 else w
                    status[p] = 2  # INT_VALUE
                else:  # int64_val, unix_timestamp_val
                    out[p] = np.int64(v)
                    status[p] = 2
                break
            if tag == 0x08:
                sec = np.int64(v)
            elif tag == 0x10:
                nanos = v
        if ts and status[p] == 1:
            out[p] = sec + nanos / 1e9


def _fields_kernel():
    if not _FIELDS_KERNEL:
        from core.compiled import compile_nogil

        _FIELDS_KERNEL.append(compile_nogil(_decode_fields))
    return _FIELDS_KERNEL[0]


def decode_fields(fields: list, is_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The numbers of many serialized fields at once (a compiled loop; a batch read's replies, flattened):
    ``float(decode_value(f))`` of a ``Value``, ``decode_timestamp(f)`` of a Timestamp (``is_ts`` repeats
    over the fields), NaN otherwise, and what each field held (``ABSENT`` .. ``PYTHON_VALUE``)."""
    n = len(fields)
    lens = np.fromiter(map(_length, fields, repeat(-1)), np.int64, n)  # None (absent): -1
    buf = np.frombuffer(b"".join(filter(None, fields)), np.uint8)
    starts = np.zeros(n, dtype=np.int64)
    np.cumsum(np.maximum(lens[:-1], 0), out=starts[1:])
    out = np.empty(n, dtype=np.float64)
    status = np.empty(n, dtype=np.int8)
    _fields_kernel()(buf, starts, lens, is_ts, out, status)
    return out, status


def decode_resp(data: bytes, starts: np.ndarray, lens: np.ndarray, is_ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_fields` of fields located in raw replies (:func:`core.resp.array_fields`), not copied out."""
    n = len(lens)
    out = np.empty(n, dtype=np.float64)
    status = np.empty(n, dtype=np.int8)
    _fields_kernel()(np.frombuffer(data, np.uint8), starts, lens, is_ts, out, status)
    return out, status


def as_number(value: Any) -> float:
    """A value as a model reads it: ``float(value)``, NaN when it is not a number (None, a word)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# The event time of a stored row, for the writers' server-side upsert script (Redis Lua): the same
# decoding as :func:`decode_timestamp_us` (non-negative epoch times).
LUA_TIMESTAMP_US = """
local function timestamp_us(raw)
  local sec, nanos, j = 0, 0, 1
  while j <= #raw do
    local tag = string.byte(raw, j)
    j = j + 1
    local val, mul, b = 0, 1, 128
    while b >= 128 do
      b = string.byte(raw, j)
      j = j + 1
      val = val + (b % 128) * mul
      mul = mul * 128
    end
    if tag == 8 then sec = val elseif tag == 16 then nanos = val end
  end
  return sec * 1000000 + math.floor(nanos / 1000)
end
"""
