"""Vectorised transaction generation shared by history and live mode.

Events are column batches of numpy arrays (:class:`Events`); nothing here loops over rows in Python.
Legit transactions follow each user's habits; fraud comes in episodes on compromised cards:
bursts of several transactions minutes apart, large against the user's habit, at risky merchants,
often from a foreign country. A share of episodes is "stealth" (one habit-like transaction) so the
problem is not trivially separable.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from streaming.simulation import catalog as C
from streaming.simulation.population import Population

US = 1_000_000

KIND_LEGIT, KIND_FRAUD_BURST, KIND_FRAUD_STEALTH, KIND_CARD_TESTING = 0, 1, 2, 3


@dataclass
class Events:
    """A batch of transactions as parallel arrays (indices into the population and catalog)."""

    ts_us: np.ndarray  # int64 microseconds since the epoch, UTC
    user: np.ndarray  # user index (user_id - 1)
    merchant: np.ndarray  # merchant index (merchant_id - 1)
    amount: np.ndarray  # float64 EUR, rounded to cents
    country: np.ndarray  # index into catalog.COUNTRIES
    channel: np.ndarray  # index into catalog.CHANNELS
    kind: np.ndarray  # KIND_* (is_fraud = kind > 0)

    def __len__(self) -> int:
        return int(self.ts_us.size)

    @property
    def is_fraud(self) -> np.ndarray:
        return (self.kind > 0).astype(np.int64)

    def take(self, idx: np.ndarray) -> Events:
        return Events(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        parts = [p for p in parts if p is not None]
        return Events(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Events)})

    @staticmethod
    def empty() -> Events:
        z = np.zeros(0, dtype=np.int64)
        return Events(z, z, z, np.zeros(0), z, z, z)

    def sorted(self) -> Events:
        """Ordered by time, then user, then merchant (stable, fully deterministic)."""
        return self.take(np.lexsort((self.merchant, self.user, self.ts_us)))


def round_amount(x: np.ndarray, minimum: float = 0.5) -> np.ndarray:
    return np.maximum(np.round(x, 2), minimum)


def legit_merchants(pop: Population, rng: np.random.Generator, user: np.ndarray) -> np.ndarray:
    """Mostly one of the user's usual merchants; otherwise a shop at home or abroad (5 %) by popularity."""
    n = user.size
    usual = rng.random(n) < pop.users.usual_share[user]
    slot = rng.integers(0, C.USUAL_MERCHANTS, size=n)
    local = pop.pick_local(rng, pop.users.home[user])
    abroad = rng.random(n) < 0.05
    anywhere = rng.choice(pop.merchants.n, size=n, p=pop.merchants.popularity)
    other = np.where(abroad, anywhere, local)
    return np.where(usual, pop.users.usual_merchants[user, slot], other)


def legit_attributes(
    pop: Population, user: np.ndarray, merchant: np.ndarray, u_channel: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channel, country and amount of legit transactions from their merchant and fixed random draws.

    Kept separate from the draws so a drift scenario can swap merchants and re-derive the rest.
    """
    users, merchants = pop.users, pop.merchants
    category = merchants.category[merchant]
    online_p = np.clip(C.CATEGORY_ONLINE_SHARE[category] * users.online_affinity[user], 0.0, 1.0)
    online_p = np.where(C.CATEGORY_ONLINE_SHARE[category] >= 1.0, 1.0, online_p)
    channel = (u_channel < online_p).astype(np.int64)
    # card present: where the shop is; online: where the card holder is (home)
    country = np.where(channel == 0, merchants.country[merchant], users.home[user])
    log_amount = np.log(C.CATEGORY_MEDIAN_AMOUNT[category]) + users.amount_mu[user] + users.amount_sigma[user] * z
    return channel, country, round_amount(np.exp(log_amount))


def legit_events(
    pop: Population, rng: np.random.Generator, ts_us: np.ndarray, user: np.ndarray
) -> tuple[Events, np.ndarray]:
    """Legit transactions at given times and users; also returns the (channel, z) draws for re-derivation."""
    merchant = legit_merchants(pop, rng, user)
    u_channel = rng.random(user.size)
    z = rng.standard_normal(user.size)
    channel, country, amount = legit_attributes(pop, user, merchant, u_channel, z)
    ev = Events(ts_us, user, merchant, amount, country, channel, np.zeros(user.size, dtype=np.int64))
    return ev, np.stack([u_channel, z])


def _episode_layout(rng: np.random.Generator, sizes: np.ndarray, start_us: np.ndarray, gap_s: float):
    """Expand episodes to rows: episode index per row, position in episode, timestamps."""
    ep = np.repeat(np.arange(sizes.size), sizes)
    first = np.cumsum(sizes) - sizes
    pos = np.arange(ep.size) - first[ep]
    gaps = (rng.exponential(gap_s, size=ep.size) * US).astype(np.int64)
    gaps[pos == 0] = 0
    csum = np.cumsum(gaps)
    offset = csum - csum[first][ep]
    return ep, pos, start_us[ep] + offset


def fraud_events(pop: Population, rng: np.random.Generator, user: np.ndarray, start_us: np.ndarray) -> Events:
    """Fraud episodes of compromised cards ``user`` starting at ``start_us`` (one entry per episode)."""
    n_ep = user.size
    if n_ep == 0:
        return Events.empty()
    users, merchants = pop.users, pop.merchants
    stealth = rng.random(n_ep) < C.FRAUD_STEALTH_SHARE
    sizes = np.where(stealth, 1, 2 + rng.poisson(C.FRAUD_BURST_EXTRA_MEAN, size=n_ep))
    ep, _pos, ts = _episode_layout(rng, sizes, start_us, C.FRAUD_BURST_GAP_S)
    n = ep.size
    u = user[ep]
    ep_stealth = stealth[ep]
    foreign = (rng.random(n_ep) < C.FRAUD_FOREIGN_SHARE) & ~stealth
    ep_country = np.where(
        foreign, C.N_HOME + rng.choice(len(C.FOREIGN_COUNTRIES), size=n_ep, p=C.FOREIGN_WEIGHTS), users.home[user]
    )[ep]
    pool, pool_p = pop.fraud_pool
    risky = rng.random(n) < C.FRAUD_RISKY_MERCHANT_SHARE
    merchant = np.where(
        risky, rng.choice(pool, size=n, p=pool_p), rng.choice(merchants.n, size=n, p=merchants.popularity)
    )
    stealth_merchant = legit_merchants(pop, rng, u)
    merchant = np.where(ep_stealth, stealth_merchant, merchant)
    u_channel = rng.random(n)
    z = rng.standard_normal(n)
    lift = rng.lognormal(*C.FRAUD_AMOUNT_LIFT_LOG, size=n)
    # stealth rows look like the user's own transactions
    channel, country, amount = legit_attributes(pop, u, merchant, u_channel, z)
    category = merchants.category[merchant]
    can_online = C.CATEGORY_ONLINE_SHARE[category] > 0
    burst_channel = ((u_channel < 0.8) & can_online).astype(np.int64)
    burst_country = np.where(burst_channel == 1, ep_country, merchants.country[merchant])
    habit = np.exp(np.log(C.CATEGORY_MEDIAN_AMOUNT[category]) + users.amount_mu[u])
    burst_amount = round_amount(habit * lift)
    kind = np.where(ep_stealth, KIND_FRAUD_STEALTH, KIND_FRAUD_BURST).astype(np.int64)
    return Events(
        ts_us=ts,
        user=u,
        merchant=merchant,
        amount=np.where(ep_stealth, amount, burst_amount),
        country=np.where(ep_stealth, country, burst_country).astype(np.int64),
        channel=np.where(ep_stealth, channel, burst_channel).astype(np.int64),
        kind=kind,
    )


def card_testing_events(pop: Population, rng: np.random.Generator, user: np.ndarray, start_us: np.ndarray) -> Events:
    """The `new_fraud_pattern` drift: many tiny online payments at many different merchants, at home."""
    n_ep = user.size
    if n_ep == 0:
        return Events.empty()
    sizes = 5 + rng.poisson(6.0, size=n_ep)
    ep, _pos, ts = _episode_layout(rng, sizes, start_us, 20.0)
    n = ep.size
    u = user[ep]
    pool, _ = pop.merchants.pool(np.isin(pop.merchants.category, C.category_index(C.CARD_TESTING_CATEGORIES)))
    merchant = pool[rng.integers(0, pool.size, size=n)]  # uniform: as many distinct shops as possible
    amount = round_amount(rng.uniform(0.5, 2.5, size=n))
    return Events(
        ts_us=ts,
        user=u,
        merchant=merchant,
        amount=amount,
        country=pop.users.home[u],
        channel=np.ones(n, dtype=np.int64),
        kind=np.full(n, KIND_CARD_TESTING, dtype=np.int64),
    )


def label_delays_us(rng: np.random.Generator, is_fraud: np.ndarray) -> np.ndarray:
    """Hours-to-days delay until a label is known (lognormal, longer for chargebacks)."""
    median_h = np.where(is_fraud > 0, C.LABEL_DELAY_MEDIAN_H[1], C.LABEL_DELAY_MEDIAN_H[0])
    hours = median_h * rng.lognormal(0.0, C.LABEL_DELAY_SIGMA, size=is_fraud.size)
    hours = np.clip(hours, *C.LABEL_DELAY_CLIP_H)
    return (hours * 3600 * US).astype(np.int64)


def fraud_episode_rate_per_txn() -> float:
    """Probability that a legit transaction slot is accompanied by a new fraud episode."""
    return C.FRAUD_SHARE / C.mean_burst_size()
