"""Batch scoring: historical events scored with the same point-in-time features as training and the same
model as serving, written to Parquet with scores, decisions, model version and variant.

Events are the stream source's history (the feature repo's ``KafkaSource`` batch source: ``transactions/``
in the reference domain) with event time in ``[start, end)``. Each event gets the features as they were
just before it (entity time = event time - 1 us, as :mod:`training.datasets` builds training rows and as
serving sees them): the point-in-time join of :mod:`training.pit_join`, locally (``engine="auto"``, the
default: numpy sort + binary search for integer keys, else duckdb's ASOF JOIN; or ``"duckdb"`` /
``"sorted"`` explicitly), or Feast's ``get_historical_features`` (``engine="feast"``: the configured offline
store, Spark with ``RTML_OFFLINE_STORE=spark`` for data beyond one machine). On-demand features run
through Feast's own transformation. The model is the registry's production model unless ``model`` is
given; ``variant`` says which role that model has now (production, challenger of the running rollout,
or offline). Scores come from the service's compiled trees (:mod:`bentos.predictor`, checked bit for bit
against XGBoost's ``inplace_predict`` at the start; XGBoost itself with ``RTML_SERVING_COMPILED_TREES=0``,
as in the service) on a float32 matrix of the values the service would use (``float(value)``, null ->
NaN), so a batch score equals the online score for the same feature values. The walk runs on every core,
chunk by chunk, while the on-demand views (Python, holding the GIL) compute the next chunk: the
``score`` seconds include the on-demand views, ``features`` is the point-in-time join. The Feast engine
keeps the plain path (on-demand views by Feast, one XGBoost call), as the benchmark's baseline.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq

from bentos.variants import decision_names
from core.arrow_memory import use_fast_pool
from core.errors import UserFacingError

log = logging.getLogger(__name__)

ENGINES = ("auto", "duckdb", "sorted", "feast")


@dataclass
class BatchResult:
    path: Path
    rows: int
    model: str
    variant: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        total = sum(self.seconds.values())
        return self.rows / total if total else float("nan")


def event_source() -> tuple[str, str]:
    """(Parquet path, timestamp field) of the stream source's history in the feature repo."""
    from feast import KafkaSource

    from core.feature_repo import repo_contents

    sources = [s for s in repo_contents().data_sources if isinstance(s, KafkaSource)]
    if len(sources) != 1 or sources[0].batch_source is None:
        raise UserFacingError("batch scoring needs exactly one KafkaSource with a batch source in the feature repo")
    batch = sources[0].batch_source
    return batch.path, batch.timestamp_field or sources[0].timestamp_field


def load_events(start: Any, end: Any, columns: list[str]) -> pa.Table:
    """Events with ``timestamp`` in ``[start, end)``, sorted by time: ``columns`` + ``event_timestamp`` (UTC, us)."""
    from training.datasets import to_utc

    path, ts_field = event_source()
    start_ts, end_ts = to_utc(start), to_utc(end)
    if start_ts is None or end_ts is None or start_ts >= end_ts:
        raise UserFacingError(f"need a time range with start before end (got {start} .. {end})")
    if not Path(path).exists():
        raise UserFacingError(f"no event history at {path}; generate it first (`rtml simulate`) or set RTML_DATA_DIR")
    dataset = pds.dataset(path, format="parquet")
    missing = [c for c in [*columns, ts_field] if c not in dataset.schema.names]
    if missing:
        raise UserFacingError(f"the event history at {path} lacks columns {missing}")
    ts = pds.field(ts_field)
    table = dataset.to_table(
        columns=[*columns, ts_field],
        filter=(ts >= pa.scalar(start_ts.to_pydatetime(), pa.timestamp("us", "UTC")))
        & (ts < pa.scalar(end_ts.to_pydatetime(), pa.timestamp("us", "UTC"))),
    )
    table = table.rename_columns([*columns, "event_timestamp"])
    table = table.set_column(len(columns), "event_timestamp", table.column("event_timestamp").cast(pa.timestamp("us", "UTC")))
    return table.sort_by([("event_timestamp", "ascending")])


def _features(
    store: Any, entities: pa.Table, refs: list[str], feature_service: str, engine: str
) -> tuple[pa.Table, list[tuple[Any, list[str]]]]:
    """Entity rows + point-in-time features (entity time = event time - 1 us), in entity order, and the
    on-demand views still to run on them (:meth:`_Scorer.score` runs them chunk by chunk)."""
    if engine == "feast":
        from training.datasets import historical_features

        df = historical_features(entities.to_pandas(), feature_service, join="feast", store=store)
        return pa.Table.from_pandas(df, preserve_index=False), []
    from training.pit_join import feast_view_specs, pit_join

    specs, odfvs, _ = feast_view_specs(store, refs)
    return pit_join(entities, specs, engine=engine, threads=os.cpu_count()), odfvs


def _score_plain(stored: Any, table: pa.Table, features: list[str]) -> np.ndarray:
    """XGBoost ``inplace_predict`` on the whole float32 matrix (the Feast path)."""
    from core import model_store

    X = np.column_stack([table.column(f).to_numpy(zero_copy_only=False).astype(np.float32, copy=False) for f in features])
    booster = model_store.load_booster(stored)
    booster.set_param({"nthread": os.cpu_count() or 1})
    return booster.inplace_predict(X)


_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-score-prepare")
CHUNK_ROWS = 1 << 16  # rows per on-demand + scoring step


def feature_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A feature column as the model sees it: float64 (null -> NaN) as the service's ``float(value)``,
    narrowed to float32 when written into the model's input matrix."""
    values = column.to_numpy(zero_copy_only=False)
    return values if values.dtype == np.float64 else values.astype(np.float64)


class _Scorer:
    """The model as the service scores it: the compiled trees of :mod:`bentos.predictor` (checked bit for
    bit against XGBoost; off with ``RTML_SERVING_COMPILED_TREES=0``, as in the service), else XGBoost's
    ``inplace_predict``, on every core."""

    def __init__(self, booster: Any, n_features: int):
        from bentos.predictor import compile_columns

        self.threads = max(1, os.cpu_count() or 1)
        self.booster = booster
        self.booster.set_param({"nthread": self.threads})
        self.compiled = compile_columns(self.booster, n_features)  # compiled (or loaded) and checked now

    @classmethod
    def of(cls, stored: Any, n_features: int) -> _Scorer:
        from core import model_store

        return cls(model_store.load_booster(stored), n_features)

    def _walk(self, Xt: np.ndarray, out: np.ndarray, lo: int, hi: int) -> None:
        if self.compiled is not None:
            self.compiled.predict_columns(Xt, out, lo, hi)
        else:
            out[lo:hi] = self.booster.inplace_predict(np.ascontiguousarray(Xt[:, lo:hi].T))

    def score(self, table: pa.Table, odfvs: list[tuple[Any, list[str]]], features: list[str]) -> np.ndarray:
        """Scores of every row of ``table`` (features, minus the on-demand ones still to run).

        Chunk by chunk: the on-demand views (Python, holding the GIL) run on this thread while the trees
        walk earlier chunks on the other cores (the kernels release the GIL). On-demand bodies are
        row-wise (the service runs them on any batch of requests), so chunks give the same values."""
        n = table.num_rows
        Xt = np.empty((len(features), n), dtype=np.float32)  # feature-major: every fill is contiguous
        out = np.empty(n, dtype=np.float32)
        workers = 1 if self.compiled is None else self.threads  # XGBoost uses every core per call itself
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-score") as pool:
            pending = []
            for lo in range(0, n, CHUNK_ROWS):
                hi = min(lo + CHUNK_ROWS, n)
                part, computed = _on_demand(table.slice(lo, hi - lo), odfvs)
                for i, f in enumerate(features):
                    Xt[i, lo:hi] = computed[f] if f in computed else feature_values(part.column(f))
                step = -(-(hi - lo) // workers)
                pending += [pool.submit(self._walk, Xt, out, a, min(a + step, hi)) for a in range(lo, hi, step)]
            for future in pending:
                future.result()
        return out


class _Columns(dict):
    """``table.to_pydict()`` that converts only the columns the on-demand body reads, each to the same
    Python values (None for nulls) by the fastest exact route."""

    def __init__(self, table: pa.Table):
        super().__init__()
        self._table = table

    def __missing__(self, key: str) -> list:
        if key not in self._table.column_names:
            raise KeyError(key)
        value = self[key] = python_values(self._table.column(key))
        return value


def python_values(column: pa.ChunkedArray) -> list:
    """``column.to_pylist()``, faster: numbers without nulls through numpy, strings through their dictionary
    (each distinct string converted once; repeated values are the same ``str`` object, equal by value)."""
    t = column.type
    if column.null_count == 0 and (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)):
        return column.to_numpy().tolist()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        out: list = []
        for chunk in column.chunks:
            encoded = chunk.dictionary_encode()
            values = np.array([*encoded.dictionary.to_pylist(), None], dtype=object)
            codes = encoded.indices.fill_null(len(encoded.dictionary)).to_numpy()
            out.extend(values[codes].tolist())
        return out
    return column.to_pylist()


def _on_demand(table: pa.Table, odfvs: list[tuple[Any, list[str]]]) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """On-demand features as training computes them (:func:`training.pit_join.apply_on_demand`: Feast's
    ``transform_arrow`` = the view's body on ``table.to_pydict()``), feeding a python-mode body only the
    columns it reads. Their values come back as float64 arrays by ``float(value)`` (None -> NaN), as the
    service turns them into model inputs; other views' outputs are appended to the table."""
    from training.pit_join import apply_on_demand

    computed: dict[str, np.ndarray] = {}
    for odfv, feats in odfvs:
        transformation = odfv.feature_transformation
        if getattr(odfv, "mode", "") != "python" or not hasattr(transformation, "udf"):
            table = apply_on_demand(table, [(odfv, feats)])
            continue
        out = transformation.udf(_Columns(table))
        for f in feats:
            try:
                computed[f] = np.array(out[f], dtype=np.float64)
            except (TypeError, ValueError):  # not numbers: as Feast builds the column
                table = table.append_column(f, pa.array(out[f]))
    return table, computed


def variant_of(tag: str) -> str:
    from core import model_store

    state = model_store.pointer_state()
    if tag == state.get("current"):
        return "production"
    if tag == (state.get("rollout") or {}).get("challenger"):
        return "challenger"
    return "offline"


def score_range(
    start: Any, end: Any, model: str | None = None, engine: str = "auto", out: Path | None = None
) -> BatchResult:
    """Score every event in ``[start, end)`` with ``model`` (default: production) and write Parquet."""
    from bentos.request_schema import request_spec
    from core import model_store
    from core.feast_store import get_store
    from core.settings import settings
    from training.datasets import ENTITY_OFFSET

    if engine not in ENGINES:
        raise UserFacingError(f"engine {engine!r}: use one of {', '.join(ENGINES)}")
    use_fast_pool()
    stored = model_store.get_model(model) if model else model_store.production_model()
    tag = str(stored.tag)
    meta = stored.info.metadata
    features, refs = list(meta["features"]), list(meta["feature_refs"])
    spec = request_spec(meta.get("feature_service"))
    seconds: dict[str, float] = {}
    # the scorer is built (kernel compiled or loaded, checked) while events are read and joined
    prepare = _POOL.submit(_Scorer.of, stored, len(features)) if engine != "feast" else None

    t0 = time.perf_counter()
    events = load_events(start, end, [spec.id_field, *spec.entity_keys, *spec.request_fields])
    if events.num_rows == 0:
        raise UserFacingError(f"no events in [{start}, {end})")
    entities = events.set_column(
        events.schema.get_field_index("event_timestamp"),
        "event_timestamp",
        pc.subtract(events.column("event_timestamp"), pa.scalar(ENTITY_OFFSET.to_pytimedelta(), pa.duration("us"))),
    )
    seconds["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    table, odfvs = _features(get_store(), entities, refs, spec.feature_service, engine)
    if table.num_rows != events.num_rows:
        raise RuntimeError(f"feature retrieval returned {table.num_rows} rows for {events.num_rows} events")
    seconds["features"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if prepare is None:
        scores = _score_plain(stored, table, features)  # the plain path (Feast), as the bench's baseline measures it
    else:
        scores = prepare.result().score(table, odfvs, features)
    threshold = float(meta["threshold"])
    seconds["score"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    variant = variant_of(tag)
    n = events.num_rows
    result = events.select([spec.id_field, *spec.entity_keys, "event_timestamp"]).append_column(
        "score", pa.array(scores.astype(np.float64))
    )
    result = result.append_column("decision", pc.if_else(pa.array(scores >= threshold), *reversed(decision_names())))
    result = result.append_column("model_name", pa.repeat(pa.scalar(stored.tag.name), n).dictionary_encode())
    result = result.append_column("model_version", pa.repeat(pa.scalar(stored.tag.version), n).dictionary_encode())
    result = result.append_column("variant", pa.repeat(pa.scalar(variant), n).dictionary_encode())
    if out is None:
        out = settings().state_dir / "scores" / f"{stored.tag.version}-{_stamp(start)}-{_stamp(end)}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    # dictionary pages only where values repeat: per-event ids, times and scores would overflow the
    # dictionary and fall back to plain encoding anyway, after building it (~25 % of the write)
    unique = {spec.id_field, "event_timestamp", "score"}
    pq.write_table(result, out, use_dictionary=[c for c in result.column_names if c not in unique])
    seconds["write"] = time.perf_counter() - t0
    return BatchResult(out, n, tag, variant, seconds)


def _stamp(value: Any) -> str:
    from training.datasets import to_utc

    return to_utc(value).strftime("%Y%m%dT%H%M%S")
