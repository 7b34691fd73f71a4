"""Data validation that gates training, with Great Expectations.

The rules live in the feature repo (its ``validation.py``, ``RAW_HISTORY`` keyed by batch source name)
next to the definitions they guard; which datasets exist, their column names and types come from the
definitions themselves (the stream's KafkaSource and its batch source, the LabelView and its source, the
feature service's batch views): nothing here names a domain. Two suites run before a model learns anything:

- **raw history** (the rows this training reads, :func:`raw_datasets`): schema and types, null rates,
  ranges, allowed categories, unique event ids, labels 0/1, label delay within bounds (the repo's
  ``LABEL_DELAY``); a repo without ``validation.py`` gets the checks its definitions imply;
- **the point-in-time training frame**: feature null rates against the reference (the previous
  training set: the production model's manifest), each numeric feature's distribution against the
  reference's deciles (KL divergence), the label rate, and leakage: every feature row used was
  stamped at or before its entity time and strictly before its transaction.

:func:`validate_training_set` returns a :class:`ValidationReport` (HTML report written next to the
training set); :meth:`ValidationReport.raise_if_failed` stops training with a message naming each
failing expectation.
"""

from __future__ import annotations

import html
import json
import logging
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import UserFacingError

log = logging.getLogger(__name__)

_KINDS = {
    int: ["int64", "int32", "Int64", "Int32"],
    float: ["float64", "float32", "Float64"],
    str: ["object", "string", "str", "large_string"],
}
_FEAST_KINDS = {"Int64": int, "Int32": int, "Float64": float, "Float32": float, "String": str, "Bool": int}


class DataValidationError(UserFacingError):
    """Expectations failed: training stops before the model sees the data."""


@dataclass
class Check:
    """One expectation's outcome."""

    suite: str
    expectation: str
    column: str
    success: bool
    observed: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    config: Any = field(default=None, repr=False)

    def describe(self) -> str:
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.kwargs.items() if k not in ("column", "batch_id"))
        where = f"{self.column}: " if self.column else ""
        return f"{self.suite}: {where}{self.expectation}({args}) -- observed {self.observed}"


@dataclass
class ValidationReport:
    checks: list[Check]
    seconds: float
    rows: dict[str, int]
    path: Path | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.success]

    @property
    def success(self) -> bool:
        return not self.failed

    def summary(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "expectations": len(self.checks),
            "failed": [c.describe() for c in self.failed],
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }

    def write_html(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = "\n".join(
            f"<tr class={'ok' if c.success else 'bad'}><td>{html.escape(c.suite)}</td><td>{html.escape(c.column)}</td>"
            f"<td>{html.escape(c.expectation)}</td><td>{html.escape(_short(c.kwargs, 300))}</td>"
            f"<td>{html.escape(c.observed)}</td><td>{'pass' if c.success else 'FAIL'}</td></tr>"
            for c in sorted(self.checks, key=lambda c: (c.success, c.suite, c.column))
        )
        status = "PASSED" if self.success else f"FAILED ({len(self.failed)} of {len(self.checks)} expectations)"
        path.write_text(
            "<!doctype html><html><head><meta charset=utf-8><title>rtml data validation</title><style>"
            "body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
            "font-size:13px}.bad{background:#fdd}.ok{background:#efe}</style></head><body>"
            f"<h1>Data validation: {status}</h1><p>Great Expectations suites over {html.escape(json.dumps(self.rows))} rows, "
            f"{self.seconds:.1f} s. Rules: feature_repo/validation.py.</p>"
            "<table><tr><th>suite</th><th>column</th><th>expectation</th><th>arguments</th><th>observed</th><th>result</th></tr>"
            f"{rows}</table></body></html>\n"
        )
        self.path = path
        return path

    def raise_if_failed(self) -> None:
        if self.success:
            return
        lines = "\n".join(f"  - {c.describe()}" for c in self.failed)
        where = f"\nreport: {self.path}" if self.path else ""
        raise DataValidationError(
            f"data validation failed, training stopped before the model saw the data "
            f"({len(self.failed)} of {len(self.checks)} expectations):\n{lines}{where}"
        )


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------- Great Expectations


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    with warnings.catch_warnings():  # GX's own imports of deprecated stdlib modules (sre_constants, sre_parse)
        warnings.simplefilter("ignore", DeprecationWarning)
        import great_expectations as gx
        from great_expectations.data_context.types import base  # noqa: F401 - sets its logger to INFO on import

    # GX turns on logging.captureWarnings at import: warnings would bypass the CLI's filters (rtml.cli) and
    # reach users as log lines. Turn it off again (restores the previous showwarning).
    logging.captureWarnings(False)
    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context",
                 "great_expectations.data_context.types.base"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return gx


_CONTEXT: Any = None


def _context():
    global _CONTEXT
    if _CONTEXT is None:
        gx = _gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _CONTEXT = gx.get_context(mode="ephemeral")
        _CONTEXT.variables.progress_bars = ProgressBarsConfig(globally=False)
    return _CONTEXT


def run_suite(name: str, df: pd.DataFrame, expectations: list) -> list[Check]:
    """Validate ``df`` against ``expectations`` (GX expectation objects) in an ephemeral context.

    GX sees only the columns the expectations name (all rows): its pandas engine copies the whole batch
    for each column-pair expectation that ignores missing values (``dropna`` over every column), so a
    narrow batch makes those copies small. A first pass asks only pass/fail (``BOOLEAN_ONLY``: several
    times faster on 1M rows, no unexpected value lists); the failing expectations run again with
    ``SUMMARY`` so their message shows what was seen."""
    df = _narrow(df, expectations)
    checks = _run(name, df, expectations, "BOOLEAN_ONLY")
    failed = [i for i, c in enumerate(checks) if not c.success]
    if failed:
        again = _run(name, df, [_fresh(checks[i].config) for i in failed], "SUMMARY")
        for i, check in zip(failed, again, strict=True):
            checks[i] = check
    return checks


_COLUMN_ARGS = ("column", "column_A", "column_B")


def _narrow(df: pd.DataFrame, expectations: list) -> pd.DataFrame:
    """``df`` with only the columns ``expectations`` name (in ``df``'s order), or ``df`` itself when an
    expectation is not about named columns. A named column missing from ``df`` stays missing (GX fails it)."""
    named: set[str] = set()
    for e in expectations:
        cols = [getattr(e, a, None) for a in _COLUMN_ARGS] + list(getattr(e, "column_list", None) or [])
        cols = [c for c in cols if c]
        if not cols:
            return df
        named.update(cols)
    keep = [c for c in df.columns if c in named]
    return df if len(keep) == len(df.columns) else df[keep]


def _fresh(config: Any) -> Any:
    """A new expectation (not bound to a suite) from an expectation's configuration."""
    expectation = config.to_domain_obj()
    expectation.id = None
    return expectation


def _run(name: str, df: pd.DataFrame, expectations: list, result_format: str) -> list[Check]:
    gx = _gx()
    ctx = _context()
    key = f"{name}-{uuid.uuid4().hex[:8]}"
    asset = ctx.data_sources.add_pandas(key).add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe(name)
    suite = ctx.suites.add(gx.ExpectationSuite(name=key, expectations=expectations))
    definition = ctx.validation_definitions.add(gx.ValidationDefinition(name=key, data=batch, suite=suite))
    result = definition.run(batch_parameters={"dataframe": df}, result_format=result_format)
    checks = []
    for r in result.results:
        cfg = r.expectation_config
        kwargs = {k: v for k, v in cfg.kwargs.items() if k != "batch_id"}
        res = r.result or {}
        if "observed_value" in res:
            observed = _short(_plain(res["observed_value"]), 120)
        elif "unexpected_count" in res:
            observed = f"{res.get('unexpected_count')} unexpected ({res.get('unexpected_percent') or 0:.3g}%)"
            if res.get("partial_unexpected_list"):
                observed += f", e.g. {_short(_plain(res['partial_unexpected_list'][:3]), 80)}"
        elif r.exception_info and r.exception_info.get("raised_exception"):
            observed = "error: " + str(r.exception_info.get("exception_message"))[:200]
        else:
            observed = "-" if result_format == "BOOLEAN_ONLY" else "n/a"
        column = str(kwargs.get("column") or kwargs.get("column_A") or "")
        checks.append(Check(name, cfg.type, column, bool(r.success), observed, kwargs, cfg))
    for store, ident in ((ctx.validation_definitions, key), (ctx.suites, key)):
        try:
            store.delete(ident)
        except Exception:  # noqa: BLE001 - ephemeral bookkeeping only
            pass
    try:
        ctx.data_sources.delete(key)
    except Exception:  # noqa: BLE001
        pass
    return checks


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- rules -> expectations


def rules():
    """The feature repo's validation rules module (``validation.py``), or None when the repo has none."""
    from core.feature_repo import import_definitions, repo_path

    if not (repo_path() / "validation.py").exists():
        return None
    return import_definitions("validation")


@dataclass(frozen=True)
class RawDataset:
    """One raw dataset a training reads, from the feature repo's definitions."""

    name: str  # its batch source's name: the key of its rules in the repo's validation.py ``RAW_HISTORY``
    relative_path: str  # under the data dir (``core.offline_sources.data_relative``), or absolute
    schema: dict[str, Any]  # column -> int, float, str or "timestamp"
    event_key: str | None = None  # events and labels: restricted to the training's labelled events
    label: str | None = None  # labels: the label column (0/1)
    label_time: str | None = None  # labels: when the label became known
    event_time: str | None = None  # labels: the event's own time (label delay = label_time - event_time)


def _kinds(fv) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    for e in fv.entity_columns:
        cols[e.name] = _FEAST_KINDS.get(str(e.dtype), str)
    for f in fv.features:
        cols[f.name] = _FEAST_KINDS.get(str(f.dtype), str)
    cols[fv.batch_source.timestamp_field] = "timestamp"
    return cols


def raw_datasets() -> list[RawDataset]:
    """The raw history a training of the feature service reads: the stream source's event history (schema from
    its KafkaSource DDL), the LabelView's source, and the batch sources of the service's batch feature views
    (schemas from their fields). Nothing domain-specific is named here."""
    from feast import KafkaSource

    from core.contracts import label_fields, stream_rules
    from core.feature_refs import label_definition, service_definition
    from core.feature_repo import repo_contents
    from core.offline_sources import data_relative

    contents = repo_contents()
    events, labels, service = stream_rules(), label_definition(), service_definition()
    stream = next(s for s in contents.data_sources if isinstance(s, KafkaSource) and s.name == events.name)
    if stream.batch_source is None:
        raise UserFacingError(f"the stream source {events.name} declares no batch source (its raw event history)")
    out = [RawDataset(stream.batch_source.name, data_relative(stream.batch_source),
                      {**events.fields, events.timestamp_field: "timestamp"}, event_key=labels.event_key)]
    label_view = next(v for v in contents.label_views if v.name == labels.name)
    times = (events.timestamp_field, labels.label_timestamp_field)
    out.append(RawDataset(label_view.source.name, data_relative(label_view.source),
                          {**label_fields(), **dict.fromkeys(times, "timestamp")}, event_key=labels.event_key,
                          label=labels.label, label_time=labels.label_timestamp_field,
                          event_time=events.timestamp_field))
    batch_views = {fv.name: fv for fv in contents.feature_views}  # stream views' rows are computed, not raw
    by_source: dict[str, RawDataset] = {}
    for view in dict.fromkeys(ref.split(":", 1)[0] for ref in service.refs):  # the service's order
        fv = batch_views.get(view)
        if fv is None or fv.batch_source is None or not data_relative(fv.batch_source):
            continue
        name = fv.batch_source.name
        prev = by_source.get(name)
        schema = {**(prev.schema if prev else {}), **_kinds(fv)}
        by_source[name] = RawDataset(name, data_relative(fv.batch_source), schema)
    return out + list(by_source.values())


def schemas() -> dict[str, dict[str, Any]]:
    """Column -> kind (int, float, str, "timestamp") per raw dataset (batch source name), from the definitions."""
    return {d.name: d.schema for d in raw_datasets()}


def dataset_rules(dataset: RawDataset, repo_rules: Any = None) -> dict[str, Any]:
    """The rules of one raw dataset: the repo's ``RAW_HISTORY[<source name>]`` plus what the definitions imply
    (event ids not null and unique; labels 0/1 and not null)."""
    rule = {k: (dict(v) if isinstance(v, dict) else list(v))
            for k, v in (getattr(repo_rules, "RAW_HISTORY", {}) or {}).get(dataset.name, {}).items()}
    implied = [c for c in (dataset.event_key, dataset.label, dataset.label_time) if c]
    rule["not_null"] = list(dict.fromkeys([*rule.get("not_null", []), *implied]))
    if dataset.event_key:
        rule["unique"] = list(dict.fromkeys([*rule.get("unique", []), dataset.event_key]))
    if dataset.label:
        rule.setdefault("allowed", {}).setdefault(dataset.label, [0, 1])
    return rule


# The frame's limits for a repo without validation.py (the reference repo's values; a repo's own win).
DEFAULT_TRAINING_FRAME = {"null_fraction_tolerance": 0.10, "max_null_fraction": 0.60, "max_kl_divergence": 0.25,
                          "label_rate": (0.0005, 0.5)}
SCHEMA_ROWS = 10_000  # a Parquet column has one type: the schema suite reads this many rows
SAMPLE_ROWS = 200_000  # distribution checks (KL divergence) on a seeded sample of this many rows


def schema_expectations(schema: dict[str, Any]) -> list:
    """Every column of the definitions exists with its type."""
    gxe = _gx().expectations
    exps: list = []
    for column, kind in schema.items():
        exps.append(gxe.ExpectColumnToExist(column=column))
        if kind == "timestamp":  # GX names a pandas datetime column's values by their class
            exps.append(gxe.ExpectColumnValuesToBeOfType(column=column, type_="Timestamp"))
        else:
            exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=_KINDS[kind]))
    return exps


def dataset_expectations(dataset: str, rule: dict[str, Any]) -> list:
    """Value expectations of one raw dataset: nulls, ranges, allowed values, uniqueness."""
    gxe = _gx().expectations
    exps: list = []
    for column in rule.get("not_null", []):
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
    for column, frac in rule.get("max_null_fraction", {}).items():
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=1 - frac))
    for column, (lo, hi) in rule.get("ranges", {}).items():
        exps.append(gxe.ExpectColumnValuesToBeBetween(column=column, min_value=lo, max_value=hi))
    for column, allowed in rule.get("allowed", {}).items():
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(allowed)))
    for column in rule.get("unique", []):
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=column))
    return exps


def validate_history(
    data_dir: Path | str | None = None, event_ids: pd.Series | None = None
) -> tuple[list[Check], dict[str, int]]:
    """The raw datasets a training reads (:func:`raw_datasets`); events and labels restricted to
    ``event_ids`` (the training's labelled events) when given."""
    import pyarrow.dataset as pds

    from core.storage import data_root, location

    r = rules()
    checks: list[Check] = []
    rows: dict[str, int] = {}
    root = data_root() if data_dir is None else location(data_dir)
    gxe = _gx().expectations
    for dataset in raw_datasets():
        rel = dataset.relative_path
        path = location(rel) if rel.startswith("/") or "://" in rel else root / rel
        if not path.exists():
            raise UserFacingError(f"{dataset.name} not found at {path}; generate history first (`rtml simulate`)")
        expr = None
        if event_ids is not None and dataset.event_key:
            expr = pds.field(dataset.event_key).isin(pd.unique(event_ids))
        df = path.dataset().to_table(filter=expr).to_pandas()
        rows[dataset.name] = len(df)
        checks += run_suite(dataset.name, df.head(SCHEMA_ROWS), schema_expectations(dataset.schema))
        exps = dataset_expectations(dataset.name, dataset_rules(dataset, r))
        if dataset.label_time and dataset.event_time and r is not None and hasattr(r, "LABEL_DELAY"):
            df = df.assign(label_delay_s=(df[dataset.label_time] - df[dataset.event_time]).dt.total_seconds())
            lo, hi = r.LABEL_DELAY
            exps.append(gxe.ExpectColumnValuesToBeBetween(
                column="label_delay_s", min_value=lo.total_seconds(), max_value=hi.total_seconds()))
        checks += run_suite(dataset.name, df, exps)
    return checks, rows


# ---------------------------------------------------------------- the training frame


def feature_stats(frame: pd.DataFrame, features: list[str]) -> dict[str, dict[str, Any]]:
    """Per feature: null fraction and, for numeric features, decile bin edges and weights (the
    reference the next training set is compared with; stored in the manifest)."""
    out = {}
    for f in features:
        col = frame[f]
        stats: dict[str, Any] = {"null_fraction": float(col.isna().mean())}
        if pd.api.types.is_numeric_dtype(col):
            values = col.dropna().to_numpy(dtype="float64")
            if len(values):
                edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
                if len(edges) >= 2:
                    counts, _ = np.histogram(values, bins=edges)
                    stats["bins"] = [float(e) for e in edges]
                    stats["weights"] = [float(c) for c in counts / counts.sum()]
        out[f] = stats
    return out


def frame_expectations(
    features: list[str],
    reference: dict[str, dict[str, Any]] | None,
    label: str,
    feature_ts: list[str],
    distributions: bool = True,
) -> list:
    gxe = _gx().expectations
    r = getattr(rules(), "TRAINING_FRAME", None) or DEFAULT_TRAINING_FRAME
    exps: list = []
    for f in features:
        ref = (reference or {}).get(f)
        limit = r["max_null_fraction"] if ref is None else min(1.0, ref["null_fraction"] + r["null_fraction_tolerance"])
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=f, mostly=max(0.0, 1 - limit)))
        if ref and ref.get("bins") and distributions:
            exps.append(
                gxe.ExpectColumnKLDivergenceToBeLessThan(
                    column=f,
                    partition_object={"bins": ref["bins"], "weights": ref["weights"]},
                    threshold=r["max_kl_divergence"],
                    tail_weight_holdout=0.001,
                    internal_weight_holdout=0.001,
                )
            )
    lo, hi = r["label_rate"]
    exps.append(gxe.ExpectColumnMeanToBeBetween(column=label, min_value=lo, max_value=hi))
    for ts in feature_ts:
        # leakage: the feature row was stamped at or before the entity time, and strictly before the transaction
        exps.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="event_timestamp", column_B=ts, or_equal=True, ignore_row_if="either_value_is_missing"
            )
        )
        exps.append(
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="event_time", column_B=ts, or_equal=False, ignore_row_if="either_value_is_missing"
            )
        )
    exps.append(
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="event_time", column_B="event_timestamp", or_equal=False
        )
    )
    return exps


def validate_frame(
    frame: pd.DataFrame,
    features: list[str],
    refs: list[str],
    reference: dict[str, dict[str, Any]] | None,
    label: str | None = None,
    store: Any = None,
) -> list[Check]:
    """The point-in-time frame: null rates and distributions vs ``reference``, label rate, leakage."""
    from core.feast_store import get_store
    from training.datasets import frame_columns
    from training.pit_join import feast_view_specs, feature_timestamps

    label = label or frame_columns().label
    specs, _odfvs, _hidden = feast_view_specs(store or get_store(), refs)
    keys = sorted({k for s in specs for k in s.join_keys})
    stamps = feature_timestamps(frame[[*keys, "event_timestamp"]], specs).to_pandas()
    df = pd.concat(
        [frame[[*features, label, "event_timestamp", "event_time"]].reset_index(drop=True), stamps], axis=1
    )
    return run_frame_suites(df, features, reference, label, list(stamps.columns))


def run_frame_suites(
    df: pd.DataFrame,
    features: list[str],
    reference: dict[str, dict[str, Any]] | None,
    label: str,
    feature_ts: list[str],
) -> list[Check]:
    """Null rates, label rate and leakage on every row; distributions (KL divergence vs the reference's
    deciles) on a seeded sample of :data:`SAMPLE_ROWS` rows, plenty for a divergence of 10 bins."""
    # leakage (column pairs, rows with a missing timestamp ignored) apart from the null/label checks: each
    # GX run gets only its own columns, so the pair checks' row filtering copies timestamps only
    exps = frame_expectations(features, reference, label, feature_ts, distributions=False)
    pairs = [e for e in exps if getattr(e, "column_A", None)]
    checks = run_suite("training_frame", df, [e for e in exps if not getattr(e, "column_A", None)])
    checks += run_suite("training_frame", df, pairs)
    kl = [e for e in frame_expectations(features, reference, label, [], distributions=True)
          if type(e).__name__ == "ExpectColumnKLDivergenceToBeLessThan"]  # fmt: skip
    if kl:
        sample = df if len(df) <= SAMPLE_ROWS else df.sample(SAMPLE_ROWS, random_state=0)
        checks += run_suite("training_frame", sample[[c for c in features if c in sample.columns]], kl)
    return checks


def validate_training_set(
    frame: pd.DataFrame,
    features: list[str],
    refs: list[str],
    reference: dict[str, dict[str, Any]] | None,
    report_path: Path,
    data_dir: Path | str | None = None,
) -> ValidationReport:
    """Both suites for one training set; the HTML report is written to ``report_path``."""
    t0 = time.perf_counter()
    from core.feature_refs import label_definition

    history, rows = validate_history(data_dir, event_ids=frame[label_definition().event_key])
    checks = history + validate_frame(frame, features, refs, reference)
    rows["training_frame"] = len(frame)
    report = ValidationReport(checks, time.perf_counter() - t0, rows)
    report.write_html(report_path)
    log.info("data validation: %d expectations, %d failed (%.1f s)", len(checks), len(report.failed), report.seconds)
    return report
