"""Entities of the fraud-scoring domain."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A card holder.",
    owner="risk-features@rtml.dev",
    tags={"domain": "fraud"},
)

merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.INT64,
    description="A merchant accepting card payments.",
    owner="risk-features@rtml.dev",
    tags={"domain": "fraud"},
)
