"""On-demand features computed from the request and online features at prediction time."""

from typing import Any

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

from features import merchant_profile, user_profile, user_txn_aggregates

transaction_request = RequestSource(
    name="transaction_request",
    schema=[
        # Tags are validation rules: the prediction service rejects a request breaking one (400 naming the field).
        Field(name="amount", dtype=Float64, tags={"gt": "0"}),
        Field(name="country", dtype=String, tags={"min_length": "2", "max_length": "3"}),
    ],
    description="Fields of the transaction being scored.",
)


@on_demand_feature_view(
    sources=[transaction_request, user_profile, merchant_profile, user_txn_aggregates],
    schema=[
        Field(name="txn_amount", dtype=Float64),
        Field(name="amount_to_mean_24h", dtype=Float64),
        Field(name="amount_to_credit_limit", dtype=Float64),
        Field(name="is_foreign", dtype=Int64),
        Field(name="merchant_foreign", dtype=Int64),
    ],
    mode="python",
    owner="risk-features@rtml.dev",
    description="Transaction amount against the holder's habits, and cross-border flags.",
    tags={"kind": "on_demand", "team": "risk"},
)
def transaction_context(inputs: dict) -> dict:
    """Ratios and flags; missing inputs give neutral values (ratio 1.0 / 0.0, flag 0).

    Self-contained on purpose: Feast re-creates this function from its source text (registry), so it
    may not call module-level helpers or use names like ``Any`` in annotations.
    """
    out = {"txn_amount": [], "amount_to_mean_24h": [], "amount_to_credit_limit": [], "is_foreign": [], "merchant_foreign": []}
    rows = zip(
        inputs["amount"],
        inputs["country"],
        inputs["txn_mean_24h"],
        inputs["credit_limit"],
        inputs["home_country"],
        inputs["merchant_country"],
        strict=True,
    )
    for amount, country, mean_24h, limit, home, m_country in rows:
        amount = float(amount)
        out["txn_amount"].append(amount)
        # Missing inputs arrive as None online and as NaN offline: both mean "unknown" (x == x is
        # False only for NaN), so training and serving compute the same value.
        out["amount_to_mean_24h"].append(amount / mean_24h if mean_24h and mean_24h == mean_24h else 1.0)
        out["amount_to_credit_limit"].append(amount / limit if limit and limit == limit else 0.0)
        out["is_foreign"].append(int(isinstance(home, str) and bool(home) and country != home))
        out["merchant_foreign"].append(int(isinstance(m_country, str) and bool(m_country) and m_country != country))
    return out


def compute_transaction_context(inputs: dict[str, Any]) -> dict[str, Any]:
    """Vectorised (lists in, lists out) body of :func:`transaction_context`, importable by the service."""
    return transaction_context.feature_transformation.udf(inputs)
