"""The message shapes of the ``predictions`` topic, and the one way to read any of them as records.

A message holds either **one record** (a JSON object with the ``PREDICTION_FIELDS`` of
:mod:`core.contracts`; Kafka key: its request id; Kafka timestamp: its event time), or **a batch of
records** in columns (one message and one produce call instead of one per prediction, and no per-record
dict to build). Two batch shapes:

- **columns** (what rtml's prediction log writes): a msgpack array, :class:`Columns` in field order, built
  by :func:`encode_columns` from the values a service has at hand: request ids, the id field and entity
  keys, each request's own timestamp, prediction times, the model tag and variant, the feature matrix as
  float64 bytes (row-major), scores, decisions, missing features, feature ages, served flags and scoring
  seconds. Event times and timestamps are derived when read, with the same rule as for one record
  (:func:`event_seconds`), so the serving worker that encodes it does no per-record work: ~15 us for
  100 records against ~300 us for the JSON shape.
- **JSON** (earlier versions, and any producer outside rtml)::

    {"prediction_batch": {
        "fields": [the record's field names, in record order],
        "columns": {field: [one value per record], ...},   # every field but "features"
        "feature_names": [...], "features": [[one row of values per record], ...],
        "event_ms": [each record's event time, epoch ms]}}

(Kafka key: the first record's request id; Kafka timestamp: the newest event time.)

Consumers never look at the shape: :func:`expand` turns polled Kafka messages into
:class:`PredictionRecord` s, one per record, each with its own request id as key, its event time as
timestamp and the same JSON bytes a one-record message of it would carry. ``resume_offset`` is the offset
to commit once the record is processed: a batch message counts as processed after its last record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
import numpy as np

BATCH_KEY = "prediction_batch"
_BATCH_PREFIX = b'{"' + BATCH_KEY.encode() + b'"'
MAX_BATCH_BYTES = 800_000  # under Kafka's default 1 MB message limit

# compact JSON bytes; NaN and inf floats encode as null, aware datetimes as RFC 3339 with "Z" (microseconds
# when not zero), both in C
_encode = msgspec.json.Encoder().encode

# rtml's fields of a record, after ``request_id``, the event id and the service's entity keys (named by the feature
# repo: :func:`core.contracts.prediction_fields` puts them together)
RECORD_FIELDS: dict[str, type] = {
    "prediction_timestamp": str,  # when the model scored (wall clock)
    "event_timestamp": str,  # the request's event time (else the prediction time); also the Kafka message timestamp
    "model_name": str,
    "model_version": str,
    "variant": str,  # production | challenger (during a rollout)
    "served": bool,  # the caller got this score (false: a shadow prediction, or a failed challenger)
    "score": float,
    "decision": str,
    "latency_ms": float,  # model scoring time
    "features": dict,
    "missing_features": list,
    "feature_age_seconds": float,
}


def record_fields(id_field: str, entity_keys: Sequence[str]) -> list[str]:
    """A record's field names in order, for a service with this id field and these entity keys."""
    return [*dict.fromkeys(("request_id", id_field, *entity_keys)), *RECORD_FIELDS]


def event_seconds(t: Any, now: float) -> float:
    """Epoch seconds of a request's event time ``t`` (an aware or naive (= UTC) datetime, an ISO string, or
    None), capped at ``now`` (the prediction time); ``now`` when the request has none."""
    if t is None:
        return now
    if isinstance(t, str):  # requests that did not pass the pydantic model (tests, batch callers)
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return min(t.timestamp(), now)


def newest_event_ms(times: Sequence[Any], predicted: Sequence[float]) -> int:
    """The newest :func:`event_seconds` of a batch, epoch ms (a batch message's Kafka timestamp). One
    prediction time and datetimes of one kind (a request batch): the newest of them, capped (~5 us for 100)."""
    p = max(predicted)
    if times and times[0].__class__ is datetime and min(predicted) == p:
        if any(t is None for t in times):
            return int(p * 1000)
        try:
            return int(event_seconds(max(times), p) * 1000)
        except TypeError:  # aware and naive together: one by one
            pass
    return int(max(event_seconds(t, q) for t, q in zip(times, predicted, strict=True)) * 1000)


def utc_datetime(ts: float) -> datetime:
    """Epoch seconds as an aware UTC datetime (how a record's timestamps are written, one record or a batch)."""
    return datetime.fromtimestamp(ts, UTC)


COLUMNS_MARKER = "rtml.prediction_columns.1"


class Columns(msgspec.Struct, array_like=True):
    """The columns batch shape (a msgpack array in this field order); ``features``: float64 bytes, row-major,
    one row of ``feature_names`` per record."""

    marker: str
    request_ids: list[str]
    keys: dict[str, list[Any]]  # the id field and entity keys (record order), one value per record
    times: list[Any]  # each request's own timestamp: datetime, ISO string or None
    predicted: list[float]  # prediction times, epoch s
    model: str  # the model tag, "name:version"
    variant: str
    feature_names: list[str]
    features: bytes
    scores: list[float | None]
    decisions: list[str | None]
    missing: list[list[str]]
    ages: list[float | None]
    served: list[bool]
    seconds: list[float | None]  # scoring time per record, s


_pack = msgspec.msgpack.Encoder().encode
_decode_columns = msgspec.msgpack.Decoder(Columns).decode
_COLUMNS_PREFIX = _pack(Columns(COLUMNS_MARKER, [], {}, [], [], "", "", [], b"", [], [], [], [], [], []))[:1 + 1 + len(COLUMNS_MARKER)]


def encode_columns(request_ids: list[str], keys: dict[str, list], times: list, predicted: list[float], model: str,
                   variant: str, feature_names: list[str], features: np.ndarray, scores: list, decisions: list,
                   missing: list, ages: list, served: list[bool], seconds: list) -> bytes:
    """A columns batch message (``features``: the float64 matrix, one row per record)."""
    rows = np.ascontiguousarray(features, dtype=np.float64)
    if rows.shape != (len(request_ids), len(feature_names)):
        raise ValueError(f"feature matrix {rows.shape} is not {len(request_ids)} records x {len(feature_names)} features")
    return _pack(Columns(COLUMNS_MARKER, request_ids, keys, times, predicted, model, variant, feature_names,
                         rows.tobytes(), scores, decisions, missing, ages, served, seconds))


def _columns_records(value: bytes) -> list[tuple[bytes, int, bytes]]:
    try:
        b = _decode_columns(value)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedBatch(f"malformed prediction batch: {exc}") from None
    n = len(b.request_ids)
    if n == 0:
        raise MalformedBatch("empty prediction batch")
    width = len(b.feature_names)
    lists = (b.times, b.predicted, b.scores, b.decisions, b.missing, b.ages, b.served, b.seconds, *b.keys.values())
    if any(len(col) != n for col in lists) or len(b.features) != 8 * n * width:
        raise MalformedBatch(f"prediction batch columns differ in length from its {n} request ids")
    rows = np.frombuffer(b.features, dtype=np.float64).reshape(n, width).tolist()
    names = b.feature_names
    model_name, _, model_version = b.model.partition(":")
    keys = list(b.keys.items())
    stamps: dict[float, datetime] = {}  # a request batch shares one prediction time
    out = []
    for i in range(n):
        p = b.predicted[i]
        event_s = event_seconds(b.times[i], p)
        rid = b.request_ids[i]
        record: dict[str, Any] = {"request_id": rid}
        for f, col in keys:
            record[f] = col[i]
        record["prediction_timestamp"] = stamps[p] if p in stamps else stamps.setdefault(p, utc_datetime(p))
        record["event_timestamp"] = utc_datetime(event_s)
        record["model_name"] = model_name
        record["model_version"] = model_version
        record["variant"] = b.variant
        record["served"] = b.served[i]
        record["score"] = b.scores[i]
        record["decision"] = b.decisions[i]
        seconds = b.seconds[i]
        record["latency_ms"] = None if seconds is None else 1000.0 * seconds
        record["features"] = dict(zip(names, rows[i], strict=True))
        record["missing_features"] = b.missing[i]
        record["feature_age_seconds"] = b.ages[i]
        out.append((_encode(record), int(event_s * 1000), rid.encode()))
    return out


class _Batch(msgspec.Struct):
    fields: list[str]
    columns: dict[str, list[Any]]
    feature_names: list[str]
    features: list[list[Any]]
    event_ms: list[int]


class _Message(msgspec.Struct):
    prediction_batch: _Batch


_decode_batch = msgspec.json.Decoder(_Message).decode


class MalformedBatch(ValueError):
    """A batch message whose columns do not add up (counted as malformed by consumers)."""


class PredictionRecord(NamedTuple):
    """One prediction record of a polled message (the attributes of a Kafka ``ConsumerRecord`` a consumer reads)."""

    topic: str
    partition: int
    offset: int
    timestamp: int  # the record's event time, epoch ms
    key: bytes | None
    value: bytes  # the record's JSON object
    resume_offset: int  # commit this once the record is processed


def is_batch(value: bytes) -> bool:
    """True for a batch message of either shape."""
    return value[: len(_BATCH_PREFIX)] == _BATCH_PREFIX or value[: len(_COLUMNS_PREFIX)] == _COLUMNS_PREFIX


def encode_batch(fields: Sequence[str], columns: dict[str, list], feature_names: Sequence[str],
                 features: list[list], event_ms: list[int]) -> bytes:
    """A batch message (see the module doc). ``columns`` holds every field of ``fields`` but ``features``."""
    return _encode({BATCH_KEY: {"fields": list(fields), "columns": columns, "feature_names": list(feature_names),
                                "features": features, "event_ms": event_ms}})


def batch_records(value: bytes) -> list[tuple[bytes, int, bytes]]:
    """The records of a batch message of either shape: (record JSON, event time ms, request id) each."""
    if value[: len(_COLUMNS_PREFIX)] == _COLUMNS_PREFIX:
        return _columns_records(value)
    try:
        b = _decode_batch(value).prediction_batch
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedBatch(f"malformed prediction batch: {exc}") from None
    n = len(b.event_ms)
    cols = b.columns
    if n == 0:
        raise MalformedBatch("empty prediction batch")
    short = any(len(cols.get(f, ())) != n for f in b.fields if f != "features")
    if "features" not in b.fields or len(b.features) != n or short:
        raise MalformedBatch(f"prediction batch columns differ in length from its {n} event times")
    names = b.feature_names
    if any(len(row) != len(names) for row in b.features):
        raise MalformedBatch(f"a prediction batch row does not hold its {len(names)} features")
    out = []
    for i in range(n):
        record = {}
        for f in b.fields:
            record[f] = dict(zip(names, b.features[i], strict=True)) if f == "features" else cols[f][i]
        rid = record.get("request_id")
        out.append((_encode(record), b.event_ms[i], rid.encode() if isinstance(rid, str) else b""))
    return out


def expand(messages: Iterable[Any], on_malformed: Callable[[Any, MalformedBatch], None] | None = None) -> list[PredictionRecord]:
    """Polled ``predictions`` messages (kafka-python ``ConsumerRecord`` s) as one :class:`PredictionRecord` per
    prediction. A batch message that cannot be read goes to ``on_malformed(message, error)`` and yields no
    record (without ``on_malformed``, :class:`MalformedBatch` is raised)."""
    out: list[PredictionRecord] = []
    for m in messages:
        value = m.value
        if not (isinstance(value, bytes | bytearray) and is_batch(value)):
            out.append(PredictionRecord(m.topic, m.partition, m.offset, m.timestamp, m.key, value, m.offset + 1))
            continue
        try:
            records = batch_records(bytes(value))
        except MalformedBatch as exc:
            if on_malformed is None:
                raise
            on_malformed(m, exc)
            continue
        last = len(records) - 1
        for i, (raw, ts, rid) in enumerate(records):
            out.append(PredictionRecord(m.topic, m.partition, m.offset, ts, rid, raw, m.offset + 1 if i == last else m.offset))
    return out
