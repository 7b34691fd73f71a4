"""What the stream job computes, read from the Feast registry (the only definition of the features).

Each :class:`ViewSpec` is one StreamFeatureView: its entity join key, its aggregations (function,
column, window) and the Feast dtype of every output column. The Kafka topic, bootstrap servers and
watermark delay come from the registry's KafkaSource ``transactions_stream``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from core.contracts import SourceRules, domain_topics, source_rules
from core.settings import settings
from core.storage import data_root

STREAM_SOURCE_NAME = "transactions_stream"  # last resort when several KafkaSources match nothing
# Every aggregation function Feast defines (feast.aggregation: sum, max, min, count, mean/avg, std/stddev,
# var/variance, count_distinct), plus rtml's seconds_since_previous.
SUPPORTED_FUNCTIONS = ("count", "sum", "mean", "avg", "min", "max", "std", "stddev", "var", "variance",
                       "count_distinct", "seconds_since_previous")
INT_FUNCTIONS = ("count", "count_distinct")
DEFAULT_WATERMARK = timedelta(minutes=5)


@dataclass(frozen=True)
class AggSpec:
    """One aggregation: ``function`` over ``column`` in a tiled window (see :mod:`streaming.tiles`)."""

    name: str
    function: str
    column: str
    window_us: int
    tile_us: int = 0  # its own tile size (Feast's slide_interval; the window snaps to it); 0: the view's tile

    @property
    def is_int(self) -> bool:
        return self.function in INT_FUNCTIONS


@dataclass(frozen=True)
class ViewSpec:
    """One stream feature view: what to compute and where it goes."""

    name: str
    join_key: str
    aggs: tuple[AggSpec, ...]
    offline_path: str
    feature_names: tuple[str, ...]  # every feature Feast lists for the view, in Feast's order
    tile_us: int = 60_000_000  # the stored tile size: the greatest common divisor of its aggregations' tiles
    string_key: bool = False  # a string join key (else an integer one); see streaming.state_schema.view_rows

    def tile_of(self, agg: AggSpec) -> int:
        """The tile size ``agg``'s window snaps to (a multiple of the stored tile)."""
        return agg.tile_us or self.tile_us

    @property
    def max_window_us(self) -> int:
        return max(a.window_us for a in self.aggs)

    @property
    def rollup_us(self) -> int:
        """The coarsest aggregation tile: stored tiles that only aggregations of this tile still read are rolled
        up into one tile of this size (:mod:`streaming.tile_store`); equal to ``tile_us`` when all tiles are equal."""
        return max(self.tile_of(a) for a in self.aggs)

    @property
    def value_columns(self) -> tuple[str, ...]:
        """Event columns the aggregations read (besides the key and the event time)."""
        cols = []
        for a in self.aggs:
            if a.function != "seconds_since_previous" and a.column not in cols:
                cols.append(a.column)
        return tuple(cols)


@dataclass(frozen=True)
class StreamSpec:
    """Everything the stream job needs from the registry."""

    views: tuple[ViewSpec, ...]
    topic: str
    bootstrap: str
    watermark_delay_us: int
    rules: SourceRules | None = None  # parsing and dead-letter rules of the Kafka source (None: no source registered)

    def view(self, name: str) -> ViewSpec:
        return next(v for v in self.views if v.name == name)


def _window_us(window: timedelta | None) -> int:
    if window is None:
        raise ValueError("stream aggregations need a time_window")
    return int(window / timedelta(microseconds=1))


def view_spec(view) -> ViewSpec:
    """A :class:`ViewSpec` from a Feast ``StreamFeatureView``."""
    if len(view.entity_columns) != 1:
        raise ValueError(f"{view.name}: exactly one entity join key supported")
    join_key = view.entity_columns[0].name
    string_key = _is_string_key(view)
    aggs = []
    tiles = set()
    for agg in view.aggregations:
        if agg.function not in SUPPORTED_FUNCTIONS:
            raise ValueError(f"{view.name}.{agg.name}: unsupported aggregation function {agg.function!r}")
        tile = _window_us(agg.slide_interval or agg.time_window)
        spec = AggSpec(name=agg.name or f"{agg.function}_{agg.column}", function=agg.function,
                       column=agg.column, window_us=_window_us(agg.time_window), tile_us=tile)
        if spec.window_us % tile:
            raise ValueError(f"{view.name}.{spec.name}: window {agg.time_window} is not a multiple of its "
                             f"slide_interval (tile) {agg.slide_interval}")
        tiles.add(tile)
        aggs.append(spec)
    if not aggs:
        raise ValueError(f"{view.name}: a stream view needs at least one aggregation")
    path = getattr(view.batch_source, "path", None) or (data_root() / view.name).uri
    return ViewSpec(
        name=view.name,
        join_key=join_key,
        aggs=tuple(aggs),
        offline_path=path,
        feature_names=tuple(f.name for f in view.features),
        tile_us=math.gcd(*tiles),  # every aggregation's tile is a whole number of stored tiles
        string_key=string_key,
    )


def _is_string_key(view) -> bool:
    """True for a string join key, False for an integer one; any other type is refused with a clear error."""
    from feast.types import Int32, Int64, String

    dtype = view.entity_columns[0].dtype
    if dtype in (Int64, Int32):
        return False
    if dtype == String:
        return True
    raise ValueError(f"{view.name}: join key {view.entity_columns[0].name!r} has type {dtype}; stream views support "
                     "integer (Int32, Int64) and String join keys")


def stream_source(store, feast_views=None):
    """The registry's KafkaSource the stream views read: the one whose topic is the views' ``source_topic`` tag,
    else the only KafkaSource, else the one named ``transactions_stream``; None if there is none."""
    from feast import KafkaSource

    sources = [d for d in store.list_data_sources() if isinstance(d, KafkaSource)]
    views = feast_views if feast_views is not None else store.list_stream_feature_views()
    topics = {v.tags.get("source_topic") for v in views if v.tags.get("source_topic")}
    matching = [d for d in sources if d.kafka_options.topic in topics]
    if len(matching) == 1:
        return matching[0]
    if len(sources) == 1:
        return sources[0]
    return next((d for d in sources if d.name == STREAM_SOURCE_NAME), None)


def load_stream_spec(store=None) -> StreamSpec:
    """Read the stream feature views and the Kafka source from the registry (settings as fallback)."""
    if store is None:
        from core.feast_store import get_store

        store = get_store()
    feast_views = store.list_stream_feature_views()
    views = tuple(sorted((view_spec(v) for v in feast_views), key=lambda v: v.name))
    if not views:
        raise ValueError("no StreamFeatureView in the registry: run `rtml apply` first")
    s = settings()
    topic, bootstrap, delay, rules = domain_topics().events, s.kafka_bootstrap, DEFAULT_WATERMARK, None
    source = stream_source(store, feast_views)  # None: no Kafka source registered, settings are the fallback
    if source is not None:
        options = source.kafka_options
        topic = options.topic or topic
        bootstrap = options.kafka_bootstrap_servers or bootstrap
        delay = options.watermark_delay_threshold or delay
        rules = source_rules(source)
    return StreamSpec(views=views, topic=topic, bootstrap=bootstrap, watermark_delay_us=_window_us(delay), rules=rules)
