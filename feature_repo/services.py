"""Feature services: the exact feature set a model is trained and served with."""

from feast import FeatureService

from features import merchant_profile, merchant_txn_aggregates, user_profile, user_txn_aggregates
from on_demand import transaction_context

fraud_model_v1 = FeatureService(
    name="fraud_model_v1",
    features=[
        user_profile[["account_age_days", "credit_limit"]],
        merchant_profile[["risk_tier"]],
        user_txn_aggregates,
        merchant_txn_aggregates,
        transaction_context,
    ],
    owner="risk-ml@rtml.dev",
    description="Features of the card-fraud XGBoost model.",
    # segments: columns the evaluation reports metrics per value of (a feature ref or a request field)
    tags={"model": "fraud", "labels": "fraud_labels", "segments": "merchant_profile:category,country"},
)
