"""On-demand features of the impression being scored."""

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

from features import ad_profile, viewer_activity

impression_request = RequestSource(
    name="impression_request",
    schema=[Field(name="bid", dtype=Float64), Field(name="placement", dtype=String)],
)


@on_demand_feature_view(
    sources=[impression_request, ad_profile, viewer_activity],
    schema=[
        Field(name="bid_to_budget", dtype=Float64),
        Field(name="bid_to_mean_bid", dtype=Float64),
        Field(name="is_top_slot", dtype=Int64),
    ],
    mode="python",
)
def bid_context(inputs: dict) -> dict:
    """Bid against the campaign's budget and the viewer's recent bids; missing inputs give neutral values."""
    out = {"bid_to_budget": [], "bid_to_mean_bid": [], "is_top_slot": []}
    rows = zip(inputs["bid"], inputs["placement"], inputs["daily_budget"], inputs["mean_bid_1h"], strict=True)
    for bid, placement, budget, mean_bid in rows:
        bid = float(bid)
        out["bid_to_budget"].append(bid / budget if budget and budget == budget else 0.0)
        out["bid_to_mean_bid"].append(bid / mean_bid if mean_bid and mean_bid == mean_bid else 1.0)
        out["is_top_slot"].append(int(placement == "top"))
    return out


def compute_bid_context(inputs: dict) -> dict:
    """Vectorised body of :func:`bid_context`, importable by the service."""
    return bid_context.feature_transformation.udf(inputs)
