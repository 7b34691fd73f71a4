"""Decode and validate ``predictions`` and ``labels`` messages (core/contracts.py) for the monitor.

A message that cannot be used raises :class:`MalformedMessage` naming the problem; the consumer
counts and skips it. Predictions are decoded and type-checked by msgspec against the fields the
monitor needs (~4 us/message, 3x faster than ``json.loads`` alone); anything msgspec rejects (NaN
literals that Python's json writes, or a malformed message) goes through the ``json`` path, which
accepts the former and names the problem of the latter.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec

_NUMBER = (int, float)


def _fast_decoder(event_key: str) -> msgspec.json.Decoder:
    """A msgspec decoder of the prediction fields the monitor reads (others are ignored); the event id field
    is named by the feature repo's label view (``transaction_id`` in the fraud repo)."""
    struct = msgspec.defstruct(
        "_Prediction",
        [
            (event_key, str), ("score", float), ("features", dict[str, float | None]), ("missing_features", list[str], []),
            ("model_name", str, ""), ("model_version", str, ""), ("variant", str, ""),
        ],
    )
    return msgspec.json.Decoder(struct)


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


def model_tag(name: Any, version: Any) -> str:
    """``name:version`` of the model that made a record ('' when the record does not say)."""
    if version.__class__ is not str or not version:
        return ""
    return f"{name}:{version}" if name.__class__ is str and name else version


class PredictionDecoder:
    """``predictions`` message -> (row of feature values + score, event id).

    Missing features (absent, null, or listed in ``missing_features``) become NaN. Feature values must
    be numbers: the model's features are numeric. ``event_key``: the event id field (the label view's key).
    :meth:`decode_full` also returns the model that made the record (``model_name:model_version``) and
    its variant (``production`` / ``challenger``; '' when absent).
    """

    def __init__(self, features: list[str], event_key: str = "transaction_id") -> None:
        self.features = list(features)
        self.event_key = event_key
        self._index = {f: i for i, f in enumerate(self.features)}
        self._fast = _fast_decoder(event_key)

    def decode(self, raw: bytes | str) -> tuple[list[float], str]:
        row, txn, _model, _variant = self.decode_full(raw)
        return row, txn

    def decode_full(self, raw: bytes | str) -> tuple[list[float], str, str, str]:
        try:
            msg = self._fast.decode(raw)
        except (msgspec.DecodeError, TypeError):
            return self._decode_json(raw)
        score = msg.score
        if not math.isfinite(score):
            raise MalformedMessage(f"score must be a finite number, got {score!r}")
        feats = msg.features
        row = [feats.get(f) for f in self.features]
        if None in row:
            row = [math.nan if v is None else v for v in row]
        for name in msg.missing_features:
            i = self._index.get(name)
            if i is not None:
                row[i] = math.nan
        _finite_or_missing(self.features, row)
        row.append(score)
        return row, getattr(msg, self.event_key), model_tag(msg.model_name, msg.model_version), msg.variant

    def _decode_json(self, raw: bytes | str) -> tuple[list[float], str, str, str]:
        msg = _load(raw)
        score = msg.get("score")
        if score.__class__ not in (float, int) or not math.isfinite(score):
            raise MalformedMessage(f"score must be a finite number, got {score!r}")
        feats = msg.get("features")
        if feats.__class__ is not dict:
            raise MalformedMessage(f"features must be an object, got {type(feats).__name__}")
        txn = msg.get(self.event_key)
        if txn.__class__ is not str:
            raise MalformedMessage(f"{self.event_key} must be a string, got {txn!r}")
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
        _finite_or_missing(self.features, row)
        row.append(float(score))
        variant = msg.get("variant")
        return row, txn, model_tag(msg.get("model_name"), msg.get("model_version")), variant if variant.__class__ is str else ""

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


def _finite_or_missing(features: list[str], row: list[float]) -> None:
    """A feature value is a finite number or missing (NaN): ``Infinity`` / ``1e999`` get past both JSON decoders."""
    if any(map(math.isinf, row)):
        name = features[next(i for i, v in enumerate(row) if math.isinf(v))]
        raise MalformedMessage(f"feature {name!r} must be finite, got {row[features.index(name)]!r}")


def decode_label(raw: bytes | str, key: str = "transaction_id", label: str = "is_fraud") -> tuple[str, int]:
    """``labels`` message -> (event key, 0/1 label); the field names come from the feature repo's label
    view (``core.feature_refs.label_definition``)."""
    msg = _load(raw)
    txn = msg.get(key)
    if txn.__class__ is not str:
        raise MalformedMessage(f"{key} must be a string, got {txn!r}")
    value = msg.get(label)
    if value not in (0, 1) or value.__class__ is bool:
        raise MalformedMessage(f"{label} must be 0 or 1, got {value!r}")
    return txn, int(value)
