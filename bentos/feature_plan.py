"""Resolve a model's feature references once at start-up into a fetch plan: which Redis hash fields to
read per entity key (one pipelined HMGET per entity, one round trip per request), how to decode them
and how to assemble the model's input row, including the on-demand features computed from the request.

The plan is built from the Feast registry (views, entities, on-demand view sources), so it follows
the feature definitions; only the on-demand body (``compute_transaction_context``) is imported as code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bentos.feast_codec import decode_timestamp, decode_value, entity_key_encoder, mmh3_field


@dataclass
class ViewRead:
    """The part of one HMGET reply that belongs to one feature view."""

    name: str
    ts_index: int
    features: list[tuple[str, int]]  # (feature name, index in the reply)


@dataclass
class EntityRead:
    """One HMGET per request: all fields of all needed views sharing this entity key."""

    join_key: str
    encode_key: Callable[[Any], bytes]
    fields: list[bytes]
    views: list[ViewRead]
    command_tail: bytes = b""  # RESP encoding of the field list, appended after the key

    def __post_init__(self) -> None:
        self.command_tail = b"".join(b"$%d\r\n%s\r\n" % (len(f), f) for f in self.fields)
        self._head = b"*%d\r\n$5\r\nHMGET\r\n" % (len(self.fields) + 2)

    def command(self, entity_value: Any) -> bytes:
        key = self.encode_key(entity_value)
        return b"%s$%d\r\n%s\r\n%s" % (self._head, len(key), key, self.command_tail)


@dataclass
class FetchResult:
    """Decoded online features of one transaction."""

    values: dict[str, Any]
    missing: list[str]  # features of views with no row for this entity (unknown entity)
    oldest_ts: float | None


@dataclass
class FeaturePlan:
    model_features: list[str]
    reads: list[EntityRead]
    request_fields: list[str]  # request fields the on-demand body reads
    odfv_inputs: list[str]  # stored features the on-demand body reads
    odfv_outputs: list[str]
    compute_on_demand: Callable[[dict[str, list]], dict[str, list]] | None
    defaults: dict[str, float]
    stored_model_features: list[str] = field(default_factory=list)

    # ---- hot path -------------------------------------------------------------------------------
    def commands(self, entity_values: Mapping[str, Any]) -> bytes:
        """The RESP bytes of this transaction's HMGETs (one per entity key)."""
        return b"".join(r.command(entity_values[r.join_key]) for r in self.reads)

    def decode(self, replies: Sequence[list]) -> FetchResult:
        """Decode this transaction's HMGET replies (same order as :meth:`commands`)."""
        values: dict[str, Any] = {}
        missing: list[str] = []
        oldest: float | None = None
        for read, reply in zip(self.reads, replies, strict=True):
            for view in read.views:
                ts = decode_timestamp(reply[view.ts_index])
                if ts is None:
                    for name, _ in view.features:
                        values[name] = None
                        missing.append(name)
                    continue
                if oldest is None or ts < oldest:
                    oldest = ts
                for name, idx in view.features:
                    values[name] = decode_value(reply[idx])
        return FetchResult(values, missing, oldest)

    def rows(self, fetched: Sequence[FetchResult], requests: Sequence[Mapping[str, Any]]) -> tuple[list[list[float]], list[list[str]]]:
        """Model input rows (ordered as the model's features) and the missing model features per row."""
        on_demand: dict[str, list] = {}
        if self.compute_on_demand is not None:
            inputs: dict[str, list] = {k: [r[k] for r in requests] for k in self.request_fields}
            for name in self.odfv_inputs:
                inputs[name] = [f.values.get(name) for f in fetched]
            on_demand = self.compute_on_demand(inputs)
        rows: list[list[float]] = []
        missing_rows: list[list[str]] = []
        nan = math.nan
        defaults = self.defaults
        for i, f in enumerate(fetched):
            missing_features = f.missing
            row: list[float] = []
            values = f.values
            for name in self.model_features:
                if name in values:
                    v = values[name]
                    if v is None:
                        row.append(defaults.get(name, nan) if name in missing_features else nan)
                    else:
                        row.append(_num(v))
                else:
                    row.append(_num(on_demand[name][i]))
            rows.append(row)
            missing_rows.append(missing_features)
        return rows, missing_rows


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


class _RecordingDict(dict):
    """Records which keys the on-demand body reads."""

    def __init__(self, keys: Sequence[str]):
        super().__init__({k: [1.0] for k in keys})  # a harmless value of every input
        self.read: list[str] = []

    def __getitem__(self, key: str) -> Any:
        if key not in self.read:
            self.read.append(key)
        return super().__getitem__(key)


def load_on_demand_body(odfv_name: str) -> Callable[[dict[str, list]], dict[str, list]]:
    """The pure Python body of an on-demand view in ``feature_repo/on_demand.py``.

    ``compute_<view name>`` (lists in, lists out) is the convention; imported like Feast does.
    """
    from core.feature_repo import import_definitions

    module = import_definitions("on_demand")
    fn = getattr(module, f"compute_{odfv_name}", None)
    if fn is None:
        raise RuntimeError(f"feature_repo/on_demand.py has no compute_{odfv_name}() for on-demand view {odfv_name}")
    return fn


def build_plan(store, feature_refs: Sequence[str], model_features: Sequence[str], defaults: Mapping[str, float] | None = None) -> FeaturePlan:
    """Resolve ``view:feature`` references against the registry of ``store`` (a Feast FeatureStore)."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    config = store.config
    project = config.project
    if getattr(config, "entity_key_serialization_version", 3) != 3:
        raise RuntimeError("the fast feature reader implements entity key serialization v3 only")
    versioning = bool(getattr(config.registry, "enable_online_feature_view_versioning", False))
    views = {fv.name: fv for fv in store.list_feature_views()}
    views.update({fv.name: fv for fv in store.list_stream_feature_views()})
    odfvs = {fv.name: fv for fv in store.list_on_demand_feature_views()}

    ref_by_name = {}
    for ref in feature_refs:
        view, _, feat = ref.partition(":")
        ref_by_name[feat] = (view, feat)
    unknown = [n for n in model_features if n not in ref_by_name]
    if unknown:
        raise RuntimeError(f"model features without a feature reference: {unknown}")

    needed: dict[str, list[str]] = {}  # stored view -> features to read
    odfv_names: list[str] = []

    def need(view: str, feat: str) -> None:
        lst = needed.setdefault(view, [])
        if feat not in lst:
            lst.append(feat)

    stored_model: list[str] = []
    for name in model_features:
        view, feat = ref_by_name[name]
        if view in odfvs:
            if view not in odfv_names:
                odfv_names.append(view)
        elif view in views:
            need(view, feat)
            stored_model.append(name)
        else:
            raise RuntimeError(f"feature view {view!r} (for {name}) is not in the Feast registry")

    if len(odfv_names) > 1:
        raise RuntimeError(f"the service supports one on-demand view, the model uses {odfv_names}")
    compute = None
    request_fields: list[str] = []
    odfv_inputs: list[str] = []
    odfv_outputs: list[str] = []
    if odfv_names:
        odfv = odfvs[odfv_names[0]]
        compute = load_on_demand_body(odfv.name)
        request_schema = [f.name for rs in odfv.source_request_sources.values() for f in rs.schema]
        source_features: dict[str, str] = {}
        for proj in odfv.source_feature_view_projections.values():
            for f in proj.features:
                source_features.setdefault(f.name, proj.name)
        probe = _RecordingDict(request_schema + list(source_features))
        compute(probe)
        for key in probe.read:
            if key in request_schema:
                request_fields.append(key)
            elif key in source_features:
                need(source_features[key], key)
                odfv_inputs.append(key)
            else:
                raise RuntimeError(f"on-demand view {odfv.name} reads {key!r}, which none of its sources provide")
        odfv_outputs = [f.name for f in odfv.features]

    # Group views by entity (join key): views of the same entity share one Redis hash.
    groups: dict[str, EntityRead] = {}
    for view_name, feats in needed.items():
        fv = views[view_name]
        cols = list(fv.entity_columns)
        if len(cols) != 1:
            raise RuntimeError(f"view {view_name}: only single-key entities are supported, got {[c.name for c in cols]}")
        join_key = cols[0].name
        value_type = int(cols[0].dtype.to_value_type().value)
        read = groups.get(join_key)
        if read is None:
            read = EntityRead(join_key, entity_key_encoder(join_key, value_type, project), [], [])
            groups[join_key] = read
        stored_name = compute_versioned_name(fv, versioning)
        features = []
        for feat in feats:
            read.fields.append(mmh3_field(stored_name, feat))
            features.append((feat, len(read.fields) - 1))
        read.fields.append(f"_ts:{stored_name}".encode())
        read.views.append(ViewRead(view_name, len(read.fields) - 1, features))
    reads = list(groups.values())
    for r in reads:
        r.__post_init__()
    return FeaturePlan(
        model_features=list(model_features),
        reads=reads,
        request_fields=request_fields,
        odfv_inputs=odfv_inputs,
        odfv_outputs=odfv_outputs,
        compute_on_demand=compute,
        defaults={k: float(v) for k, v in (defaults or {}).items() if v is not None},
        stored_model_features=stored_model,
    )
