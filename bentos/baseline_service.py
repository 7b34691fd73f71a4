"""The plain way to serve the same model, for the side-by-side benchmark: per request
``FeatureStore.get_online_features`` with the feature service (Feast computes the on-demand view), a
pandas row, and scikit-learn-style ``XGBClassifier.predict_proba``; a sync API as in BentoML's examples.

Same request schema and response fields as :mod:`bentos.service`, no prediction log.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime

from core.model_store import bentoml_home

bentoml_home()

import bentoml  # noqa: E402

from bentos.schemas import Transaction  # noqa: E402


@bentoml.service(name="fraud_scorer_baseline", workers=int(os.environ.get("RTML_SERVING_WORKERS", "1")), traffic={"timeout": 30})
class BaselineScorer:
    def __init__(self) -> None:
        import xgboost as xgb

        from core import model_store
        from core.feast_store import get_store
        tag = os.environ.get("RTML_SERVING_MODEL_TAG")
        model = model_store.get_model(tag) if tag else model_store.production_model()
        meta = model.info.metadata
        self.model_version = model.tag.version
        self.features = list(meta["features"])
        self.threshold = float(meta["threshold"])
        self.clf = xgb.XGBClassifier()
        self.clf.load_model(bytearray(model_store.load_booster(model).save_raw("ubj")))
        self.store = get_store()
        self.feature_service = self.store.get_feature_service(meta["feature_service"])

    async def __is_ready__(self) -> bool:
        return True

    @bentoml.api(input_spec=Transaction, route="/predict")
    def predict(
        self,
        transaction_id: str,
        user_id: int,
        merchant_id: int,
        amount: float,
        country: str,
        currency: str = "EUR",
        channel: str = "unknown",
        timestamp: datetime | None = None,
    ) -> dict:
        import pandas as pd

        online = self.store.get_online_features(
            features=self.feature_service,
            entity_rows=[{"user_id": user_id, "merchant_id": merchant_id, "amount": amount, "country": country}],
        ).to_dict()
        X = pd.DataFrame({f: [online[f][0]] for f in self.features}).astype("float64")
        score = float(self.clf.predict_proba(X)[0, 1])
        missing = [f for f in self.features if online[f][0] is None]
        return {
            "request_id": uuid.uuid4().hex,
            "transaction_id": transaction_id,
            "score": score,
            "decision": "fraud" if score >= self.threshold else "legit",
            "model_version": self.model_version,
            "missing_features": missing,
            "feature_age_seconds": None,
        }
