"""Data validation rules that gate training, next to the definitions they guard.

Plain data, no Feast objects: `feast apply` imports every module of this folder, and importing this
one defines nothing. Column names and types are NOT repeated here: they come from the definitions
(the KafkaSource DDL in sources.py for transactions, the feature views' schemas in features.py for
profiles and features, the label contract in core.contracts). ``training.validation`` turns these
rules into Great Expectations suites.
"""

from datetime import timedelta

COUNTRIES = ["DE", "FR", "ES", "IT", "NL", "BE", "AT", "PT", "IE", "FI",
             "US", "GB", "CH", "TR", "BR", "CN", "NG", "RU", "IN", "TH"]  # fmt: skip
CATEGORIES = ["grocery", "restaurant", "fuel", "retail", "online_retail",
              "electronics", "travel", "entertainment", "digital_goods", "gambling"]  # fmt: skip

# ---------------------------------------------------------------- raw history (batch sources)
# per dataset (keyed by its batch source's name, see sources.py / labels.py): unique columns, columns that must never be null, the largest null fraction of others,
# value ranges (min, max; None = open) and allowed values.
RAW_HISTORY = {
    "transactions_history": {
        "unique": ["transaction_id"],
        "not_null": ["transaction_id", "user_id", "merchant_id", "amount", "event_timestamp"],
        "max_null_fraction": {"country": 0.01, "channel": 0.01, "currency": 0.01},
        "ranges": {"amount": (0.0, 50_000.0), "user_id": (1, None), "merchant_id": (1, None)},
        "allowed": {"currency": ["EUR"], "channel": ["pos", "online"], "country": COUNTRIES},
    },
    "labels": {
        "unique": ["transaction_id"],
        "not_null": ["transaction_id", "event_timestamp", "label_timestamp", "is_fraud"],
        "allowed": {"is_fraud": [0, 1]},
    },
    "users": {
        "unique": [],
        "not_null": ["user_id", "event_timestamp"],
        "max_null_fraction": {"home_country": 0.01, "card_type": 0.01, "account_age_days": 0.01, "credit_limit": 0.01},
        "ranges": {"account_age_days": (0, 36_500), "credit_limit": (0.0, 1_000_000.0)},
        "allowed": {"card_type": ["debit", "credit", "prepaid"], "home_country": COUNTRIES},
    },
    "merchants": {
        "unique": [],
        "not_null": ["merchant_id", "event_timestamp"],
        "max_null_fraction": {"category": 0.01, "merchant_country": 0.01, "risk_tier": 0.01},
        "ranges": {"risk_tier": (0, 2)},
        "allowed": {"category": CATEGORIES, "merchant_country": COUNTRIES},
    },
}

# A label arrives after its transaction, within this delay (chargebacks take weeks, never months).
LABEL_DELAY = (timedelta(0), timedelta(days=45))

# ---------------------------------------------------------------- the point-in-time training frame
TRAINING_FRAME = {
    # null fraction of a feature: at most the reference's + this (rows without feature history)
    "null_fraction_tolerance": 0.10,
    # without a reference (first training): at most this null fraction per feature
    "max_null_fraction": 0.60,
    # distribution of each numeric feature vs the previous training set: KL divergence over the
    # reference's decile bins at most this
    "max_kl_divergence": 0.25,
    "label_rate": (0.0005, 0.5),
}
