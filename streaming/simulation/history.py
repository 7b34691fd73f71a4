"""History mode: days of transactions, profiles and delayed labels written to Parquet.

Layout under the data dir (see COMMON.md): ``users.parquet``, ``merchants.parquet``,
``transactions/part-YYYYMMDD.parquet`` (one file per simulated UTC day) and ``labels.parquet``.
Each day draws from its own random streams ``[seed, stream, day]``, so a day's content does not
depend on how many days are generated after it.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from streaming.simulation import catalog as C
from streaming.simulation import scenarios as S
from streaming.simulation import tables as T
from streaming.simulation.events import (
    US,
    Events,
    card_testing_events,
    fraud_events,
    label_delays_us,
    legit_events,
)
from streaming.simulation.population import Population, make_population

DAY_US = 86400 * US
STREAM_LEGIT, STREAM_FRAUD, STREAM_LABELS, STREAM_PROFILES = 1, 2, 4, 5
PART_NAME = re.compile(r"part-\d{8}\.parquet")
PROFILE_UPDATE_SHARE = 0.1  # users with a second profile snapshot inside the history (credit limit change)


@dataclass
class HistorySummary:
    """What :func:`simulate_history` wrote."""

    data_dir: str
    start: str
    end: str
    days: int
    seed: int
    n_users: int
    n_merchants: int
    n_transactions: int
    n_fraud: int
    fraud_rate: float
    n_user_snapshots: int
    scenarios: list[dict[str, Any]]
    elapsed_s: float
    paths: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_start(start: datetime | date | str | None, days: int) -> datetime:
    """Start of the history (UTC). Default: midnight UTC ``days`` days before today."""
    if start is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=days)
    if isinstance(start, str):
        start = datetime.fromisoformat(start.replace("Z", "+00:00"))
    if isinstance(start, date) and not isinstance(start, datetime):
        start = datetime(start.year, start.month, start.day)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return start.astimezone(UTC)


def episode_rate_per_user_day(pop: Population) -> float:
    """Fraud episodes per user and day giving about ``FRAUD_SHARE`` of all transactions."""
    return C.FRAUD_SHARE * float(pop.users.daily_rate.mean()) / C.mean_burst_size()


def history_day(pop: Population, day: int, day_start_us: int, scenarios: list[S.Scenario]) -> Events:
    """All transactions starting on one simulated day (fraud bursts may run past midnight)."""
    seed, users = pop.seed, pop.users
    weekday = datetime.fromtimestamp(day_start_us // US, UTC).weekday()

    rng = np.random.default_rng([seed, STREAM_LEGIT, day])
    counts = rng.poisson(users.daily_rate * C.WEEKDAY_FACTOR[weekday])
    user = np.repeat(np.arange(users.n, dtype=np.int64), counts)
    hour = rng.choice(24, size=user.size, p=C.HOUR_WEIGHTS / C.HOUR_WEIGHTS.sum())
    ts = day_start_us + hour * 3600 * US + rng.integers(0, 3600 * US, size=user.size)
    legit, draws = legit_events(pop, rng, ts, user)

    frng = np.random.default_rng([seed, STREAM_FRAUD, day])
    n_ep = frng.poisson(episode_rate_per_user_day(pop) * users.n)
    ep_user = frng.integers(0, users.n, size=n_ep)
    ep_hour = frng.choice(24, size=n_ep, p=C.FRAUD_HOUR_WEIGHTS / C.FRAUD_HOUR_WEIGHTS.sum())
    ep_start = day_start_us + ep_hour * 3600 * US + frng.integers(0, 3600 * US, size=n_ep)
    fraud = fraud_events(pop, frng, ep_user, ep_start)

    parts = [legit, fraud]
    for sc in scenarios:
        srng = np.random.default_rng([seed, sc.stream_id, day])
        if sc.name == "merchant_mix":
            parts[0] = S.apply_merchant_mix(pop, sc, srng, parts[0], draws)
        elif sc.name == "new_fraud_pattern":
            lo = max(day_start_us, sc.starts_us)
            hi = day_start_us + DAY_US
            if lo < hi:
                share = (hi - lo) / DAY_US
                rate = S.CARD_TESTING_RELATIVE_RATE * sc.strength * episode_rate_per_user_day(pop)
                n_ct = srng.poisson(rate * users.n * share)
                ct_user = srng.integers(0, users.n, size=n_ct)
                ct_start = srng.integers(lo, hi, size=n_ct)
                parts.append(card_testing_events(pop, srng, ct_user, ct_start))
    events = Events.concat(parts)
    for sc in scenarios:
        if sc.name == "amount_shift":
            events = S.apply_amount_shift(sc, events)
    return events


def simulate_history(
    start: datetime | date | str | None = None,
    days: int = 14,
    n_users: int = 2000,
    n_merchants: int = 300,
    seed: int = 42,
    data_dir: str | Path | None = None,
    scenario: S.Scenario | list[S.Scenario] | None = None,
    progress: bool = True,
) -> HistorySummary:
    """Generate ``days`` days of history from ``start`` and write the Parquet layout under ``data_dir``.

    Same arguments (explicit ``start``) -> byte-identical files. ``data_dir`` defaults to
    the data dir (``RTML_DATA_DIR``, a folder or ``s3://bucket/prefix``). Existing ``transactions/part-YYYYMMDD.parquet`` files there are replaced
    (other files in that folder are left alone).
    """
    from core.storage import data_root, location

    if days < 1:
        raise ValueError("days must be >= 1")
    t0 = time.perf_counter()
    start_dt = parse_start(start, days)
    start_us = S.to_us(start_dt)
    end_us = start_us + days * DAY_US
    scenarios = S.as_list(scenario)
    out = location(data_dir) if data_dir is not None else data_root()
    txn_dir = out / "transactions"
    for old in txn_dir.glob("part-"):  # only our own day parts; files others put there stay
        if PART_NAME.fullmatch(old.name):
            old.delete()

    pop = make_population(n_users, n_merchants, seed)
    users_table = profiles_users(pop, start_us, days)
    users_path = T.write_parquet(users_table, out / "users.parquet")
    merchants_path = T.write_parquet(profiles_merchants(pop, start_us), out / "merchants.parquet")

    label_parts: list[pa.Table] = []
    carry = Events.empty()
    written = n_fraud = 0
    bar = tqdm(total=days, desc="history", unit="day", disable=not progress)
    for day in range(days):
        day_start = start_us + day * DAY_US
        events = Events.concat([carry, history_day(pop, day, day_start, scenarios)])
        inside = events.ts_us < day_start + DAY_US
        carry = events.take(np.flatnonzero(~inside)) if day + 1 < days else Events.empty()
        events = events.take(np.flatnonzero(inside)).sorted()
        ids = T.transaction_ids(f"h{seed}-", written, len(events))
        table = T.transactions_table(
            events, ids, pop.users.user_id[events.user], pop.merchants.merchant_id[events.merchant]
        )
        day_name = datetime.fromtimestamp(day_start // US, UTC).strftime("%Y%m%d")
        T.write_parquet(table, txn_dir / f"part-{day_name}.parquet")
        lrng = np.random.default_rng([seed, STREAM_LABELS, day])
        is_fraud = events.is_fraud
        label_parts.append(T.labels_table(table, events.ts_us + label_delays_us(lrng, is_fraud), is_fraud))
        written += len(events)
        n_fraud += int(is_fraud.sum())
        bar.update(1)
        bar.set_postfix(rows=written, fraud=f"{n_fraud / max(written, 1):.2%}")
    bar.close()
    labels_path = T.write_parquet(pa.concat_tables(label_parts), out / "labels.parquet")
    return HistorySummary(
        data_dir=out.uri,
        start=start_dt.isoformat(),
        end=datetime.fromtimestamp(end_us / US, UTC).isoformat(),
        days=days,
        seed=seed,
        n_users=n_users,
        n_merchants=n_merchants,
        n_transactions=written,
        n_fraud=n_fraud,
        fraud_rate=n_fraud / max(written, 1),
        n_user_snapshots=users_table.num_rows,
        scenarios=[{"name": s.name, "starts_at": s.starts_at.isoformat(), "strength": s.strength} for s in scenarios],
        elapsed_s=round(time.perf_counter() - t0, 3),
        paths={
            "users": str(users_path),
            "merchants": str(merchants_path),
            "transactions": txn_dir.uri,
            "labels": str(labels_path),
        },
    )


def profiles_users(pop: Population, start_us: int, days: int) -> pa.Table:
    """One snapshot per user shortly before the history, plus a credit-limit change for some users inside it."""
    users = pop.users
    rng = np.random.default_rng([pop.seed, STREAM_PROFILES, 0])
    n = users.n
    snap = start_us - rng.integers(3600 * US, 7 * DAY_US, size=n)
    update = rng.random(n) < PROFILE_UPDATE_SHARE
    when = start_us + rng.integers(0, days * DAY_US, size=n)
    factor = rng.choice(np.array([0.5, 1.5, 2.0]), size=n)
    new_limit = np.maximum(np.round(users.credit_limit * factor / 50.0) * 50.0, 100.0)
    idx = np.flatnonzero(update)
    user_idx = np.concatenate([np.arange(n), idx])
    ts = np.concatenate([snap, when[idx]])
    age = np.concatenate([users.account_age_days, users.account_age_days[idx] + (when[idx] - snap[idx]) // DAY_US])
    limit = np.concatenate([users.credit_limit, new_limit[idx]])
    order = np.lexsort((ts, user_idx))
    return pa.Table.from_arrays(
        [
            pa.array(users.user_id[user_idx][order]),
            T.lookup(T._COUNTRIES, users.home[user_idx][order]),
            T.lookup(T._CARD_TYPES, users.card_type[user_idx][order]),
            pa.array(age[order].astype(np.int64)),
            pa.array(limit[order].astype(np.float64)),
            T.ts_array(ts[order]),
        ],
        schema=T.USERS_SCHEMA,
    )


def profiles_merchants(pop: Population, start_us: int) -> pa.Table:
    m = pop.merchants
    rng = np.random.default_rng([pop.seed, STREAM_PROFILES, 1])
    ts = start_us - rng.integers(DAY_US, 30 * DAY_US, size=m.n)
    return pa.Table.from_arrays(
        [
            pa.array(m.merchant_id),
            T.lookup(T._CATEGORIES, m.category),
            T.lookup(T._COUNTRIES, m.country),
            pa.array(m.risk_tier),
            T.ts_array(ts),
        ],
        schema=T.MERCHANTS_SCHEMA,
    )
