"""Model registry: the BentoML model store plus a production pointer. THIS MODULE IS THE CONTRACT
between training (writes models), serving (loads the production model) and monitoring (reads the
reference sample). Code against the functions and metadata keys below; they will not change silently.

Store
    BentoML's model store under ``BENTOML_HOME`` = ``settings().state_dir / "bentoml"`` unless
    ``BENTOML_HOME`` was set by the user. Always call :func:`bentoml_home` (or any function here)
    BEFORE ``import bentoml`` in a process; it sets the variable and, if bentoml is already imported
    with another home (tests switching ``RTML_STATE_DIR``), re-points BentoML's store.

Model
    Name ``fraud_model`` (:data:`MODEL_NAME`), saved with ``bentoml.xgboost.save_model`` (an
    ``xgboost.Booster``, ``binary:logistic``; load with ``bentoml.xgboost.load_model(model)``).
    ``model.info.metadata`` holds:

    - ``feature_service``: ``"fraud_model_v1"``
    - ``features``: ordered feature names, as Feast returns them with ``full_feature_names=False``;
      this IS the model's column order (build the predict matrix in exactly this order)
    - ``feature_refs``: the same features as ordered ``"view:feature"`` references
    - ``request_fields``: fields the on-demand view needs from the request (``amount``, ``country``)
    - ``threshold``: float, decision threshold on the score (score >= threshold -> flag as fraud)
    - ``defaults``: dict feature -> value to use when a feature is missing at serving time
      (``nan`` = let XGBoost's missing-value branch decide, as in training)
    - ``training_set_hash``, ``manifest`` (dict, the training set's manifest), ``metrics`` (dict:
      ``roc_auc``, ``pr_auc``, ``recall_at_1pct_fpr``, ``base_rate`` ... on the time-based test split),
      ``params`` (XGBoost params + ``best_iteration``), ``code_version`` (git commit),
      ``created_at`` (ISO-8601 UTC)

    Reference sample for drift monitoring: ``model.path_of("reference.parquet")``, columns =
    ``features`` + ``score`` (model output), a few thousand holdout rows; read it with
    :func:`reference_sample`. The evaluation report (``report.md`` + PNGs) is in
    ``model.path_of("report")``.

Production pointer
    ``<state_dir>/registry/production.json``: ``{"current": tag, "stack": [...], "history": [...]}``.
    :func:`production_model` returns the current production ``bentoml.Model`` (``UserFacingError`` if
    none); :func:`promote` makes a tag production; :func:`rollback` restores the previous one.

Quick model for other stages' tests: :func:`save_test_model` trains a tiny booster on synthetic rows
with the real feature list in ~1 s, registers it and (by default) promotes it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rtml.config import REPO_ROOT, settings
from rtml.errors import UserFacingError

if TYPE_CHECKING:
    import bentoml
    import xgboost as xgb

MODEL_NAME = "fraud_model"
FEATURE_SERVICE = "fraud_model_v1"
REFERENCE_FILE = "reference.parquet"
REPORT_DIR = "report"
REQUIRED_METADATA = ("features", "feature_refs", "threshold", "defaults")

_home_set_by_us: str | None = None
# A BENTOML_HOME given to the process (a user's choice, or a parent handing its store to a child)
# wins; otherwise the store follows the current settings' state dir, even when they change in-process.
_USER_HOME: str | None = os.environ.get("BENTOML_HOME") or None


def bentoml_home() -> Path:
    """Point BentoML at ``<state_dir>/bentoml`` (unless the process was given ``BENTOML_HOME``) and return it."""
    global _home_set_by_us
    home = Path(_USER_HOME) if _USER_HOME else settings().state_dir / "bentoml"
    os.environ["BENTOML_HOME"] = str(home)
    _home_set_by_us = str(home)
    if "bentoml" in sys.modules:
        _repoint_bentoml(home)
    home.mkdir(parents=True, exist_ok=True)
    return home


def _repoint_bentoml(home: Path) -> None:
    """Make an already imported bentoml use ``home`` (its container memoises the first home it saw)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    if Path(BentoMLContainer.bentoml_home.get()) == home:
        return
    for sub in ("models", "bentos", "envs", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.model_store_dir.set(str(home / "models"))
    BentoMLContainer.model_store.set(ModelStore(str(home / "models")))


def _bentoml():
    bentoml_home()
    import bentoml

    return bentoml


# ---------------------------------------------------------------- feature list of the service


def service_feature_refs(service_name: str = FEATURE_SERVICE) -> list[str]:
    """Ordered ``view:feature`` references of a feature service, read from ``feature_repo/`` definitions."""
    from rtml.feast_store import _repo_on_path

    with _repo_on_path():
        import services  # noqa: PLC0415  (feature_repo module)

    service = getattr(services, service_name, None)
    if service is None:
        raise UserFacingError(f"feature service {service_name!r} is not defined in feature_repo/services.py")
    refs = []
    for projection in service.feature_view_projections:
        for feature in projection.features:
            refs.append(f"{projection.name_to_use()}:{feature.name}")
    return refs


def ref_names(refs: list[str]) -> list[str]:
    """Feature names (``full_feature_names=False``) of ``view:feature`` references."""
    return [r.split(":", 1)[1] for r in refs]


REQUEST_FIELDS = ["amount", "country"]


# ---------------------------------------------------------------- registering and reading models


def code_version() -> str:
    """Current git commit (with ``-dirty`` when the work tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return commit or "unknown"


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
    """Save ``booster`` as ``fraud_model`` with ``metadata`` and the reference sample; return the tag string.

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
    meta = {
        "feature_service": FEATURE_SERVICE,
        "request_fields": REQUEST_FIELDS,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **metadata,
    }
    meta["threshold"] = float(meta["threshold"])
    bentoml = _bentoml()
    model = bentoml.xgboost.save_model(MODEL_NAME, booster, metadata=_jsonable(meta), labels={"stage": "candidate"})
    model = bentoml.models.get(model.tag)  # the object save_model returns points at its temporary folder
    if reference_df is not None:
        ref = reference_df[[*features, "score"]].reset_index(drop=True)
        ref.to_parquet(model.path_of(REFERENCE_FILE), index=False)
    return str(model.tag)


def get_model(tag: str) -> bentoml.Model:
    """The stored model with ``tag`` (``fraud_model:version``; a bare version is accepted)."""
    bentoml = _bentoml()
    if ":" not in tag:
        tag = f"{MODEL_NAME}:{tag}"
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise UserFacingError(
            f"no model {tag!r} in the store {bentoml_home() / 'models'}; see `rtml models list`"
        ) from None


def load_booster(model: bentoml.Model) -> xgb.Booster:
    """The XGBoost booster of a stored model."""
    return _bentoml().xgboost.load_model(model)


def reference_sample(model: bentoml.Model) -> pd.DataFrame:
    """The model's reference rows for drift monitoring (``features`` + ``score``)."""
    path = Path(model.path_of(REFERENCE_FILE))
    if not path.exists():
        raise UserFacingError(f"model {model.tag} has no reference sample ({path})")
    return pd.read_parquet(path)


def list_models() -> list[dict[str, Any]]:
    """All stored ``fraud_model`` versions, oldest first, with headline metrics and production flag."""
    bentoml = _bentoml()
    current = _read_pointer().get("current")
    rows = []
    for model in bentoml.models.list(MODEL_NAME):
        meta = model.info.metadata
        metrics = meta.get("metrics") or {}
        rows.append(
            {
                "_t": model.info.creation_time,
                "tag": str(model.tag),
                "created_at": model.info.creation_time.isoformat(timespec="seconds"),
                "production": str(model.tag) == current,
                "pr_auc": metrics.get("pr_auc"),
                "roc_auc": metrics.get("roc_auc"),
                "recall_at_1pct_fpr": metrics.get("recall_at_1pct_fpr"),
                "threshold": meta.get("threshold"),
                "training_set_hash": meta.get("training_set_hash"),
                "code_version": meta.get("code_version"),
            }
        )
    rows.sort(key=lambda r: r["_t"])
    for row in rows:
        del row["_t"]
    return rows


# ---------------------------------------------------------------- production pointer


def registry_dir() -> Path:
    return settings().state_dir / "registry"


def pointer_path() -> Path:
    return registry_dir() / "production.json"


def _read_pointer() -> dict[str, Any]:
    path = pointer_path()
    if not path.exists():
        return {"current": None, "stack": [], "history": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserFacingError(f"{path} is corrupt ({exc}); fix or delete it") from None


def _write_pointer(state: dict[str, Any]) -> None:
    path = pointer_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".production.", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh, indent=2)
    os.replace(tmp, path)


def production_tag() -> str | None:
    """Tag of the production model, or None."""
    return _read_pointer().get("current")


def production_model() -> bentoml.Model:
    """The production model (``UserFacingError`` when none was promoted yet)."""
    tag = production_tag()
    if not tag:
        raise UserFacingError("no production model yet: run `rtml train` (or `rtml models promote TAG`)")
    return get_model(tag)


def promote(tag: str, reason: str = "manual") -> str:
    """Make ``tag`` the production model; return its full tag."""
    model = get_model(tag)
    full = str(model.tag)
    state = _read_pointer()
    previous = state.get("current")
    if previous != full:
        state["stack"] = [*state.get("stack", []), full]
    state["current"] = full
    state.setdefault("history", []).append(
        {"action": "promote", "tag": full, "previous": previous, "reason": reason, "at": _now()}
    )
    _write_pointer(state)
    return full


def rollback(reason: str = "manual") -> str:
    """Restore the production model that preceded the current one; return its tag."""
    state = _read_pointer()
    stack = list(state.get("stack", []))
    if len(stack) < 2:
        raise UserFacingError("nothing to roll back to: fewer than two models were ever in production")
    demoted = stack.pop()
    restored = stack[-1]
    get_model(restored)  # must still exist
    state["stack"] = stack
    state["current"] = restored
    state.setdefault("history", []).append(
        {"action": "rollback", "tag": restored, "previous": demoted, "reason": reason, "at": _now()}
    )
    _write_pointer(state)
    return restored


def history() -> list[dict[str, Any]]:
    """Promotions and rollbacks, oldest first."""
    return list(_read_pointer().get("history", []))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- a quick model for tests


def synthetic_feature_frame(
    n_rows: int, seed: int = 0, features: list[str] | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """Synthetic rows with the service's features and a fraud label driven by amount ratios and foreign flags."""
    features = features or ref_names(service_feature_refs())
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({f: rng.gamma(2.0, 2.0, n_rows) for f in features})
    for flag in ("is_foreign", "merchant_foreign"):
        if flag in df:
            df[flag] = (rng.random(n_rows) < 0.15).astype(float)
    if "risk_tier" in df:
        df["risk_tier"] = rng.integers(0, 3, n_rows).astype(float)
    ratio = df["amount_to_mean_24h"].to_numpy() if "amount_to_mean_24h" in df else rng.gamma(2.0, 2.0, n_rows)
    foreign = df["is_foreign"].to_numpy() if "is_foreign" in df else np.zeros(n_rows)
    logit = -5.0 + 0.5 * ratio + 1.5 * foreign
    y = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return df, y


def save_test_model(n_rows: int = 2000, seed: int = 0, promote_it: bool = True, rounds: int = 20) -> str:
    """Train a tiny booster on synthetic rows with the real feature list, register it (and promote it).

    Meant for serving/monitoring tests that need *a* model quickly; the metadata has every contract key.
    """
    import xgboost as xgb

    refs = service_feature_refs()
    features = ref_names(refs)
    X, y = synthetic_feature_frame(n_rows, seed, features)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed}
    booster = xgb.train(params, xgb.DMatrix(X, label=y, feature_names=features), num_boost_round=rounds)
    score = booster.predict(xgb.DMatrix(X, feature_names=features))
    reference = X.assign(score=score).head(1000)
    metadata = {
        "features": features,
        "feature_refs": refs,
        "threshold": float(np.quantile(score, 0.95)),
        "defaults": {f: math.nan for f in features},
        "training_set_hash": "synthetic",
        "manifest": {"source": "synthetic", "rows": n_rows, "seed": seed},
        "metrics": {"base_rate": float(y.mean())},
        "params": {**params, "num_boost_round": rounds},
    }
    tag = register_model(booster, metadata, reference)
    if promote_it:
        promote(tag, reason="test model")
    return tag
