"""The two message shapes of the ``predictions`` topic, and the one way to read either as records.

A message holds either **one record** (a JSON object with the ``PREDICTION_FIELDS`` of
:mod:`core.contracts`; Kafka key: its request id; Kafka timestamp: its event time), or **a batch of
records** in columns, written by the prediction log for many predictions at once (one message and one
produce call instead of one per prediction, and no per-record dict to build)::

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
from typing import Any, NamedTuple

import msgspec

BATCH_KEY = "prediction_batch"
_BATCH_PREFIX = b'{"' + BATCH_KEY.encode() + b'"'
MAX_BATCH_BYTES = 800_000  # under Kafka's default 1 MB message limit

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
    return value[: len(_BATCH_PREFIX)] == _BATCH_PREFIX


def encode_batch(fields: Sequence[str], columns: dict[str, list], feature_names: Sequence[str],
                 features: list[list], event_ms: list[int]) -> bytes:
    """A batch message (see the module doc). ``columns`` holds every field of ``fields`` but ``features``."""
    return _encode({BATCH_KEY: {"fields": list(fields), "columns": columns, "feature_names": list(feature_names),
                                "features": features, "event_ms": event_ms}})


def batch_records(value: bytes) -> list[tuple[bytes, int, bytes]]:
    """The records of a batch message: (record JSON, event time ms, request id) each."""
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
