"""Decode and validate ``predictions`` and ``labels`` messages (streaming/schemas.py) for the monitor.

A message that cannot be used raises :class:`MalformedMessage` naming the problem; the consumer
counts and skips it. The prediction fast path does one ``json.loads`` and one pass over the features.
"""

from __future__ import annotations

import json
import math
from typing import Any

_NUMBER = (int, float)


class MalformedMessage(ValueError):
    """A message the monitor cannot use (not JSON, a required field absent or of the wrong type)."""


def _load(raw: bytes | str) -> dict[str, Any]:
    try:
        msg = json.loads(raw)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise MalformedMessage(f"not a JSON object: {type(msg).__name__}")
    return msg


class PredictionDecoder:
    """``predictions`` message -> (row of feature values + score, transaction_id).

    Missing features (absent, null, or listed in ``missing_features``) become NaN. Feature values must
    be numbers: the model's features are numeric.
    """

    def __init__(self, features: list[str]) -> None:
        self.features = list(features)
        self._index = {f: i for i, f in enumerate(self.features)}

    def decode(self, raw: bytes | str) -> tuple[list[float], str]:
        msg = _load(raw)
        score = msg.get("score")
        if score.__class__ not in (float, int) or not math.isfinite(score):
            raise MalformedMessage(f"score must be a finite number, got {score!r}")
        feats = msg.get("features")
        if feats.__class__ is not dict:
            raise MalformedMessage(f"features must be an object, got {type(feats).__name__}")
        txn = msg.get("transaction_id")
        if txn.__class__ is not str:
            raise MalformedMessage(f"transaction_id must be a string, got {txn!r}")
        row = [feats.get(f) for f in self.features]
        for v in row:
            if v.__class__ is not float:
                row = self._slow_row(row)
                break
        missing = msg.get("missing_features")
        if missing:
            if missing.__class__ is not list:
                raise MalformedMessage("missing_features must be a list")
            for name in missing:
                i = self._index.get(name)
                if i is not None:
                    row[i] = math.nan
        row.append(float(score))
        return row, txn

    def _slow_row(self, row: list[Any]) -> list[float]:
        out = []
        for f, v in zip(self.features, row, strict=True):
            if v is None:
                out.append(math.nan)
            elif v.__class__ in _NUMBER:
                out.append(float(v))
            else:
                raise MalformedMessage(f"feature {f!r} must be a number or null, got {v!r}")
        return out


def decode_label(raw: bytes | str) -> tuple[str, int]:
    """``labels`` message -> (transaction_id, is_fraud)."""
    msg = _load(raw)
    txn = msg.get("transaction_id")
    if txn.__class__ is not str:
        raise MalformedMessage(f"transaction_id must be a string, got {txn!r}")
    label = msg.get("is_fraud")
    if label not in (0, 1) or label.__class__ is bool:
        raise MalformedMessage(f"is_fraud must be 0 or 1, got {label!r}")
    return txn, int(label)
