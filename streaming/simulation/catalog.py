"""Fixed world constants of the simulation: countries, merchant categories, daily cycle, fraud knobs.

Everything here is a tuple or a numpy array built in a fixed order, so no dict/set ordering can leak
into the random draws (determinism).
"""

from __future__ import annotations

import numpy as np

# Card holders live in these countries (weights = share of users); merchants mostly too.
HOME_COUNTRIES: tuple[str, ...] = ("DE", "FR", "ES", "IT", "NL", "BE", "AT", "PT", "IE", "FI")
HOME_WEIGHTS = np.array([0.25, 0.20, 0.12, 0.12, 0.10, 0.06, 0.05, 0.04, 0.03, 0.03])
# Countries outside the user base: some merchants, travel, and where fraud often comes from.
FOREIGN_COUNTRIES: tuple[str, ...] = ("US", "GB", "CH", "TR", "BR", "CN", "NG", "RU", "IN", "TH")
FOREIGN_WEIGHTS = np.array([0.25, 0.20, 0.10, 0.08, 0.07, 0.08, 0.06, 0.06, 0.05, 0.05])
COUNTRIES: tuple[str, ...] = HOME_COUNTRIES + FOREIGN_COUNTRIES
N_HOME = len(HOME_COUNTRIES)
MERCHANT_FOREIGN_SHARE = 0.15

CURRENCY = "EUR"  # card billing currency: amounts are what the EUR card holder is charged
CHANNELS: tuple[str, ...] = ("pos", "online")
CARD_TYPES: tuple[str, ...] = ("debit", "credit", "prepaid")
CARD_WEIGHTS = np.array([0.55, 0.38, 0.07])
CARD_LIMIT_MEDIAN = np.array([2500.0, 5000.0, 600.0])

# Merchant categories: share of merchants, median ticket (EUR), share of online payments,
# probabilities of acquirer risk tier 0/1/2.
CATEGORIES: tuple[str, ...] = (
    "grocery",
    "restaurant",
    "fuel",
    "retail",
    "online_retail",
    "electronics",
    "travel",
    "entertainment",
    "digital_goods",
    "gambling",
)
CATEGORY_WEIGHTS = np.array([0.22, 0.16, 0.08, 0.16, 0.10, 0.06, 0.06, 0.07, 0.05, 0.04])
CATEGORY_MEDIAN_AMOUNT = np.array([32.0, 27.0, 55.0, 58.0, 42.0, 190.0, 310.0, 24.0, 11.0, 45.0])
CATEGORY_ONLINE_SHARE = np.array([0.04, 0.06, 0.0, 0.22, 1.0, 0.5, 0.75, 0.55, 1.0, 1.0])
# How often a shop of the category is visited, relative to its share of merchants.
CATEGORY_VISIT_FREQ = np.array([3.0, 2.0, 1.2, 1.0, 1.0, 0.25, 0.12, 0.8, 0.8, 0.3])
CATEGORY_RISK_P = np.array(
    [
        [0.90, 0.09, 0.01],
        [0.88, 0.10, 0.02],
        [0.90, 0.09, 0.01],
        [0.85, 0.12, 0.03],
        [0.70, 0.22, 0.08],
        [0.55, 0.30, 0.15],
        [0.60, 0.28, 0.12],
        [0.70, 0.22, 0.08],
        [0.40, 0.35, 0.25],
        [0.15, 0.40, 0.45],
    ]
)
# Categories fraudsters favour (resellable goods, cash-like), and the `merchant_mix` drift target.
FRAUD_CATEGORIES: tuple[str, ...] = ("electronics", "digital_goods", "gambling", "travel", "online_retail")
MIX_TARGET_CATEGORIES: tuple[str, ...] = ("travel", "electronics")
CARD_TESTING_CATEGORIES: tuple[str, ...] = ("digital_goods", "online_retail", "entertainment")

# Relative transaction intensity per UTC hour (the user base is European): quiet nights,
# lunch and evening peaks. Fraud is flatter and relatively more frequent at night.
HOUR_WEIGHTS = np.array(
    [
        0.16,
        0.09,
        0.06,
        0.05,
        0.06,
        0.12,
        0.30,
        0.60,
        0.90,
        1.00,
        1.05,
        1.15,
        1.40,
        1.30,
        1.05,
        1.00,
        1.05,
        1.20,
        1.40,
        1.50,
        1.30,
        1.00,
        0.62,
        0.32,
    ]
)
FRAUD_HOUR_WEIGHTS = np.array(
    [
        0.9,
        0.9,
        0.9,
        0.8,
        0.7,
        0.6,
        0.6,
        0.7,
        0.8,
        0.9,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        1.0,
        1.1,
        1.1,
        1.1,
        1.1,
        1.0,
        1.0,
    ]
)
# Monday..Sunday multipliers of a user's daily rate.
WEEKDAY_FACTOR = np.array([0.95, 0.97, 1.0, 1.02, 1.15, 1.12, 0.80])

# User habits.
MEAN_DAILY_TXNS = 7.0  # population mean of users' daily transaction rate
USUAL_MERCHANTS = 10  # merchants a user returns to
# Fraud: share of transactions that are fraud (legit volume based), burst shape, amount lift.
FRAUD_SHARE = 0.011
FRAUD_STEALTH_SHARE = 0.2  # single, habit-like transactions: hard to catch on purpose
FRAUD_BURST_EXTRA_MEAN = 4.0  # a burst has 2 + Poisson(this) transactions
FRAUD_BURST_GAP_S = 75.0  # mean seconds between transactions of a burst
FRAUD_FOREIGN_SHARE = 0.55
FRAUD_RISKY_MERCHANT_SHARE = 0.6
FRAUD_AMOUNT_LIFT_LOG = (np.log(4.0), 0.7)  # amount = user median * lognormal(mu, sigma)
# Label delay (hours, lognormal): chargebacks take longer than confirmations of legit payments.
LABEL_DELAY_MEDIAN_H = (20.0, 40.0)  # legit, fraud
LABEL_DELAY_SIGMA = 0.8
LABEL_DELAY_CLIP_H = (0.5, 30 * 24.0)


def mean_burst_size() -> float:
    """Expected transactions per fraud episode (stealth episodes count one)."""
    return FRAUD_STEALTH_SHARE * 1.0 + (1 - FRAUD_STEALTH_SHARE) * (2.0 + FRAUD_BURST_EXTRA_MEAN)


def category_index(names: tuple[str, ...]) -> np.ndarray:
    return np.array([CATEGORIES.index(n) for n in names], dtype=np.int64)
