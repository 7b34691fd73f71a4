"""Parsing and validation of raw stream records, in Spark SQL (runs on the executors).

Each Kafka record becomes one row with the typed transaction fields and ``dlq_reason``: null for a
valid event, else one of :data:`DLQ_REASONS` (``dlq_field`` names the offending field). Nothing is
filtered here: bad records travel on to the dead-letter topic with their original bytes.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.contracts import SourceRules

DLQ_REASONS = (
    "unparseable_json",
    "missing_field",
    "bad_type",
    "below_min",
    "above_max",
    "future_timestamp",
)
_CORRUPT = "_corrupt_record"
_INTEGER_TEXT = r"^-?[0-9]{1,18}$"


def text_schema(rules: SourceRules) -> T.StructType:
    """Every field as text first: any JSON scalar parses into a string field, so "missing" and "wrong
    type" can be told apart field by field."""
    return T.StructType(
        [T.StructField(name, T.StringType()) for name in rules.fields] + [T.StructField(_CORRUPT, T.StringType())]
    )


def _typed(rules: SourceRules, field: str, text: Column) -> Column:
    wire = rules.fields[field]
    if field == rules.timestamp_field:
        return F.try_to_timestamp(text)
    if wire is int:
        return F.when(text.rlike(_INTEGER_TEXT), text.try_cast("bigint"))
    if wire is float:
        value = text.try_cast("double")
        return F.when(~F.isnan(value), value)  # +inf stays: a declared upper bound catches it
    if wire is bool:
        return text.try_cast("boolean")
    return text


def parse_events(raw: DataFrame, rules: SourceRules, now: Column | None = None,
                 keep_columns: tuple[str, ...] | None = None) -> DataFrame:
    """Kafka rows (``value`` binary, ``topic``, ``partition``, ``offset``) -> typed rows + ``dlq_reason``.

    The schema, value ranges and future tolerance are the source's declaration (:class:`SourceRules`).
    ``now`` (default ``current_timestamp()``, which Spark fixes per micro-batch, replay included)
    bounds event times: later than ``now + rules.future_tolerance_s`` is ``future_timestamp``.
    ``keep_columns``: fields to return (default all); the others are still validated.
    Each stage is its own projection so every field is parsed and cast once.
    """
    now = F.current_timestamp() if now is None else now
    fields = list(rules.fields)
    ts_field = rules.timestamp_field
    keep = tuple(fields) if keep_columns is None else tuple(keep_columns)
    text = F.col("value").cast("string")
    # A dead letter has no trustworthy event time: its place in event time is its Kafka record's timestamp
    # (never later than the batch), so a malformed record in a backlog cannot push the watermark to "now"
    # and make every older event of the backlog too late.
    record_time = F.col("timestamp") if "timestamp" in raw.columns else now
    parsed = raw.select(
        F.col("topic").alias("source_topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("value").alias("raw_value"),
        record_time.alias("record_time"),
        F.from_json(text, text_schema(rules), {"columnNameOfCorruptRecord": _CORRUPT, "mode": "PERMISSIVE"}).alias("j"),
        now.alias("batch_time"),
    )
    typed = parsed.select(
        "source_topic", "partition", "offset", "raw_value", "batch_time", "record_time",
        (F.col("j").isNull() | F.col(f"j.{_CORRUPT}").isNotNull() | F.col("raw_value").isNull()).alias("_corrupt"),
        *[F.col(f"j.{name}").isNull().alias(f"_missing_{name}") for name in fields],
        *[_typed(rules, name, F.col(f"j.{name}")).alias(name) for name in fields],
    )
    reason, field = F.lit(None).cast("string"), F.lit(None).cast("string")
    # Checks in reverse priority: the last matching `when` wins.
    checks: list[tuple[Column, str, str | None]] = [
        (F.col(ts_field) > F.col("batch_time") + F.make_interval(secs=F.lit(rules.future_tolerance_s)),
         "future_timestamp", ts_field),
    ]
    for name, (lo, hi) in rules.ranges.items():
        if hi is not None:
            checks.append((F.col(name) > F.lit(hi), "above_max", name))
        if lo is not None:
            checks.append((F.col(name) < F.lit(lo), "below_min", name))
    for name in reversed(fields):
        checks.append((~F.col(f"_missing_{name}") & F.col(name).isNull(), "bad_type", name))
    for name in reversed(fields):
        checks.append((F.col(f"_missing_{name}"), "missing_field", name))
    checks.append((F.col("_corrupt"), "unparseable_json", None))
    for cond, why, fname in checks:
        cond = F.coalesce(cond, F.lit(False))
        reason = F.when(cond, F.lit(why)).otherwise(reason)
        field = F.when(cond, F.lit(fname).cast("string")).otherwise(field)
    judged = typed.select("*", reason.alias("dlq_reason"), field.alias("dlq_field"))
    bad = F.col("dlq_reason").isNotNull()
    cols = [F.when(bad, F.col("source_topic")).alias("source_topic"), F.col("partition"), F.col("offset")]
    cols += [F.col(name) for name in keep if name != ts_field]
    cols += [F.unix_micros(F.col(ts_field)).alias("event_us"), F.unix_micros(F.col("batch_time")).alias("batch_us")]
    cols += [F.col("dlq_reason"), F.col("dlq_field")]
    # Original bytes only where they are needed (dead letters), as base64 so any bytes survive.
    cols.append(F.when(bad, F.base64(F.col("raw_value"))).alias("raw_base64"))
    cols.append(F.when(bad, F.unix_micros(F.least(F.col("record_time"), F.col("batch_time")))).alias("letter_us"))
    return judged.select(*cols)


def valid_history_condition(rules: SourceRules) -> Column:
    """The same value rules for historical (already typed) events, used by the backfill."""
    cond = F.col(rules.timestamp_field).isNotNull()
    for name in rules.of_type(int) + rules.of_type(float):
        cond = cond & F.col(name).isNotNull()
    for name in rules.of_type(float):
        cond = cond & ~F.isnan(F.col(name))
    for name, (lo, hi) in rules.ranges.items():
        if lo is not None:
            cond = cond & (F.col(name) >= F.lit(lo))
        if hi is not None:
            cond = cond & (F.col(name) <= F.lit(hi))
    return cond
