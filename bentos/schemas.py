"""Request models of the prediction API (pydantic): a bad request gets a 400 naming the field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from core.settings import settings

MAX_BATCH = settings().serving.max_batch


class Transaction(BaseModel):
    """One card transaction to score (the ``transactions`` topic's fields)."""

    model_config = ConfigDict(extra="ignore")

    transaction_id: Annotated[str, Field(min_length=1, max_length=128, strict=True)]
    user_id: Annotated[int, Field(strict=True, ge=0)]
    merchant_id: Annotated[int, Field(strict=True, ge=0)]
    amount: Annotated[float, Field(strict=True, gt=0, allow_inf_nan=False)]
    currency: Annotated[str, Field(min_length=3, max_length=3, strict=True)] = "EUR"
    country: Annotated[str, Field(min_length=2, max_length=3, strict=True)]
    channel: Annotated[str, Field(max_length=32, strict=True)] = "unknown"
    timestamp: Annotated[
        datetime | None, Field(validation_alias=AliasChoices("timestamp", "event_timestamp"))
    ] = None


class TransactionBatch(BaseModel):
    """Up to ``RTML_SERVING_MAX_BATCH`` transactions."""

    transactions: Annotated[list[Transaction], Field(min_length=1, max_length=MAX_BATCH)]
