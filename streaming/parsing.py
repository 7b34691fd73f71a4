"""Parsing and validation of raw transaction messages, in Spark SQL (runs on the executors).

Each Kafka record becomes one row with the typed transaction fields and ``dlq_reason``: null for a
valid event, else one of :data:`DLQ_REASONS` (``dlq_field`` names the offending field). Nothing is
filtered here: bad records travel on to the dead-letter topic with their original bytes.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from core.contracts import TRANSACTION_FIELDS

DLQ_REASONS = (
    "unparseable_json",
    "missing_field",
    "bad_type",
    "negative_amount",
    "amount_too_large",
    "future_timestamp",
)
INT_FIELDS = tuple(f for f, t in TRANSACTION_FIELDS.items() if t is int)  # user_id, merchant_id
FLOAT_FIELDS = tuple(f for f, t in TRANSACTION_FIELDS.items() if t is float)  # amount
TIME_FIELD = "event_timestamp"
STRING_FIELDS = tuple(f for f, t in TRANSACTION_FIELDS.items() if t is str and f != TIME_FIELD)
_CORRUPT = "_corrupt_record"

# Everything as text first: any JSON scalar parses into a string field, so "missing" and "wrong type"
# can be told apart field by field.
TEXT_SCHEMA = T.StructType(
    [T.StructField(name, T.StringType()) for name in TRANSACTION_FIELDS] + [T.StructField(_CORRUPT, T.StringType())]
)
_INTEGER_TEXT = r"^-?[0-9]{1,18}$"


def _typed(field: str, text: Column) -> Column:
    if field in INT_FIELDS:
        return F.when(text.rlike(_INTEGER_TEXT), text.try_cast("bigint"))
    if field in FLOAT_FIELDS:
        value = text.try_cast("double")
        return F.when(~F.isnan(value), value)  # +inf stays: it is an absurd amount
    if field == TIME_FIELD:
        return F.try_to_timestamp(text)
    return text


def parse_transactions(raw: DataFrame, max_amount: float, future_tolerance_s: float, now: Column | None = None,
                       keep_columns: tuple[str, ...] | None = None) -> DataFrame:
    """Kafka rows (``value`` binary, ``topic``, ``partition``, ``offset``) -> typed rows + ``dlq_reason``.

    ``now`` (default ``current_timestamp()``, which Spark fixes per micro-batch, replay included)
    bounds event times: later than ``now + future_tolerance_s`` is ``future_timestamp``.
    ``keep_columns``: transaction fields to return (default all); the others are still validated.
    Each stage is its own projection so every field is parsed and cast once.
    """
    now = F.current_timestamp() if now is None else now
    keep = tuple(TRANSACTION_FIELDS) if keep_columns is None else tuple(keep_columns)
    text = F.col("value").cast("string")
    parsed = raw.select(
        F.col("topic").alias("source_topic"),
        F.col("partition"),
        F.col("offset"),
        F.col("value").alias("raw_value"),
        F.from_json(text, TEXT_SCHEMA, {"columnNameOfCorruptRecord": _CORRUPT, "mode": "PERMISSIVE"}).alias("j"),
        now.alias("batch_time"),
    )
    typed = parsed.select(
        "source_topic", "partition", "offset", "raw_value", "batch_time",
        (F.col("j").isNull() | F.col(f"j.{_CORRUPT}").isNotNull() | F.col("raw_value").isNull()).alias("_corrupt"),
        *[F.col(f"j.{name}").isNull().alias(f"_missing_{name}") for name in TRANSACTION_FIELDS],
        *[_typed(name, F.col(f"j.{name}")).alias(name) for name in TRANSACTION_FIELDS],
    )
    reason, field = F.lit(None).cast("string"), F.lit(None).cast("string")
    # Checks in reverse priority: the last matching `when` wins.
    checks: list[tuple[Column, str, str | None]] = [
        (F.col(TIME_FIELD) > F.col("batch_time") + F.make_interval(secs=F.lit(future_tolerance_s)),
         "future_timestamp", TIME_FIELD),
    ]
    for name in FLOAT_FIELDS:
        checks.append((F.col(name) > F.lit(max_amount), "amount_too_large", name))
        checks.append((F.col(name) < 0, "negative_amount", name))
    for name in reversed(list(TRANSACTION_FIELDS)):
        checks.append((~F.col(f"_missing_{name}") & F.col(name).isNull(), "bad_type", name))
    for name in reversed(list(TRANSACTION_FIELDS)):
        checks.append((F.col(f"_missing_{name}"), "missing_field", name))
    checks.append((F.col("_corrupt"), "unparseable_json", None))
    for cond, why, fname in checks:
        cond = F.coalesce(cond, F.lit(False))
        reason = F.when(cond, F.lit(why)).otherwise(reason)
        field = F.when(cond, F.lit(fname).cast("string")).otherwise(field)
    judged = typed.select("*", reason.alias("dlq_reason"), field.alias("dlq_field"))
    bad = F.col("dlq_reason").isNotNull()
    cols = [F.when(bad, F.col("source_topic")).alias("source_topic"), F.col("partition"), F.col("offset")]
    cols += [F.col(name) for name in keep if name != TIME_FIELD]
    cols += [F.unix_micros(F.col(TIME_FIELD)).alias("event_us"), F.unix_micros(F.col("batch_time")).alias("batch_us")]
    cols += [F.col("dlq_reason"), F.col("dlq_field")]
    # Original bytes only where they are needed (dead letters), as base64 so any bytes survive.
    cols.append(F.when(bad, F.base64(F.col("raw_value"))).alias("raw_base64"))
    return judged.select(*cols)


def valid_history_condition(max_amount: float) -> Column:
    """The same value rules for historical (already typed) events used by the backfill."""
    cond = F.lit(True)
    for name in INT_FIELDS + FLOAT_FIELDS + (TIME_FIELD,):
        cond = cond & F.col(name).isNotNull()
    for name in FLOAT_FIELDS:
        cond = cond & ~F.isnan(F.col(name)) & (F.col(name) >= 0) & (F.col(name) <= F.lit(max_amount))
    return cond
