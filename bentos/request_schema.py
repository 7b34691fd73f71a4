"""The request model of a prediction service, built from the feature service the model was trained on.

A request carries an id, the join keys of the feature service's entities and the fields of its
on-demand views' ``RequestSource``s (names from :func:`core.feature_refs.service_definition`, the one
resolver), typed as the feature repo declares them (entity value types, request field dtypes).
Validation rules declared as tags on the request source's ``Field``s (``gt``, ``ge``, ``lt``, ``le``,
``min_length``, ``max_length``) apply too, as does the stream source's declared range of a field of the
same name (``rtml.range.amount``: an amount above it is a 400, as it is a dead letter in the stream), and integers are bounded by their Feast type: an INT64 key
above 2^63-1 is a 400, not an overflow in the key encoder.

The id field is the feature service's ``request_id`` tag, else the first string field of the stream
source's records that is not an entity key (``transaction_id`` in the reference domain). Optional in
every request: ``timestamp`` (alias ``event_timestamp``) and ``explain`` (return the top feature
contributions). Unknown fields are ignored. A bad request gets BentoML's 400 with pydantic's error
list, each ``loc`` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, Any, NotRequired

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, create_model
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_FLOATS = {"float", "double", "float32", "float64"}
_RULES = {"gt": float, "ge": float, "lt": float, "le": float, "min_length": int, "max_length": int}
MAX_STRING = 256
MAX_ID = 128


@dataclass(frozen=True)
class RequestField:
    """One request field: its name, type (int64, int32, float64, string, bool) and validation rules."""

    name: str
    kind: str
    rules: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class RequestSpec:
    """What a request to a model of ``feature_service`` carries."""

    feature_service: str
    id_field: str
    entity_keys: tuple[str, ...]  # join keys, in the feature service's order
    request_fields: tuple[str, ...]  # fields of the on-demand views' request sources
    fields: tuple[RequestField, ...]  # id, entity keys, request fields

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


def _kind(type_name: str) -> str:
    name = type_name.lower().replace("valuetype.", "")
    if name in _INT_BOUNDS or name in ("string", "bool"):
        return name
    if name in _FLOATS:
        return "float64"
    raise ValueError(f"Feast type {type_name} is not supported in requests")


def _rules(tags: dict[str, str] | None, bounds: tuple[float | None, float | None] = (None, None)) -> tuple[tuple[str, Any], ...]:
    """The field's tag rules, plus the stream source's declared range of the same field (``rtml.range.<field>``)
    where the tags set no bound on that side: a request carries the same transaction the stream validates."""
    rules = {key: cast(tags[key]) for key, cast in _RULES.items() if tags and key in tags}
    lo, hi = bounds
    if lo is not None and "gt" not in rules and "ge" not in rules:
        rules["ge"] = float(lo)
    if hi is not None and "lt" not in rules and "le" not in rules:
        rules["le"] = float(hi)
    return tuple(rules.items())


def _id_field(tags: dict[str, str], keys: tuple[str, ...]) -> str:
    if tags.get("request_id"):
        return tags["request_id"]
    from core.contracts import stream_fields

    for name, wire in stream_fields().items():
        if wire is str and name not in keys and "timestamp" not in name:
            return name
    return "request_id"


@cache
def request_spec(feature_service: str | None = None) -> RequestSpec:
    """The request of ``feature_service`` (default: the settings' / the repo's only one)."""
    from core.feature_refs import service_definition
    from core.feature_repo import repo_contents

    definition = service_definition(feature_service)
    contents = repo_contents()
    key_types = {e.join_key: e.value_type.name for e in contents.entities}
    field_tags: dict[str, dict[str, str]] = {}
    for odfv in contents.on_demand_feature_views:
        for source in odfv.source_request_sources.values():
            for f in source.schema:
                field_tags.setdefault(f.name, dict(f.tags or {}))
    keys = tuple(definition.join_keys)
    id_field = _id_field(dict(definition.tags), keys)
    fields = [RequestField(id_field, "string", (("min_length", 1), ("max_length", MAX_ID)))]
    fields += [RequestField(k, _kind(key_types.get(k, "int64")), ()) for k in keys]
    ranges = _source_ranges()
    fields += [RequestField(n, _kind(t), _rules(field_tags.get(n), ranges.get(n, (None, None))))
               for n, t in definition.request_fields]
    return RequestSpec(definition.name, id_field, keys, tuple(n for n, _ in definition.request_fields), tuple(fields))


def _source_ranges() -> dict[str, tuple[float | None, float | None]]:
    from core.contracts import stream_rules

    try:
        return dict(stream_rules().ranges)
    except Exception:  # noqa: BLE001 - a feature repo without a stream source: tags only
        return {}


def _annotation(f: RequestField) -> Any:
    rules = dict(f.rules)
    if f.kind in _INT_BOUNDS:
        lo, hi = _INT_BOUNDS[f.kind]
        rules["ge"] = max(int(rules.get("ge", lo)), lo)
        rules["le"] = min(int(rules.get("le", hi)), hi)
        return Annotated[int, Field(strict=True, **rules)]
    if f.kind == "float64":
        return Annotated[float, Field(strict=True, allow_inf_nan=False, **rules)]
    if f.kind == "string":
        rules.setdefault("max_length", MAX_STRING)
        return Annotated[str, Field(strict=True, **rules)]
    return Annotated[bool, Field(strict=True)]


def request_models(spec: RequestSpec, max_batch: int) -> tuple[type[BaseModel], type[BaseModel]]:
    """Pydantic models of one request and of a batch (``{"requests": [...]}``, alias ``transactions``).

    A batch's requests are validated as plain dicts (a ``TypedDict`` with the same fields and rules, two
    thirds of the validation time of model instances); ``timestamp`` and ``explain`` are keys only when sent."""
    annotations: dict[str, Any] = {f.name: _annotation(f) for f in spec.fields}
    timestamp = Annotated[datetime | None, Field(validation_alias=AliasChoices("timestamp", "event_timestamp"))]
    explain = Annotated[bool, Field(strict=True)]
    fields: dict[str, Any] = {name: (a, ...) for name, a in annotations.items()}
    one = create_model("PredictionRequest", __config__=ConfigDict(extra="ignore"), **fields,
                       timestamp=(timestamp, None), explain=(explain, False))
    one.__doc__ = f"One request to a model of feature service {spec.feature_service}."
    item = TypedDict(  # type: ignore[misc]
        "PredictionRequestItem", {**annotations, "timestamp": NotRequired[timestamp], "explain": NotRequired[explain]}
    )
    item.__doc__ = one.__doc__
    item.__pydantic_config__ = ConfigDict(extra="ignore")  # type: ignore[attr-defined]
    batch = create_model(
        "PredictionBatch",
        requests=(
            Annotated[
                list[item],  # type: ignore[valid-type]
                Field(min_length=1, max_length=max_batch, validation_alias=AliasChoices("requests", "transactions")),
            ],
            ...,
        ),
    )
    batch.__doc__ = f"Up to {max_batch} requests."
    return one, batch
