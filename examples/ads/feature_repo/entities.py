"""Entities of the ad-click domain."""

from feast import Entity, ValueType

viewer = Entity(name="viewer", join_keys=["viewer_id"], value_type=ValueType.INT64, description="A person shown ads.")
ad = Entity(name="ad", join_keys=["ad_id"], value_type=ValueType.INT64, description="One ad creative of a campaign.")
impression = Entity(
    name="impression", join_keys=["impression_id"], value_type=ValueType.STRING,
    description="One ad shown to one viewer (the event a click label belongs to).",
)
