"""The plain way to serve the same model, for the side-by-side benchmark: per request
``FeatureStore.get_online_features`` with the feature service (Feast computes the on-demand view), a
pandas row, and scikit-learn-style ``XGBClassifier.predict_proba``; a sync API as in BentoML's examples.

Same request schema and response fields as :mod:`bentos.service`, no prediction log.
"""

from __future__ import annotations

import uuid

from core.model_store import bentoml_home

bentoml_home()

import bentoml  # noqa: E402

from bentos.request_schema import request_models, request_spec  # noqa: E402
from core.settings import settings  # noqa: E402

_TAG = settings().serving.model_tag


def _spec():
    from core import model_store

    model = model_store.get_model(_TAG) if _TAG else model_store.production_model()
    return request_spec(model.info.metadata.get("feature_service"))


SPEC = _spec()
Request, _ = request_models(SPEC, settings().serving.max_batch)


@bentoml.service(name="prediction_baseline", workers=settings().serving.workers, traffic={"timeout": 30})
class BaselineScorer:
    def __init__(self) -> None:
        import xgboost as xgb

        from core import model_store
        from core.feast_store import get_store

        model = model_store.get_model(_TAG) if _TAG else model_store.production_model()
        meta = model.info.metadata
        self.model_version = model.tag.version
        self.features = list(meta["features"])
        self.threshold = float(meta["threshold"])
        from core.feature_refs import label_definition

        self.decisions = label_definition(meta.get("feature_service") or None).decisions  # (negative, positive)
        self.clf = xgb.XGBClassifier()
        self.clf.load_model(bytearray(model_store.load_booster(model).save_raw("ubj")))
        self.store = get_store()
        self.feature_service = self.store.get_feature_service(meta["feature_service"])
        self.inputs = [*SPEC.entity_keys, *SPEC.request_fields]

    async def __is_ready__(self) -> bool:
        return True

    @bentoml.api(input_spec=Request, route="/predict")
    def predict(self, **req) -> dict:
        import pandas as pd

        online = self.store.get_online_features(
            features=self.feature_service, entity_rows=[{k: req[k] for k in self.inputs}]
        ).to_dict()
        X = pd.DataFrame({f: [online[f][0]] for f in self.features}).astype("float64")
        score = float(self.clf.predict_proba(X)[0, 1])
        missing = [f for f in self.features if online[f][0] is None]
        return {
            "request_id": uuid.uuid4().hex,
            SPEC.id_field: req[SPEC.id_field],
            "score": score,
            "decision": self.decisions[score >= self.threshold],
            "model_version": self.model_version,
            "missing_features": missing,
            "feature_age_seconds": None,
        }
