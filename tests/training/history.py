"""A small crafted history in the simulator's layout, plus the stream feature folders the streaming
backfill would write, computed here in plain pandas from the definitions in feature_repo/features.py.

Fraud is injected as short bursts of large, foreign, high-risk-merchant transactions, so a model
that sees the point-in-time features can learn it (and one that leaks the future would look better
than it should). Timestamps are unique per entity (microsecond jitter) so "as of" has one answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.storage import Location

T0 = pd.Timestamp("2026-03-01", tz="UTC")
WINDOWS = {"10m": pd.Timedelta(minutes=10), "1h": pd.Timedelta(hours=1), "24h": pd.Timedelta(hours=24)}
HOME = ["DE", "FR", "ES", "IT", "NL"]
FOREIGN = ["US", "BR", "NG", "TH"]
CATEGORIES = ["grocery", "restaurant", "electronics", "travel", "digital_goods"]


@dataclass
class History:
    users: pd.DataFrame
    merchants: pd.DataFrame
    transactions: pd.DataFrame
    labels: pd.DataFrame
    user_features: pd.DataFrame
    merchant_features: pd.DataFrame


def _us(ts: pd.Series) -> pd.Series:
    return ts.astype("datetime64[us, UTC]")


def write_parquet(df: pd.DataFrame, path: Path | Location) -> None:
    """``df`` as Parquet at a local path or a :class:`core.storage.Location` (e.g. on S3)."""
    out = df.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = _us(out[col])
    if isinstance(path, Location):
        path.write_pandas(out, coerce_timestamps="us", allow_truncated_timestamps=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)


def user_aggregates(txns: pd.DataFrame) -> pd.DataFrame:
    """User stream features per transaction: aggregates over the user's events in (t-W, t]."""
    rows = []
    for user_id, g in txns.sort_values("event_timestamp").groupby("user_id", sort=True):
        ts = g["event_timestamp"].to_numpy()
        amt = g["amount"].to_numpy()
        mer = g["merchant_id"].to_numpy()
        for i in range(len(g)):
            t = ts[i]
            row = {"user_id": user_id, "event_timestamp": g["event_timestamp"].iloc[i]}
            for label, w in WINDOWS.items():
                m = (ts > t - w.to_timedelta64()) & (ts <= t)
                a = amt[m]
                row[f"txn_count_{label}"] = int(m.sum())
                row[f"txn_sum_{label}"] = float(a.sum())
                row[f"txn_mean_{label}"] = float(a.mean())
                row[f"txn_max_{label}"] = float(a.max())
            m1 = (ts > t - WINDOWS["1h"].to_timedelta64()) & (ts <= t)
            row["distinct_merchants_1h"] = int(len(np.unique(mer[m1])))
            prev = ts[(ts < t) & (ts > t - WINDOWS["24h"].to_timedelta64())]
            row["secs_since_prev_txn"] = float((t - prev.max()) / np.timedelta64(1, "s")) if len(prev) else np.nan
            rows.append(row)
    return pd.DataFrame(rows)


def merchant_aggregates(txns: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for merchant_id, g in txns.sort_values("event_timestamp").groupby("merchant_id", sort=True):
        ts = g["event_timestamp"].to_numpy()
        amt = g["amount"].to_numpy()
        for i in range(len(g)):
            m = (ts > ts[i] - WINDOWS["1h"].to_timedelta64()) & (ts <= ts[i])
            rows.append(
                {
                    "merchant_id": merchant_id,
                    "event_timestamp": g["event_timestamp"].iloc[i],
                    "merchant_txn_count_1h": int(m.sum()),
                    "merchant_amount_mean_1h": float(amt[m].mean()),
                }
            )
    return pd.DataFrame(rows)


def make_history(n_users: int = 150, n_merchants: int = 30, days: int = 12, seed: int = 0) -> History:
    """Users, merchants, ~``n_users * days * 1.5`` transactions with fraud bursts, labels and stream features."""
    rng = np.random.default_rng(seed)
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1, dtype="int64"),
            "home_country": rng.choice(HOME, n_users),
            "card_type": rng.choice(["debit", "credit", "prepaid"], n_users),
            "account_age_days": rng.integers(10, 3000, n_users).astype("int64"),
            "credit_limit": np.round(rng.uniform(500, 8000, n_users), 2),
            "event_timestamp": T0 - pd.Timedelta(days=30),
        }
    )
    merchants = pd.DataFrame(
        {
            "merchant_id": np.arange(1, n_merchants + 1, dtype="int64"),
            "category": rng.choice(CATEGORIES, n_merchants),
            "merchant_country": rng.choice(HOME + FOREIGN[:1], n_merchants),
            "risk_tier": rng.choice([0, 1, 2], n_merchants, p=[0.6, 0.3, 0.1]).astype("int64"),
            "event_timestamp": T0 - pd.Timedelta(days=30),
        }
    )
    risky = merchants.loc[merchants.risk_tier >= 1, "merchant_id"].to_numpy()
    span_us = days * 86_400_000_000
    # legit traffic: each user has a typical ticket size
    n_legit = int(n_users * days * 1.5)
    user = rng.integers(1, n_users + 1, n_legit)
    typical = rng.lognormal(3.5, 0.6, n_users + 1)
    legit = pd.DataFrame(
        {
            "user_id": user,
            "merchant_id": rng.integers(1, n_merchants + 1, n_legit),
            "amount": np.round(typical[user] * rng.lognormal(0, 0.6, n_legit), 2),
            "offset_us": rng.integers(0, span_us, n_legit),
            "is_fraud": 0,
        }
    )
    home_of = dict(zip(users.user_id, users.home_country, strict=True))
    legit["country"] = [
        home_of[u] if r > 0.08 else FOREIGN[int(r * 100) % len(FOREIGN)]
        for u, r in zip(legit.user_id, rng.random(n_legit), strict=True)
    ]
    # fraud bursts: 2-4 quick, larger payments, mostly foreign, mostly at risky merchants
    n_bursts = max(4, int(n_legit * 0.012))
    parts = []
    for _ in range(n_bursts):
        size = int(rng.integers(2, 5))
        start = int(rng.integers(0, span_us - 3_600_000_000))
        u = int(rng.integers(1, n_users + 1))
        parts.append(
            pd.DataFrame(
                {
                    "user_id": u,
                    "merchant_id": np.where(
                        rng.random(size) < 0.7, rng.choice(risky, size), rng.integers(1, n_merchants + 1, size)
                    ),
                    "amount": np.round(typical[u] * rng.uniform(1.2, 8, size), 2),
                    "offset_us": start + np.cumsum(rng.integers(20_000_000, 900_000_000, size)),
                    "is_fraud": 1,
                    # most fraud is cross-border, some is not (so no single flag gives it away)
                    "country": np.where(rng.random(size) < 0.6, rng.choice(FOREIGN, size), home_of[u]),
                }
            )
        )
    txns = pd.concat([legit, *parts], ignore_index=True)
    txns["offset_us"] = txns["offset_us"] + rng.integers(0, 1000, len(txns))  # µs jitter: unique times
    txns = txns.drop_duplicates("offset_us").sort_values("offset_us").reset_index(drop=True)
    txns["event_timestamp"] = T0 + pd.to_timedelta(txns["offset_us"], unit="us")
    txns["transaction_id"] = [f"t{i:07d}" for i in range(len(txns))]
    txns["currency"] = "EUR"
    txns["channel"] = rng.choice(["pos", "online"], len(txns))
    txns["user_id"] = txns["user_id"].astype("int64")
    txns["merchant_id"] = txns["merchant_id"].astype("int64")
    delay = np.where(txns.is_fraud == 1, rng.uniform(1, 72, len(txns)), rng.uniform(24, 24 * 5, len(txns)))
    labels = pd.DataFrame(
        {
            "transaction_id": txns.transaction_id,
            "user_id": txns.user_id,
            "merchant_id": txns.merchant_id,
            "event_timestamp": txns.event_timestamp,
            "label_timestamp": txns.event_timestamp + pd.to_timedelta(delay, unit="h"),
            "is_fraud": txns.is_fraud.astype("int64"),
        }
    )
    transactions = txns[
        ["transaction_id", "user_id", "merchant_id", "amount", "currency", "country", "channel", "event_timestamp"]
    ]
    return History(
        users=users,
        merchants=merchants,
        transactions=transactions,
        labels=labels,
        user_features=user_aggregates(transactions),
        merchant_features=merchant_aggregates(transactions),
    )


def write_history(h: History, data_dir: Path | Location) -> None:
    """Write ``h`` in the simulator's / streaming backfill's layout under ``data_dir``."""
    write_parquet(h.users, data_dir / "users.parquet")
    write_parquet(h.merchants, data_dir / "merchants.parquet")
    write_parquet(h.transactions, data_dir / "transactions" / "part-00000.parquet")
    write_parquet(h.labels, data_dir / "labels.parquet")
    write_parquet(h.user_features, data_dir / "user_txn_features" / "part-00000.parquet")
    write_parquet(h.merchant_features, data_dir / "merchant_txn_features" / "part-00000.parquet")
