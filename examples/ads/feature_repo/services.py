"""The click-through model's feature service."""

from feast import FeatureService

from features import ad_profile, viewer_activity
from on_demand import bid_context

ctr_model_v1 = FeatureService(
    name="ctr_model_v1",
    features=[ad_profile[["advertiser_tier", "daily_budget"]], viewer_activity, bid_context],
    description="Features of the click-through-rate model.",
    tags={"model": "ctr", "labels": "click_labels", "segments": "ad_profile:ad_category,placement"},
)
