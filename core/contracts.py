"""Wire formats of the Kafka topics (JSON values). One definition, used by producers and consumers.

transactions (key: user_id)      -> TRANSACTION_FIELDS: the feature repo's KafkaSource schema (its DDL),
                                    timestamps as ISO-8601 UTC with 'Z'
labels (key: transaction_id)     -> LABEL_FIELDS (label_timestamp is when the label became known)
predictions (key: request_id)    -> PREDICTION_FIELDS (features: {name: value}, in the model's order)
alerts (key: alert name)         -> ALERT_FIELDS
"""

from __future__ import annotations

from functools import cache

from core.errors import UserFacingError
from core.feature_repo import repo_contents, repo_path

_DDL_TYPES = {"string": str, "bigint": int, "int": int, "long": int, "double": float, "float": float,
              "timestamp": str, "boolean": bool}


LABEL_FIELDS: dict[str, type] = {
    "transaction_id": str,
    "user_id": int,
    "merchant_id": int,
    "event_timestamp": str,
    "label_timestamp": str,
    "is_fraud": int,
}

PREDICTION_FIELDS: dict[str, type] = {
    "request_id": str,
    "transaction_id": str,
    "user_id": int,
    "merchant_id": int,
    "prediction_timestamp": str,
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


@cache
def _stream_fields(repo: str, source_name: str | None) -> dict[str, type]:
    from feast import KafkaSource

    sources = {s.name: s for s in repo_contents().data_sources if isinstance(s, KafkaSource)}
    if source_name is None and len(sources) == 1:
        source_name = next(iter(sources))
    if source_name not in sources:
        raise UserFacingError(f"the feature repo {repo} has no KafkaSource {source_name!r} (has: {sorted(sources)})")
    return ddl_fields(sources[source_name].kafka_options.message_format.schema_json)


def stream_fields(source_name: str | None = None) -> dict[str, type]:
    """Fields of a stream topic's records, from the feature repo's ``KafkaSource`` (the repo's only one by default)."""
    return _stream_fields(str(repo_path()), source_name)


def __getattr__(name: str):
    if name == "TRANSACTION_FIELDS":  # the reference domain's raw events: derived, never written down twice
        return stream_fields()
    raise AttributeError(name)
