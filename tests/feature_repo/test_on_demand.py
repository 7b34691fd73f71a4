"""The on-demand body gives the same values for missing inputs online (None) and offline (NaN)."""

from __future__ import annotations

import math
import sys

from core.settings import FEATURE_REPO

sys.path.insert(0, str(FEATURE_REPO))
from on_demand import compute_transaction_context  # noqa: E402

sys.path.remove(str(FEATURE_REPO))


def _one(**inputs):
    base = {"amount": 50.0, "country": "DE", "txn_mean_24h": 25.0, "credit_limit": 1000.0, "home_country": "DE",
            "merchant_country": "FR"}
    base.update(inputs)
    out = compute_transaction_context({k: [v] for k, v in base.items()})
    return {k: v[0] for k, v in out.items()}


def test_known_inputs():
    assert _one() == {"txn_amount": 50.0, "amount_to_mean_24h": 2.0, "amount_to_credit_limit": 0.05, "is_foreign": 0,
                      "merchant_foreign": 1}
    assert _one(country="US")["is_foreign"] == 1


def test_missing_inputs_are_neutral_whether_none_or_nan():
    for missing in (None, math.nan):
        out = _one(txn_mean_24h=missing, credit_limit=missing, home_country=missing, merchant_country=missing)
        assert out == {"txn_amount": 50.0, "amount_to_mean_24h": 1.0, "amount_to_credit_limit": 0.0, "is_foreign": 0,
                       "merchant_foreign": 0}, missing
