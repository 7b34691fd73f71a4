"""Feature references (``view:feature``) of a feature service, read from the feature repo's definitions.

The one resolver: training builds its point-in-time frame, serving its read plan and the monitor its
feature list from :func:`service_feature_refs`; the request fields of the on-demand views and the
entity join keys of the service come from here too, so no stage keeps a hand-written list.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from core.errors import UserFacingError
from core.feature_repo import repo_contents, repo_path
from core.offline_sources import data_relative
from core.settings import settings


@dataclass(frozen=True)
class ServiceDefinition:
    """What a model needs to know about its feature service."""

    name: str
    refs: tuple[str, ...]  # ordered "view:feature"
    join_keys: tuple[str, ...]  # entity join keys of the service's views, first appearance order
    request_fields: tuple[tuple[str, str], ...]  # (field, Feast dtype name) of the on-demand request sources
    tags: tuple[tuple[str, str], ...]

    @property
    def features(self) -> list[str]:
        return ref_names(list(self.refs))


def ref_names(refs: list[str]) -> list[str]:
    """Feature names (``full_feature_names=False``) of ``view:feature`` references."""
    return [r.split(":", 1)[1] for r in refs]


def split_ref(ref: str) -> tuple[str, str]:
    """``"view:feature"`` -> ``("view", "feature")`` (a clear error for anything else)."""
    view, sep, feature = ref.partition(":")
    if not sep or not view or not feature:
        raise UserFacingError(f"feature reference {ref!r} is not of the form view:feature")
    return view, feature


@cache
def _definitions(repo: str, wanted: str | None) -> ServiceDefinition:
    contents = repo_contents()
    services = {s.name: s for s in contents.feature_services}
    if wanted is None:
        if len(services) != 1:
            raise UserFacingError(
                f"the feature repo {repo} defines {len(services)} feature services ({sorted(services)}): "
                "set RTML_FEATURE_SERVICE to the model's"
            )
        wanted = next(iter(services))
    service = services.get(wanted)
    if service is None:
        raise UserFacingError(f"feature service {wanted!r} is not defined in {repo} (has: {sorted(services)})")
    views = {v.name: v for v in [*contents.feature_views, *contents.stream_feature_views]}
    entities = {e.name: e for e in contents.entities}
    odfvs = {v.name: v for v in contents.on_demand_feature_views}
    refs: list[str] = []
    join_keys: list[str] = []
    request: dict[str, str] = {}
    for projection in service.feature_view_projections:
        refs.extend(f"{projection.name_to_use()}:{f.name}" for f in projection.features)
        if projection.name in views:
            for entity in views[projection.name].entities:
                key = entities[entity].join_key if entity in entities else entity
                if key not in join_keys:
                    join_keys.append(key)
        elif projection.name in odfvs:
            for source in odfvs[projection.name].source_request_sources.values():
                for f in source.schema:
                    request.setdefault(f.name, str(f.dtype))
    return ServiceDefinition(
        name=wanted, refs=tuple(refs), join_keys=tuple(join_keys), request_fields=tuple(request.items()),
        tags=tuple(sorted((service.tags or {}).items())),
    )


@dataclass(frozen=True)
class LabelDefinition:
    """Where a model's labels come from: a Feast ``LabelView`` of the feature repo."""

    name: str
    event_key: str  # join key of the labelled event (e.g. transaction_id)
    label: str  # the label column
    path: str  # offline source of the labels (relative to the data dir: core.offline_sources.data_relative)
    label_timestamp_field: str  # when the label became known
    topic: str | None  # the Kafka topic carrying labels live (the view's "topic" tag)
    decisions: tuple[str, str] = ("negative", "positive")  # what serving answers below / at or above the threshold


@cache
def _labels(repo: str, service_name: str | None) -> LabelDefinition:
    contents = repo_contents()
    views = {v.name: v for v in contents.label_views}
    wanted = dict(service_definition(service_name).tags).get("labels")
    if wanted is None and len(views) == 1:
        wanted = next(iter(views))
    view = views.get(wanted)
    if view is None:
        raise UserFacingError(
            f"no label view {wanted!r} in {repo} (has: {sorted(views)}); declare a LabelView and name it in the "
            "feature service's 'labels' tag"
        )
    if len(view.entity_columns) != 1 or len(view.features) != 1:
        raise UserFacingError(f"label view {view.name}: exactly one entity key and one label column are supported")
    return LabelDefinition(
        name=view.name, event_key=view.entity_columns[0].name, label=view.features[0].name,
        path=data_relative(view.source), label_timestamp_field=view.source.timestamp_field,
        topic=(view.tags or {}).get("topic"), decisions=_decisions(view),
    )


def _decisions(view) -> tuple[str, str]:
    """The view's ``decisions`` tag: "<negative>,<positive>" (default negative,positive)."""
    text = (view.tags or {}).get("decisions", "negative,positive")
    names = tuple(n.strip() for n in text.split(","))
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise UserFacingError(f"label view {view.name}: tag decisions={text!r} must name two decisions 'negative,positive'")
    return names  # type: ignore[return-value]


def label_definition(service_name: str | None = None) -> LabelDefinition:
    """The labels of the feature service's model (its ``labels`` tag, else the repo's only LabelView)."""
    return _labels(str(repo_path()), service_name or settings().feature_service)


def service_definition(service_name: str | None = None) -> ServiceDefinition:
    """The feature service ``service_name`` (default: settings, else the repo's only one)."""
    return _definitions(str(repo_path()), service_name or settings().feature_service)


def service_feature_refs(service_name: str | None = None) -> list[str]:
    """Ordered ``view:feature`` references of a feature service."""
    return list(service_definition(service_name).refs)


def default_model_name(service_name: str | None = None) -> str:
    """The model's name in the model store: settings, else ``<service tag 'model'>_model``, else the service name."""
    if settings().model_name:
        return settings().model_name
    definition = service_definition(service_name)
    model = dict(definition.tags).get("model")
    return f"{model}_model" if model else definition.name
