"""Wire formats of the Kafka topics (JSON values). One definition, used by producers and consumers.

transactions (key: user_id)      -> TRANSACTION_FIELDS, event_timestamp as ISO-8601 UTC with 'Z'
labels (key: transaction_id)     -> LABEL_FIELDS (label_timestamp is when the label became known)
predictions (key: request_id)    -> PREDICTION_FIELDS (features: {name: value}, in the model's order)
alerts (key: alert name)         -> ALERT_FIELDS
"""

from __future__ import annotations

TRANSACTION_FIELDS: dict[str, type] = {
    "transaction_id": str,
    "user_id": int,
    "merchant_id": int,
    "amount": float,
    "currency": str,
    "country": str,
    "channel": str,
    "event_timestamp": str,
}

LABEL_FIELDS: dict[str, type] = {
    "transaction_id": str,
    "user_id": int,
    "merchant_id": int,
    "event_timestamp": str,
    "label_timestamp": str,
    "is_fraud": int,
}

PREDICTION_FIELDS: dict[str, type] = {
    "request_id": str,
    "transaction_id": str,
    "user_id": int,
    "merchant_id": int,
    "prediction_timestamp": str,
    "model_name": str,
    "model_version": str,
    "score": float,
    "decision": str,
    "features": dict,
    "missing_features": list,
    "feature_age_seconds": float,
}

ALERT_FIELDS: dict[str, type] = {
    "alert": str,
    "severity": str,
    "started_at": str,
    "summary": str,
    "details": dict,
    "report_path": str,
    "runbook": str,
}
