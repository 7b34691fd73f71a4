"""Registering trained models in the model store (:mod:`core.model_store`), with their metadata contract."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from core.feature_refs import service_definition
from core.model_store import REFERENCE_FILE, bentoml_module, model_name
from core.settings import REPO_ROOT

if TYPE_CHECKING:
    import xgboost as xgb

REQUIRED_METADATA = ("features", "feature_refs", "threshold", "defaults")


def code_version() -> str:
    """Current git commit (with ``-dirty`` when the work tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return commit or "unknown"


def feature_registry_version(store: Any) -> dict[str, str]:
    """The Feast registry the features were resolved against: its version id and last update."""
    try:
        proto = store.registry.proto()
    except Exception:  # noqa: BLE001 - a registry that cannot be read is recorded as unknown
        return {"version_id": "unknown", "last_updated": "unknown"}
    updated = proto.last_updated.ToDatetime(tzinfo=UTC).isoformat() if proto.HasField("last_updated") else "unknown"
    return {"version_id": proto.version_id or "unknown", "last_updated": updated}


def _jsonable(value: Any) -> Any:
    """Plain Python types for BentoML metadata, which rejects None: None dict values are dropped and
    None list items become "". NaN floats are kept (YAML stores them as .nan)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [("" if v is None else _jsonable(v)) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def register_model(booster: xgb.Booster, metadata: dict[str, Any], reference_df: pd.DataFrame | None) -> str:
    """Save ``booster`` as :func:`core.model_store.model_name` with ``metadata`` and the reference sample; return the tag string.

    ``metadata`` must contain :data:`REQUIRED_METADATA`; ``code_version``, ``created_at`` and
    ``feature_service`` are filled in when absent. ``reference_df`` must have the ``features`` columns
    and ``score``.
    """
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise ValueError(f"model metadata lacks {missing}")
    features = list(metadata["features"])
    if reference_df is not None:
        absent = [c for c in [*features, "score"] if c not in reference_df.columns]
        if absent:
            raise ValueError(f"reference sample lacks columns {absent}")
    service = service_definition(metadata.get("feature_service"))
    meta = {
        "feature_service": service.name,
        "request_fields": [name for name, _ in service.request_fields],
        "entity_keys": list(service.join_keys),
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **metadata,
    }
    meta["threshold"] = float(meta["threshold"])
    bentoml = bentoml_module()
    model = bentoml.xgboost.save_model(model_name(), booster, metadata=_jsonable(meta), labels={"stage": "candidate"})
    model = bentoml.models.get(model.tag)  # the object save_model returns points at its temporary folder
    if reference_df is not None:
        ref = reference_df[[*features, "score"]].reset_index(drop=True)
        ref.to_parquet(model.path_of(REFERENCE_FILE), index=False)
    return str(model.tag)
