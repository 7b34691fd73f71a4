"""Users and merchants: public profiles (written to Parquet) and hidden habits (drive the transactions).

A population depends only on ``(seed, n_users, n_merchants)``, so history and live mode with the same
seed share the same people and shops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streaming.simulation import catalog as C


@dataclass(frozen=True)
class Merchants:
    merchant_id: np.ndarray  # int64, 1..n
    category: np.ndarray  # index into catalog.CATEGORIES
    country: np.ndarray  # index into catalog.COUNTRIES
    risk_tier: np.ndarray  # int64 0..2
    popularity: np.ndarray  # probabilities summing to 1

    @property
    def n(self) -> int:
        return int(self.merchant_id.size)

    def pool(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of merchants in ``mask`` and their popularity normalised (all merchants if none match)."""
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            idx = np.arange(self.n)
        p = self.popularity[idx]
        return idx, p / p.sum()


@dataclass(frozen=True)
class Users:
    user_id: np.ndarray  # int64, 1..n
    home: np.ndarray  # index into catalog.COUNTRIES (always a home country)
    card_type: np.ndarray  # index into catalog.CARD_TYPES
    account_age_days: np.ndarray  # int64, at the profile snapshot
    credit_limit: np.ndarray  # float64 EUR
    # hidden habits
    daily_rate: np.ndarray  # expected transactions per day
    amount_mu: np.ndarray  # log-scale spending level (added to the category median)
    amount_sigma: np.ndarray  # spread of the user's amounts
    usual_share: np.ndarray  # probability a transaction goes to one of the usual merchants
    online_affinity: np.ndarray  # multiplies the category's online share
    usual_merchants: np.ndarray  # [n, USUAL_MERCHANTS] merchant indices

    @property
    def n(self) -> int:
        return int(self.user_id.size)


@dataclass(frozen=True)
class Population:
    users: Users
    merchants: Merchants
    seed: int
    # per home country: (merchant indices, probabilities) where its residents shop
    home_pools: tuple[tuple[np.ndarray, np.ndarray], ...]

    def pick_local(self, rng: np.random.Generator, home: np.ndarray) -> np.ndarray:
        """One merchant per row from the row's home-country pool (rows grouped by country, fixed order)."""
        out = np.empty(home.size, dtype=np.int64)
        for c, (idx, p) in enumerate(self.home_pools):
            rows = np.flatnonzero(home == c)
            if rows.size:
                out[rows] = rng.choice(idx, size=rows.size, p=p)
        return out

    @property
    def fraud_pool(self) -> tuple[np.ndarray, np.ndarray]:
        """Merchants fraudsters pick: high risk tier or resellable categories."""
        m = self.merchants
        mask = (m.risk_tier == 2) | np.isin(m.category, C.category_index(C.FRAUD_CATEGORIES))
        return m.pool(mask)


def make_population(n_users: int, n_merchants: int, seed: int) -> Population:
    """Draw merchants, then users and their habits (a dedicated random stream per seed)."""
    if n_users < 1 or n_merchants < 1:
        raise ValueError("n_users and n_merchants must be >= 1")
    rng = np.random.default_rng([seed, 0])
    merchants = _make_merchants(rng, n_merchants)
    pools = tuple(_home_pool(merchants, c) for c in range(C.N_HOME))
    users = _make_users(rng, n_users, merchants, pools)
    return Population(users=users, merchants=merchants, seed=seed, home_pools=pools)


def _home_pool(merchants: Merchants, country: int) -> tuple[np.ndarray, np.ndarray]:
    """Residents of ``country`` shop at home, sometimes at online shops abroad, rarely elsewhere abroad."""
    online = C.CATEGORY_ONLINE_SHARE[merchants.category] >= 0.5
    weight = np.where(merchants.country == country, 1.0, np.where(online, 0.12, 0.01)) * merchants.popularity
    return np.arange(merchants.n), weight / weight.sum()


def _make_merchants(rng: np.random.Generator, n: int) -> Merchants:
    category = rng.choice(len(C.CATEGORIES), size=n, p=C.CATEGORY_WEIGHTS)
    foreign = rng.random(n) < C.MERCHANT_FOREIGN_SHARE
    home_c = rng.choice(C.N_HOME, size=n, p=C.HOME_WEIGHTS)
    foreign_c = C.N_HOME + rng.choice(len(C.FOREIGN_COUNTRIES), size=n, p=C.FOREIGN_WEIGHTS)
    country = np.where(foreign, foreign_c, home_c)
    cum = np.cumsum(C.CATEGORY_RISK_P[category], axis=1)
    risk_tier = (rng.random(n)[:, None] > cum).sum(axis=1).clip(0, 2).astype(np.int64)
    popularity = rng.lognormal(0.0, 1.0, size=n) * C.CATEGORY_VISIT_FREQ[category]
    return Merchants(
        merchant_id=np.arange(1, n + 1, dtype=np.int64),
        category=category.astype(np.int64),
        country=country.astype(np.int64),
        risk_tier=risk_tier,
        popularity=popularity / popularity.sum(),
    )


def _make_users(
    rng: np.random.Generator, n: int, merchants: Merchants, pools: tuple[tuple[np.ndarray, np.ndarray], ...]
) -> Users:
    home = rng.choice(C.N_HOME, size=n, p=C.HOME_WEIGHTS).astype(np.int64)
    card = rng.choice(len(C.CARD_TYPES), size=n, p=C.CARD_WEIGHTS).astype(np.int64)
    age = np.minimum(rng.gamma(1.5, 500.0, size=n).astype(np.int64) + 7, 9000)
    limit = np.round(C.CARD_LIMIT_MEDIAN[card] * rng.lognormal(0.0, 0.45, size=n) / 50.0) * 50.0
    limit = np.maximum(limit, 100.0)
    rate = C.MEAN_DAILY_TXNS * rng.gamma(2.5, 1.0 / 2.5, size=n)
    mu = rng.normal(0.0, 0.35, size=n) + 0.2 * (card == 1)
    sigma = rng.uniform(0.45, 0.85, size=n)
    usual_share = rng.beta(8.0, 2.5, size=n)
    online = rng.lognormal(0.0, 0.5, size=n)

    usual = np.empty((n, C.USUAL_MERCHANTS), dtype=np.int64)
    for c, (idx, p) in enumerate(pools):  # fixed order: country index
        members = np.flatnonzero(home == c)
        if members.size:
            usual[members] = rng.choice(idx, size=(members.size, C.USUAL_MERCHANTS), p=p)
    return Users(
        user_id=np.arange(1, n + 1, dtype=np.int64),
        home=home,
        card_type=card,
        account_age_days=age,
        credit_limit=limit.astype(np.float64),
        daily_rate=rate,
        amount_mu=mu,
        amount_sigma=sigma,
        usual_share=usual_share,
        online_affinity=online,
        usual_merchants=usual,
    )
