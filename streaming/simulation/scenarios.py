"""Named drift scenarios, switched on at ``starts_at`` in both history and live mode.

- ``amount_shift``: every amount from ``starts_at`` on is multiplied by ``1 + strength``.
- ``merchant_mix``: a share ``min(1, 0.5 * strength)`` of legit transactions moves to travel and
  electronics merchants (channel, country and amount follow the new merchant).
- ``new_fraud_pattern``: card testing appears: bursts of tiny (0.5-2.5 EUR) online payments at many
  different digital-goods/online merchants, at home; episode rate scales with ``strength``.

A scenario only changes events at or after ``starts_at``: it draws from its own random stream, so
everything before is byte-identical to the run without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from streaming.simulation import catalog as C
from streaming.simulation.events import US, Events, legit_attributes
from streaming.simulation.population import Population

SCENARIO_NAMES: tuple[str, ...] = ("amount_shift", "merchant_mix", "new_fraud_pattern")
# card-testing episodes per user-day at strength 1, relative to the ordinary fraud episode rate
CARD_TESTING_RELATIVE_RATE = 0.5


@dataclass(frozen=True)
class Scenario:
    """A drift scenario: ``name`` in :data:`SCENARIO_NAMES`, active from ``starts_at`` (tz-aware; naive = UTC)."""

    name: str
    starts_at: datetime
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in SCENARIO_NAMES:
            raise ValueError(f"unknown scenario {self.name!r}; choose one of {', '.join(SCENARIO_NAMES)}")
        if self.strength <= 0:
            raise ValueError("scenario strength must be > 0")
        if self.starts_at.tzinfo is None:
            object.__setattr__(self, "starts_at", self.starts_at.replace(tzinfo=UTC))

    @property
    def starts_us(self) -> int:
        return to_us(self.starts_at)

    @property
    def stream_id(self) -> int:
        """Random stream of this scenario (fixed per name, independent of the order scenarios are given in)."""
        return 100 + SCENARIO_NAMES.index(self.name)

    @property
    def amount_factor(self) -> float:
        return 1.0 + self.strength

    @property
    def mix_share(self) -> float:
        return min(1.0, 0.5 * self.strength)


def to_us(t: datetime) -> int:
    """Microseconds since the epoch of a datetime (naive = UTC)."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = t - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def as_list(scenario: Scenario | Iterable[Scenario] | None) -> list[Scenario]:
    if scenario is None:
        return []
    items = [scenario] if isinstance(scenario, Scenario) else list(scenario)
    names = [s.name for s in items]
    if len(set(names)) != len(names):
        raise ValueError("each scenario name may be given once")
    return sorted(items, key=lambda s: SCENARIO_NAMES.index(s.name))


def apply_merchant_mix(
    pop: Population, scenario: Scenario, rng: np.random.Generator, legit: Events, draws: np.ndarray
) -> Events:
    """Move a share of legit transactions at/after ``starts_at`` to travel/electronics merchants."""
    n = len(legit)
    pick = rng.random(n) < scenario.mix_share
    pool, p = pop.merchants.pool(np.isin(pop.merchants.category, C.category_index(C.MIX_TARGET_CATEGORIES)))
    new_merchant = rng.choice(pool, size=n, p=p)
    mask = pick & (legit.ts_us >= scenario.starts_us)
    if not mask.any():
        return legit
    merchant = np.where(mask, new_merchant, legit.merchant)
    channel, country, amount = legit_attributes(pop, legit.user, merchant, draws[0], draws[1])
    return Events(
        ts_us=legit.ts_us,
        user=legit.user,
        merchant=merchant,
        amount=np.where(mask, amount, legit.amount),
        country=np.where(mask, country, legit.country),
        channel=np.where(mask, channel, legit.channel),
        kind=legit.kind,
    )


def apply_amount_shift(scenario: Scenario, events: Events) -> Events:
    after = events.ts_us >= scenario.starts_us
    if after.any():
        events.amount = np.where(after, np.round(events.amount * scenario.amount_factor, 2), events.amount)
    return events
