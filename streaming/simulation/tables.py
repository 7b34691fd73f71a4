"""Arrow tables in the documented Parquet layout, and deterministic Parquet writing.

All timestamps are ``timestamp[us, tz=UTC]`` (Spark cannot read ns). Writer options are fixed so the
same data gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.contracts import arrow_schema, stream_rules
from core.storage import Location, location
from streaming.simulation import catalog as C
from streaming.simulation.events import Events

TS = pa.timestamp("us", tz="UTC")

USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("home_country", pa.string()),
        ("card_type", pa.string()),
        ("account_age_days", pa.int64()),
        ("credit_limit", pa.float64()),
        ("event_timestamp", TS),
    ]
)
MERCHANTS_SCHEMA = pa.schema(
    [
        ("merchant_id", pa.int64()),
        ("category", pa.string()),
        ("merchant_country", pa.string()),
        ("risk_tier", pa.int64()),
        ("event_timestamp", TS),
    ]
)
TRANSACTIONS_SCHEMA = arrow_schema(stream_rules())  # the feature repo's KafkaSource schema
LABELS_SCHEMA = pa.schema(
    [
        ("transaction_id", pa.string()),
        ("user_id", pa.int64()),
        ("merchant_id", pa.int64()),
        ("event_timestamp", TS),
        ("label_timestamp", TS),
        ("is_fraud", pa.int64()),
    ]
)

_COUNTRIES = pa.array(C.COUNTRIES, pa.string())
_CHANNELS = pa.array(C.CHANNELS, pa.string())
_CATEGORIES = pa.array(C.CATEGORIES, pa.string())
_CARD_TYPES = pa.array(C.CARD_TYPES, pa.string())
_CURRENCY = pa.array([C.CURRENCY], pa.string())


def lookup(values: pa.Array, idx: np.ndarray) -> pa.Array:
    return pc.take(values, pa.array(np.asarray(idx, dtype=np.int64)))


def ts_array(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), pa.int64()).view(TS)


def transaction_ids(prefix: str, first: int, n: int, width: int = 9) -> pa.Array:
    """``<prefix><zero-padded sequence number>``, e.g. ``h42-000000017``."""
    seq = pa.array(np.arange(first, first + n, dtype=np.int64))
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pc.cast(seq, pa.string()), width, "0"), "")


def transactions_table(ev: Events, ids: pa.Array, user_ids: np.ndarray, merchant_ids: np.ndarray) -> pa.Table:
    """Rows of ``ev``; ``user_ids``/``merchant_ids`` are the id columns already resolved per row."""
    n = len(ev)
    return pa.Table.from_arrays(
        [
            ids,
            pa.array(user_ids, pa.int64()),
            pa.array(merchant_ids, pa.int64()),
            pa.array(ev.amount, pa.float64()),
            lookup(_CURRENCY, np.zeros(n, dtype=np.int64)),
            lookup(_COUNTRIES, ev.country),
            lookup(_CHANNELS, ev.channel),
            ts_array(ev.ts_us),
        ],
        schema=TRANSACTIONS_SCHEMA,
    )


def labels_table(txns: pa.Table, label_us: np.ndarray, is_fraud: np.ndarray) -> pa.Table:
    return pa.Table.from_arrays(
        [
            txns["transaction_id"],
            txns["user_id"],
            txns["merchant_id"],
            txns["event_timestamp"],
            ts_array(label_us),
            pa.array(np.asarray(is_fraud, dtype=np.int64)),
        ],
        schema=LABELS_SCHEMA,
    )


def write_parquet(table: pa.Table, path: Path | Location) -> Location:
    """Write with fixed options (same table -> same bytes), atomically (local temp file + rename, or one S3 object)."""
    target = path if isinstance(path, Location) else location(path)
    target.write_table(
        table,
        compression="snappy",
        use_dictionary=True,
        write_statistics=True,
        row_group_size=1 << 20,
        version="2.6",
        data_page_version="1.0",
        coerce_timestamps="us",
        allow_truncated_timestamps=False,
    )
    return target
