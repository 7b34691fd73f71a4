"""Live mode: an endless, seeded stream of transactions at a fixed rate, as exact-known batches.

Event ``i`` has event time ``start + i / rate`` (microseconds, floored): the producer paces sends so
wall clock follows event time. Users are drawn in proportion to their habitual rate; fraud episodes
(bursts) start at random slots and their transactions take the first free slots at/after their
scheduled time. Generation runs in chunks whose size depends only on the rate, and each chunk has
its own random streams ``[seed, stream, start_us, chunk]``: the same (seed, rate, start, population,
scenarios) always gives the same events, and a shorter run is a prefix of a longer one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from core.contracts import TRANSACTION_FIELDS, iso_utc
from streaming.simulation import catalog as C
from streaming.simulation import scenarios as S
from streaming.simulation import tables as T
from streaming.simulation.events import (
    US,
    Events,
    card_testing_events,
    fraud_episode_rate_per_txn,
    fraud_events,
    label_delays_us,
    legit_events,
)
from streaming.simulation.population import Population, make_population

STREAM_LIVE, STREAM_LIVE_FRAUD, STREAM_LIVE_LABELS = 10, 11, 12
MAX_CHUNK = 4096
DEFAULT_LABEL_DELAY_SCALE = 1 / 1440  # live labels: one simulated day of delay -> one minute


@dataclass
class LiveBatch:
    """Consecutive live events ``first .. first + len - 1`` with their ids and label times."""

    first: int
    events: Events
    transaction_ids: list[str]
    label_ts_us: np.ndarray
    user_ids: np.ndarray
    merchant_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.events)


def natural_rate_per_s(n_users: int = 2000, n_merchants: int = 300, seed: int = 42) -> float:
    """Events/s at which each user transacts at its history habit (sum of daily rates / 86400).

    The live stream draws users in proportion to their habits at whatever rate is asked, so a rate
    ``k`` times this makes every user ``k`` times as active as in the history (window counts grow
    accordingly); use more users for realistic per-user features at high rates.
    """
    pop = make_population(n_users, n_merchants, seed)
    return float(pop.users.daily_rate.sum() / 86400)


def chunk_size(rate_per_s: float) -> int:
    """Events per generation chunk: about a quarter second of stream, 1..MAX_CHUNK (depends on rate only)."""
    return int(min(MAX_CHUNK, max(1, round(rate_per_s / 4))))


def _place(slot_ts: np.ndarray, due_ts: np.ndarray) -> np.ndarray:
    """First free slot at/after each (sorted) due time; collisions move to the next slot."""
    idx = np.searchsorted(slot_ts, due_ts, side="left")
    j = np.arange(idx.size)
    return np.maximum.accumulate(idx - j) + j if idx.size else idx


def iter_live_batches(
    rate_per_s: float,
    max_events: int | None = None,
    duration_s: float | None = None,
    seed: int = 42,
    n_users: int = 2000,
    n_merchants: int = 300,
    start_time: datetime | None = None,
    scenario: S.Scenario | list[S.Scenario] | None = None,
    label_delay_scale: float = DEFAULT_LABEL_DELAY_SCALE,
    population: Population | None = None,
) -> Iterator[LiveBatch]:
    """Batches of live events (see module doc). Stops after ``max_events`` or ``duration_s`` (else endless)."""
    if rate_per_s <= 0:
        raise ValueError("rate_per_s must be > 0")
    total = _total_events(rate_per_s, max_events, duration_s)
    start = start_time or datetime.now(UTC)
    start_us = S.to_us(start)
    pop = population or make_population(n_users, n_merchants, seed)
    scenarios = S.as_list(scenario)
    size = chunk_size(rate_per_s)
    weights = pop.users.daily_rate / pop.users.daily_rate.sum()
    p_episode = fraud_episode_rate_per_txn()
    prefix = f"l{seed}-{start_us // 1000}-"
    pending = Events.empty()
    k = 0
    while total is None or k * size < total:
        first = k * size
        slots = first + np.arange(size, dtype=np.int64)
        slot_ts = start_us + (slots * US / rate_per_s).astype(np.int64)
        rng = np.random.default_rng([seed, STREAM_LIVE, start_us, k])
        user = rng.choice(pop.users.n, size=size, p=weights)
        legit, draws = legit_events(pop, rng, slot_ts, user)

        frng = np.random.default_rng([seed, STREAM_LIVE_FRAUD, start_us, k])
        n_ep = frng.poisson(p_episode * size)
        ep_slot = np.sort(frng.integers(0, size, size=n_ep))
        new = [fraud_events(pop, frng, frng.integers(0, pop.users.n, size=n_ep), slot_ts[ep_slot])]
        for sc in scenarios:
            srng = np.random.default_rng([seed, sc.stream_id, start_us, k])
            if sc.name == "merchant_mix":
                legit = S.apply_merchant_mix(pop, sc, srng, legit, draws)
            elif sc.name == "new_fraud_pattern":
                eligible = np.flatnonzero(slot_ts >= sc.starts_us)
                rate = S.CARD_TESTING_RELATIVE_RATE * sc.strength * p_episode
                n_ct = srng.poisson(rate * eligible.size)
                if n_ct and eligible.size:
                    ct_slot = np.sort(eligible[srng.integers(0, eligible.size, size=n_ct)])
                    new.append(
                        card_testing_events(pop, srng, srng.integers(0, pop.users.n, size=n_ct), slot_ts[ct_slot])
                    )
        pending = Events.concat([pending, *new]).sorted()
        events, pending = _merge(legit, pending, slot_ts)
        for sc in scenarios:
            if sc.name == "amount_shift":
                events = S.apply_amount_shift(sc, events)

        lrng = np.random.default_rng([seed, STREAM_LIVE_LABELS, start_us, k])
        delays = (label_delays_us(lrng, events.is_fraud) * label_delay_scale).astype(np.int64)
        n_keep = size if total is None else min(size, total - first)
        if n_keep < size:
            events = events.take(np.arange(n_keep))
            delays = delays[:n_keep]
        ids = T.transaction_ids(prefix, first, n_keep).to_pylist()
        yield LiveBatch(
            first=first,
            events=events,
            transaction_ids=ids,
            label_ts_us=events.ts_us + np.maximum(delays, 1000),
            user_ids=pop.users.user_id[events.user],
            merchant_ids=pop.merchants.merchant_id[events.merchant],
        )
        k += 1


def _merge(legit: Events, pending: Events, slot_ts: np.ndarray) -> tuple[Events, Events]:
    """Put due fraud rows into the chunk's slots (taking the slot's time); the rest stays pending."""
    due = np.flatnonzero(pending.ts_us <= slot_ts[-1])
    where = _place(slot_ts, pending.ts_us[due])
    fits = where < slot_ts.size
    placed, slot = due[fits], where[fits]
    rest = np.setdiff1d(np.arange(len(pending)), placed, assume_unique=True)
    out = Events(**{name: getattr(legit, name).copy() for name in legit.__dataclass_fields__})
    for name in out.__dataclass_fields__:
        if name != "ts_us":
            getattr(out, name)[slot] = getattr(pending, name)[placed]
    return out, pending.take(rest)


def _total_events(rate_per_s: float, max_events: int | None, duration_s: float | None) -> int | None:
    limits = []
    if max_events is not None:
        limits.append(int(max_events))
    if duration_s is not None:
        limits.append(int(round(duration_s * rate_per_s)))
    return min(limits) if limits else None


def wire_columns(batch: LiveBatch) -> dict[str, list]:
    """Each transaction field (``core.contracts.TRANSACTION_FIELDS``) of a batch, as plain Python values."""
    ev = batch.events
    n = len(batch.transaction_ids)
    return {
        "transaction_id": batch.transaction_ids,
        "user_id": batch.user_ids.tolist(),
        "merchant_id": batch.merchant_ids.tolist(),
        "amount": ev.amount.tolist(),
        "currency": [C.CURRENCY] * n,
        "country": [C.COUNTRIES[i] for i in ev.country.tolist()],
        "channel": [C.CHANNELS[i] for i in ev.channel.tolist()],
        "event_timestamp": iso_utc(ev.ts_us),
    }


def wire_rows(batch: LiveBatch):
    """Tuples of the transaction fields in the contract's order (what :func:`core.contracts.encode_records` takes)."""
    columns = wire_columns(batch)
    return zip(*(columns[name] for name in TRANSACTION_FIELDS), strict=True)


def batch_records(batch: LiveBatch, with_labels: bool = False) -> list[dict]:
    """Transaction dicts in the wire format (core/contracts.py); optionally with is_fraud and label_timestamp."""
    names = list(TRANSACTION_FIELDS)
    rows = [dict(zip(names, values, strict=True)) for values in wire_rows(batch)]
    if with_labels:
        ev = batch.events
        for row, fraud, lt in zip(rows, ev.is_fraud.tolist(), iso_utc(batch.label_ts_us), strict=True):
            row["is_fraud"] = fraud
            row["label_timestamp"] = lt
    return rows


def iter_live_events(rate_per_s: float, *args, with_labels: bool = False, **kwargs) -> Iterator[dict]:
    """The live stream one event dict at a time, exactly what the producer sends (same arguments)."""
    for batch in iter_live_batches(rate_per_s, *args, **kwargs):
        yield from batch_records(batch, with_labels=with_labels)


def live_events_frame(rate_per_s: float, *args, **kwargs) -> pd.DataFrame:
    """The live stream as a DataFrame (needs ``max_events`` or ``duration_s``), with is_fraud and label_timestamp."""
    tables = []
    for batch in iter_live_batches(rate_per_s, *args, **kwargs):
        ids = pa.array(batch.transaction_ids, pa.string())
        txns = T.transactions_table(batch.events, ids, batch.user_ids, batch.merchant_ids)
        tables.append(
            txns.append_column("is_fraud", pa.array(batch.events.is_fraud)).append_column(
                "label_timestamp", T.ts_array(batch.label_ts_us)
            )
        )
    if not tables:
        return pd.DataFrame(columns=[*T.TRANSACTIONS_SCHEMA.names, "is_fraud", "label_timestamp"])
    return pa.concat_tables(tables).to_pandas()


def now_utc() -> datetime:
    return datetime.now(UTC)
