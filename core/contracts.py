"""Wire formats of the Kafka topics (JSON values). One definition, used by producers and consumers.

events (domain_topics().events)  -> TRANSACTION_FIELDS: the feature repo's KafkaSource schema (its DDL),
                                    timestamps as ISO-8601 UTC with 'Z'
labels (key: the event id)       -> LABEL_FIELDS: event id, the service's entity keys, event time, label time and
                                    label, from the feature repo's LabelView (label_timestamp: when it became known)
predictions (key: request_id)    -> PREDICTION_FIELDS: request id, event id and entity keys (from the feature repo),
                                    then rtml's fields (features: {name: value}, in the model's order); one
                                    record or a batch of them per message (core/prediction_messages.py)
alerts (key: alert name)         -> ALERT_FIELDS
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from core.errors import UserFacingError
from core.feature_repo import repo_contents, repo_path
from core.offline_sources import data_relative
from core.prediction_messages import RECORD_FIELDS

_DDL_TYPES = {"string": str, "bigint": int, "int": int, "long": int, "double": float, "float": float,
              "timestamp": str, "boolean": bool}


ALERT_FIELDS: dict[str, type] = {
    "alert": str,
    "severity": str,
    "started_at": str,
    "summary": str,
    "details": dict,
    "report_path": str,
    "runbook": str,
}


def ddl_fields(ddl: str) -> dict[str, type]:
    """Field -> wire type (timestamps travel as ISO strings) of a Spark DDL ``"name type, ..."``."""
    fields: dict[str, type] = {}
    for part in ddl.split(","):
        name, _, typ = part.strip().partition(" ")
        wire = _DDL_TYPES.get(typ.strip().lower())
        if not name or wire is None:
            raise UserFacingError(f"unsupported field {part.strip()!r} in the KafkaSource schema {ddl!r}")
        fields[name] = wire
    return fields


RANGE_TAG = "rtml.range."  # KafkaSource tag "rtml.range.<field>": "lo..hi" (inclusive; either side may be empty)
FUTURE_TOLERANCE_TAG = "rtml.future_tolerance_s"  # events stamped later than now + this go to the dead letters
DEFAULT_FUTURE_TOLERANCE_S = 300.0


@dataclass(frozen=True)
class SourceRules:
    """How a stream source's records are parsed and judged, from its ``KafkaSource`` declaration.

    ``fields``: wire types from the schema DDL; ``ranges``: value bounds per numeric field from the
    source's ``rtml.range.<field>`` tags; ``future_tolerance_s`` from ``rtml.future_tolerance_s``.
    """

    name: str
    fields: dict[str, type]
    timestamp_field: str
    ranges: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    future_tolerance_s: float = DEFAULT_FUTURE_TOLERANCE_S
    topic: str | None = None  # the Kafka topic carrying the records
    history_path: str | None = None  # the raw events (its batch source), relative to the data dir when rtml's

    def of_type(self, wire: type) -> tuple[str, ...]:
        """Fields of one wire type, in schema order (the timestamp field excluded)."""
        return tuple(f for f, t in self.fields.items() if t is wire and f != self.timestamp_field)


def _bound(text: str, tag: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise UserFacingError(f"tag {tag!r}: {text!r} is not a number") from None


def source_rules(source: Any) -> SourceRules:
    """The :class:`SourceRules` of a Feast ``KafkaSource`` (from a repo module or the registry)."""
    fields = ddl_fields(source.kafka_options.message_format.schema_json)
    ranges: dict[str, tuple[float | None, float | None]] = {}
    tolerance = DEFAULT_FUTURE_TOLERANCE_S
    for tag, value in (source.tags or {}).items():
        if tag.startswith(RANGE_TAG):
            name = tag[len(RANGE_TAG):]
            if fields.get(name) not in (int, float):
                raise UserFacingError(f"{source.name}: range tag {tag!r} names no numeric field of the schema")
            lo, sep, hi = value.partition("..")
            if not sep:
                raise UserFacingError(f"{source.name}: range tag {tag!r} must look like 'lo..hi', got {value!r}")
            ranges[name] = (_bound(lo, tag), _bound(hi, tag))
        elif tag == FUTURE_TOLERANCE_TAG:
            tolerance = _bound(value, tag) or 0.0
    ts = source.timestamp_field
    if ts not in fields:
        raise UserFacingError(f"{source.name}: timestamp field {ts!r} is not in the schema")
    batch = getattr(source, "batch_source", None)
    return SourceRules(
        name=source.name, fields=fields, timestamp_field=ts, ranges=ranges, future_tolerance_s=tolerance,
        topic=source.kafka_options.topic, history_path=data_relative(batch) if batch is not None else None,
    )


@cache
def _stream_rules(repo: str, source_name: str | None) -> SourceRules:
    from feast import KafkaSource

    sources = {s.name: s for s in repo_contents().data_sources if isinstance(s, KafkaSource)}
    if source_name is None and len(sources) == 1:
        source_name = next(iter(sources))
    if source_name not in sources:
        raise UserFacingError(f"the feature repo {repo} has no KafkaSource {source_name!r} (has: {sorted(sources)})")
    return source_rules(sources[source_name])


def stream_rules(source_name: str | None = None) -> SourceRules:
    """Rules of a stream source of the feature repo (the repo's only ``KafkaSource`` by default)."""
    return _stream_rules(str(repo_path()), source_name)


def stream_fields(source_name: str | None = None) -> dict[str, type]:
    """Fields of a stream topic's records, from the feature repo's ``KafkaSource``."""
    return dict(stream_rules(source_name).fields)


def arrow_schema(rules: SourceRules):
    """The Parquet layout of a stream source's raw events (offline history): its fields with Arrow types,
    timestamps as ``timestamp[us, UTC]`` (Spark cannot read nanoseconds)."""
    import pyarrow as pa

    types = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    return pa.schema(
        [(name, pa.timestamp("us", tz="UTC") if name == rules.timestamp_field else types[wire])
         for name, wire in rules.fields.items()]
    )


def iso_utc(ts_us) -> list[str]:
    """Wire timestamps: ISO-8601 UTC with microseconds and 'Z' (``2026-11-26T13:30:00.123456Z``), from epoch us."""
    import numpy as np

    text = np.datetime_as_string(np.asarray(ts_us, dtype=np.int64).astype("datetime64[us]"), unit="us")
    return [x + "Z" for x in text.tolist()]


_FORMATS = {str: '"%s"', int: "%d", float: "%r", bool: "%s"}


def record_template(fields: dict[str, type]) -> str:
    """A ``%``-format JSON template of one record with ``fields`` in order (values as a tuple in that order).

    The fast path for producers (no per-row ``json.dumps``): text values are inserted as they are, so it
    is meant for values that need no JSON escaping (ids, codes, ISO timestamps); booleans must be given
    as ``"true"``/``"false"``.
    """
    return "{" + ",".join(f'"{name}":{_FORMATS[wire]}' for name, wire in fields.items()) + "}"


def encode_records(fields: dict[str, type], rows) -> list[bytes]:
    """JSON bytes of each row (a tuple of values in ``fields`` order), byte for byte what goes on the wire."""
    fmt = record_template(fields)
    return [(fmt % row).encode() for row in rows]


def event_id_field(rules: SourceRules | None = None) -> str:
    """The field naming one event of the stream: the labelled event's key (the ``LabelView``'s entity, e.g. a
    transaction id), which must be a field of the stream source. Two records with the same id are one event
    sent twice: the stream job and the backfill count it once."""
    from core.feature_refs import label_definition

    rules = rules or stream_rules()
    key = label_definition().event_key
    if key not in rules.fields:
        raise UserFacingError(f"{rules.name}: the event id {key!r} (the label view's entity key) is not a field of "
                              f"the stream source (has: {sorted(rules.fields)})")
    return key


def label_fields(service_name: str | None = None) -> dict[str, type]:
    """Fields of a label record: event id, the service's entity keys, event time, label time, label."""
    from core.feature_refs import label_definition, service_definition

    labels = label_definition(service_name)
    events = stream_rules()
    fields: dict[str, type] = {labels.event_key: events.fields.get(labels.event_key, str)}
    for key in service_definition(service_name).join_keys:
        fields[key] = events.fields.get(key, int)
    fields[events.timestamp_field] = str
    fields[labels.label_timestamp_field] = str
    fields[labels.label] = int
    return fields


@dataclass(frozen=True)
class DomainTopics:
    """The domain's topics, named by the feature repo: its event stream (the ``KafkaSource``), that stream's
    dead letters (``<events>_dlq``) and its labels (the ``LabelView``'s ``topic`` tag, default ``labels``)."""

    events: str
    dead_letters: str
    labels: str


def domain_topics() -> DomainTopics:
    """The feature repo's topics (see :class:`DomainTopics`)."""
    from core.feature_refs import label_definition

    events = stream_rules().topic or "events"
    return DomainTopics(events=events, dead_letters=f"{events}_dlq", labels=label_definition().topic or "labels")


def all_topics() -> list[str]:
    """Every topic rtml uses: the domain's (from the feature repo) and the service topics (from settings)."""
    from core.settings import settings

    d, t = domain_topics(), settings().topics
    return [d.events, d.dead_letters, d.labels, *t.all()]


def prediction_fields(service_name: str | None = None) -> dict[str, type]:
    """Fields of a prediction record: request id, the event id and the service's entity keys (named by the feature
    repo), then rtml's own fields."""
    from core.feature_refs import label_definition, service_definition

    events = stream_rules()
    fields: dict[str, type] = {"request_id": str}
    event_key = label_definition(service_name).event_key
    fields[event_key] = events.fields.get(event_key, str)
    for key in service_definition(service_name).join_keys:
        fields[key] = events.fields.get(key, int)
    return {**fields, **RECORD_FIELDS}


def __getattr__(name: str):
    # The reference domain's records: derived from the feature repo, never written down twice.
    if name == "PREDICTION_FIELDS":
        return prediction_fields()
    if name == "TRANSACTION_FIELDS":
        return stream_fields()
    if name == "LABEL_FIELDS":
        return label_fields()
    raise AttributeError(name)
