"""Resolve a model's feature references once at start-up into a fetch plan: the online store's read
plan (which Redis hash fields to read per entity key, one round trip per request, see
:class:`core.online_store.ReadPlan`) and how to assemble the model's input row, including the
on-demand features computed from the request.

The plan is built from the Feast registry (views, entities, on-demand view sources), so it follows
the feature definitions; only the on-demand body (``compute_transaction_context``) is imported as code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.online_columns import Columns
from core.online_format import as_number
from core.online_store import FetchResult, OnlineStore, ReadPlan


@dataclass
class FeaturePlan:
    model_features: list[str]
    read: ReadPlan
    request_fields: list[str]  # request fields the on-demand body reads
    odfv_inputs: list[str]  # stored features the on-demand body reads
    odfv_outputs: list[str]
    compute_on_demand: Callable[[dict[str, list]], dict[str, list]] | None
    defaults: dict[str, float]
    stored_model_features: list[str] = field(default_factory=list)

    @property
    def reads(self) -> list:
        """One entry per Redis read (entity key) of a request."""
        return self.read.reads

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
        layout = self._layout()
        for i, f in enumerate(fetched):
            values = f.values
            try:  # every value present and numeric: no per-feature branches
                row = [float(values[name]) if stored else float(on_demand[name][i]) for name, stored in layout]
            except (TypeError, ValueError):  # a None (absent) or non-numeric value
                row = self._row(values, f.missing, on_demand, i)
            rows.append(row)
            missing_rows.append(f.missing)
        return rows, missing_rows

    def matrix(self, columns: Columns, requests: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, list[list[str]]]:
        """:meth:`rows` of a batch read column by column: the model input matrix (float64, one row per
        request, the same numbers as :meth:`rows`) and the missing model features per row."""
        on_demand: dict[str, list] = {}
        if self.compute_on_demand is not None:
            inputs: dict[str, list] = {k: [r[k] for r in requests] for k in self.request_fields}
            for name in self.odfv_inputs:
                inputs[name] = columns.values(name)
            on_demand = self.compute_on_demand(inputs)
        X = np.empty((columns.n_rows, len(self.model_features)), dtype=np.float64)
        stored, fill = self._stored_columns()
        if stored:
            X[:, stored] = columns.matrix([self.model_features[j] for j in stored], fill)
        for j, (name, is_stored) in enumerate(self._layout()):
            if not is_stored:
                X[:, j] = _numbers(on_demand[name])
        return X, columns.missing

    def _stored_columns(self) -> tuple[list[int], np.ndarray]:
        """The model columns read from the store, and the value each takes when its view has no row."""
        cached = self.__dict__.get("_stored_cache")
        if cached is None:
            stored = [j for j, (_, is_stored) in enumerate(self._layout()) if is_stored]
            fill = np.array([self.defaults.get(self.model_features[j], math.nan) for j in stored], dtype=np.float64)
            cached = self.__dict__["_stored_cache"] = (stored, fill)
        return cached

    def _layout(self) -> list[tuple[str, bool]]:
        """(model feature, read from the store?): every feature of the read plan is in each fetch's values."""
        layout = self.__dict__.get("_layout_cache")
        if layout is None:
            read = {name for r in self.read.reads for v in r.views for name, _ in v.features}
            layout = self.__dict__["_layout_cache"] = [(name, name in read) for name in self.model_features]
        return layout

    def _row(self, values: Mapping[str, Any], missing_features: list[str], on_demand: Mapping[str, list], i: int) -> list[float]:
        """One model row, feature by feature: absent features take their default, what is not a number NaN."""
        nan = math.nan
        defaults = self.defaults
        row: list[float] = []
        for name in self.model_features:
            if name in values:
                v = values[name]
                if v is None:
                    row.append(defaults.get(name, nan) if name in missing_features else nan)
                else:
                    row.append(as_number(v))
            else:
                row.append(as_number(on_demand[name][i]))
        return row


def _numbers(values: list) -> np.ndarray:
    """``[float(v) ...]`` (NaN for what is not a number) as an array; plain numbers converted at once."""
    if set(map(type, values)) <= {float, int}:
        return np.array(values, dtype=np.float64)
    return np.fromiter(map(as_number, values), np.float64, len(values))


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


def build_plan(store, feature_refs: Sequence[str], model_features: Sequence[str], defaults: Mapping[str, float] | None = None,
               online: OnlineStore | None = None) -> FeaturePlan:
    """Resolve ``view:feature`` references against the registry of ``store`` (a Feast FeatureStore);
    ``online`` (default: the settings' online store) supplies the stored layout of the views."""
    online = online or OnlineStore.from_settings(feast_store=store)
    views = dict(online.views)
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

    return FeaturePlan(
        model_features=list(model_features),
        read=online.read_plan(needed),
        request_fields=request_fields,
        odfv_inputs=odfv_inputs,
        odfv_outputs=odfv_outputs,
        compute_on_demand=compute,
        defaults={k: float(v) for k, v in (defaults or {}).items() if v is not None},
        stored_model_features=stored_model,
    )
