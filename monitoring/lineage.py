"""Which raw input each feature is computed from, read from the feature definitions (lineage).

- a stream view's aggregation reads one column of its source: ``sum``/``mean``/``max`` of ``amount``
  depend on the raw ``amount``; ``count``/``seconds_since_previous`` depend on how often the entity
  transacts (``<source> rate per <entity>``); ``count_distinct`` on the column it counts;
- a batch view's feature is its own raw input, named ``<source>.<feature>`` (e.g. ``users.credit_limit``);
- an on-demand view's output depends on the inputs that change it: each input of the view (request
  fields and source-view features) is perturbed in turn through the view's own transformation, and
  the outputs that move inherit that input's roots. No second hand-written mapping.

A drifted window is then explained by roots: the root with the most drifted dependants first, e.g.
"amount shifted: 11 dependent features moved".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

RATE_FUNCTIONS = ("count", "seconds_since_previous")


def _source_name(view: Any) -> str:
    src = getattr(view, "stream_source", None) or getattr(view, "batch_source", None)
    src = getattr(src, "batch_source", None) or src  # push source -> its batch source
    return getattr(src, "name", None) or view.name


def stream_roots(view: Any) -> dict[str, tuple[str, ...]]:
    """Aggregation name -> its raw input (a column, or the entity's event rate)."""
    entity = (view.entities or ["entity"])[0]
    raw_source = (view.tags or {}).get("source_topic") or _source_name(view)
    out = {}
    for agg in view.aggregations:
        name = agg.name or f"{agg.function}_{agg.column}"
        if agg.function in RATE_FUNCTIONS:
            out[name] = (f"{raw_source} per {entity}",)
        else:
            out[name] = (agg.column,)
    return out


def batch_roots(view: Any) -> dict[str, tuple[str, ...]]:
    src = _source_name(view)
    return {f.name: (f"{src}.{f.name}",) for f in view.features}


_PROBE_STR = ("DE", "FR")


def _probe_values(dtype: str) -> tuple[Any, Any]:
    return _PROBE_STR if "String" in dtype else (100.0, 250.0)


def on_demand_inputs(odfv: Any) -> dict[str, list[str]]:
    """Output feature -> the inputs (request fields and source features) that change it."""
    inputs: dict[str, str] = {}
    for req in odfv.source_request_sources.values():
        for field in req.schema:
            inputs[field.name] = str(field.dtype)
    for projection in odfv.source_feature_view_projections.values():
        for field in projection.features:
            inputs[field.name] = str(field.dtype)
    udf = odfv.feature_transformation.udf
    base = {name: [_probe_values(t)[0]] for name, t in inputs.items()}
    out0 = udf(base)
    deps: dict[str, list[str]] = {name: [] for name in out0}
    for name, dtype in inputs.items():
        probe = dict(base)
        probe[name] = [_probe_values(dtype)[1]]
        out1 = udf(probe)
        for feature in out0:
            if out1[feature] != out0[feature]:
                deps[feature].append(name)
    return deps


@dataclass(frozen=True)
class Lineage:
    roots: dict[str, tuple[str, ...]]  # feature -> raw inputs

    def explain(self, drifted: Iterable[str]) -> list[tuple[str, list[str]]]:
        """Group drifted features under the fewest raw inputs that cover them (most dependants first)."""
        left = list(drifted)
        groups: list[tuple[str, list[str]]] = []
        while left:
            counts: dict[str, list[str]] = {}
            for f in left:
                for root in self.roots.get(f, (f,)):
                    counts.setdefault(root, []).append(f)
            root, members = max(counts.items(), key=lambda kv: (len(kv[1]), -len(kv[0])))
            groups.append((root, members))
            left = [f for f in left if f not in members]
        return groups

    def to_dict(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self.roots.items()}

    @classmethod
    def from_dict(cls, data: dict[str, list[str]]) -> Lineage:
        return cls({k: tuple(v) for k, v in data.items()})


def build_lineage(stream_views: list, batch_views: list, on_demand_views: list) -> Lineage:
    """Lineage of every feature of the given Feast views. A request field named like a raw stream
    column (``amount``) is that column."""
    roots: dict[str, tuple[str, ...]] = {}
    for v in stream_views:
        roots.update(stream_roots(v))
    for v in batch_views:
        roots.update(batch_roots(v))
    for odfv in on_demand_views:
        for feature, inputs in on_demand_inputs(odfv).items():
            rs: list[str] = []
            for name in inputs:
                for r in roots.get(name, (name,)):
                    if r not in rs:
                        rs.append(r)
            roots[feature] = tuple(rs) or (feature,)
    return Lineage(roots)


def identity(features: Iterable[str]) -> Lineage:
    """No lineage known: every feature is its own input."""
    return Lineage({f: (f,) for f in features})


def repo_lineage() -> Lineage:
    """Lineage of the feature repo of the current settings (imports Feast, after ``core``)."""
    from core.feature_repo import repo_contents

    rc = repo_contents()
    return build_lineage(rc.stream_feature_views, rc.feature_views, rc.on_demand_feature_views)
