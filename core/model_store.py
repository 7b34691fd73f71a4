"""The model store: BentoML's store plus the production pointer, read and written in one module.

The contract between training (saves models, promotes), serving (loads the production model) and
monitoring (reads the reference sample and calibration). Training-only code (fitting, registering
with metadata) stays in ``training/``; this module is what every stage may import.

Store
    BentoML's model store under ``BENTOML_HOME`` = ``settings().state_dir / "bentoml"`` unless
    ``BENTOML_HOME`` was set by the user. Always call :func:`bentoml_home` (or any function here)
    BEFORE ``import bentoml`` in a process; it sets the variable and, if bentoml is already imported
    with another home (tests switching ``RTML_STATE_DIR``), re-points BentoML's store.

Model
    Named :func:`model_name` (settings, else the feature service's ``model`` tag + ``_model``: ``fraud_model``),
    saved with ``bentoml.xgboost.save_model`` (an ``xgboost.Booster``, ``binary:logistic``).
    ``model.info.metadata`` holds:

    - ``feature_service``: the feature service the model was trained on
    - ``features``: ordered feature names, as Feast returns them with ``full_feature_names=False``;
      this IS the model's column order (build the predict matrix in exactly this order)
    - ``feature_refs``: the same features as ordered ``"view:feature"`` references
    - ``request_fields``: fields the on-demand views need from the request
    - ``entity_keys``: join keys of the service's entities
    - ``threshold``: float, decision threshold on the score (score >= threshold -> positive decision)
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
    ``"rollout"``: the running rollout of a challenger (:func:`start_rollout`, :func:`set_rollout_mode`,
    :func:`complete_rollout`, :func:`abort_rollout`), which the prediction service follows without a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.errors import UserFacingError
from core.locks import file_lock
from core.settings import settings

if TYPE_CHECKING:
    import bentoml
    import xgboost as xgb

REFERENCE_FILE = "reference.parquet"
REPORT_DIR = "report"

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


def bentoml_module():
    bentoml_home()
    import bentoml

    return bentoml




def model_name() -> str:
    """Name of the model in the store (see the module docstring)."""
    from core.feature_refs import default_model_name

    return default_model_name()


def get_model(tag: str) -> bentoml.Model:
    """The stored model with ``tag`` (``fraud_model:version``; a bare version is accepted)."""
    bentoml = bentoml_module()
    if ":" not in tag:
        tag = f"{model_name()}:{tag}"
    try:
        return bentoml.models.get(tag)
    except bentoml.exceptions.NotFound:
        raise UserFacingError(
            f"no model {tag!r} in the store {bentoml_home() / 'models'}; see `rtml models list`"
        ) from None


def load_booster(model: bentoml.Model) -> xgb.Booster:
    """The XGBoost booster of a stored model."""
    return bentoml_module().xgboost.load_model(model)


def reference_sample(model: bentoml.Model) -> pd.DataFrame:
    """The model's reference rows for drift monitoring (``features`` + ``score``)."""
    path = Path(model.path_of(REFERENCE_FILE))
    if not path.exists():
        raise UserFacingError(f"model {model.tag} has no reference sample ({path})")
    return pd.read_parquet(path)


def list_models() -> list[dict[str, Any]]:
    """All stored versions of the model, oldest first, with headline metrics and production flag."""
    bentoml = bentoml_module()
    current = _read_pointer().get("current")
    rows = []
    for model in bentoml.models.list(model_name()):
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


def _pointer_lock():
    """Exclusive lock (across processes) around a read-modify-write of the production pointer."""
    return file_lock(registry_dir() / "production.lock")


def promote(tag: str, reason: str = "manual", actor: str | None = None) -> str:
    """Make ``tag`` the production model; return its full tag. Audited (``actor``: default the OS user, or the
    retraining trigger for an automatic promotion; see :func:`core.audit.default_actor`)."""
    from core import audit

    actor = actor or audit.default_actor()
    model = get_model(tag)
    full = str(model.tag)
    with _pointer_lock():
        state = _read_pointer()
        previous = state.get("current")
        if previous != full:
            state["stack"] = [*state.get("stack", []), full]
        state["current"] = full
        state.setdefault("history", []).append(
            {"action": "promote", "tag": full, "previous": previous, "reason": reason, "actor": actor, "at": _now()}
        )
        _write_pointer(state)
    audit.record("model.promote", actor, before={"production": previous}, after={"production": full}, reason=reason)
    return full


def rollback(reason: str = "manual", actor: str | None = None) -> str:
    """Restore the production model that preceded the current one; return its tag. Audited like :func:`promote`."""
    from core import audit

    actor = actor or audit.default_actor()
    with _pointer_lock():
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
            {"action": "rollback", "tag": restored, "previous": demoted, "reason": reason, "actor": actor, "at": _now()}
        )
        _write_pointer(state)
    audit.record("model.rollback", actor, before={"production": demoted}, after={"production": restored}, reason=reason)
    return restored


def history() -> list[dict[str, Any]]:
    """Promotions and rollbacks, oldest first."""
    return list(_read_pointer().get("history", []))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- rollouts (challenger variants)
#
# A rollout lives in the same pointer file, under "rollout": {"id", "challenger", "production", "mode",
# "share", "auto", "policy", "thresholds", "started_at", "updated_at"}. The prediction service polls the file and
# serves what it says (see bentos.variants); the monitor's rollout policy may move it on
# (monitoring.rollout). Every change is appended to "history".

ROLLOUT_MODES = ("shadow", "canary", "ab")


@contextlib.contextmanager
def _pointer_lock() -> Iterator[None]:
    """Serialise read-modify-write of the pointer file between processes (CLI, monitor policy)."""
    import fcntl

    registry_dir().mkdir(parents=True, exist_ok=True)
    with open(registry_dir() / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pointer_state() -> dict[str, Any]:
    """The whole pointer file (``current``, ``rollout``, ``stack``, ``history``): one consistent read."""
    return _read_pointer()


def rollout_state() -> dict[str, Any] | None:
    """The running rollout, or None."""
    return _read_pointer().get("rollout") or None


def parse_share(share: str | float) -> float:
    """``"5%"``, ``"0.05"`` or ``0.05`` -> 0.05 (must be in (0, 1])."""
    text = str(share).strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise UserFacingError(f"share {share!r} is not a number or a percentage (e.g. 5%)") from None
    if not 0 < value <= 1:
        raise UserFacingError(f"share {share!r} must be more than 0% and at most 100%")
    return value


def _rollout_view(production: str | None, rollout: dict[str, Any] | None) -> dict[str, Any]:
    """What a rollout change alters, for the audit trail's before/after."""
    r = rollout or {}
    return {"production": production, "challenger": r.get("challenger"), "mode": r.get("mode"), "share": r.get("share")}


def start_rollout(
    tag: str, mode: str, share: str | float = "5%", auto: bool = False, policy: dict[str, Any] | None = None,
    reason: str = "manual", actor: str | None = None,
) -> dict[str, Any]:
    """Declare ``tag`` the challenger of the production model in ``mode`` (shadow, canary or ab). Audited
    (``model.rollout.start``; ``actor`` as in :func:`promote`)."""
    from core import audit

    if mode not in ROLLOUT_MODES:
        raise UserFacingError(f"rollout mode {mode!r}: use one of {', '.join(ROLLOUT_MODES)}")
    actor = actor or audit.default_actor()
    challenger = get_model(tag)
    full = str(challenger.tag)
    fraction = parse_share(share)
    with _pointer_lock():
        state = _read_pointer()
        current = state.get("current")
        if not current:
            raise UserFacingError("no production model to compare with: promote one first (`rtml models promote TAG`)")
        if full == current:
            raise UserFacingError(f"{full} is already the production model")
        running = state.get("rollout")
        if running:
            raise UserFacingError(
                f"a rollout of {running['challenger']} ({running['mode']}) is running: `rtml models complete` or `rtml models abort` first"
            )
        rollout = {
            "id": uuid.uuid4().hex[:12],
            "challenger": full,
            "production": current,
            "mode": mode,
            "share": fraction,
            "auto": bool(auto),
            "policy": dict(policy or {}),
            # decision thresholds, so readers (the monitor) need not load the models
            "thresholds": {
                "production": float(get_model(current).info.metadata["threshold"]),
                "challenger": float(challenger.info.metadata["threshold"]),
            },
            "started_at": _now(),
            "updated_at": _now(),
        }
        state["rollout"] = rollout
        state.setdefault("history", []).append(
            {"action": f"rollout-{mode}", "tag": full, "previous": current, "reason": reason, "actor": actor,
             "at": _now(), "share": fraction}
        )  # fmt: skip
        _write_pointer(state)
    audit.record(
        "model.rollout.start", actor, before=_rollout_view(current, None), after=_rollout_view(current, rollout),
        reason=reason, details={"rollout_id": rollout["id"], "auto": rollout["auto"]},
    )  # fmt: skip
    return rollout


@contextlib.contextmanager
def _running_rollout(
    action: str, audit_action: str, reason: str, actor: str | None, **extra: Any
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Change the running rollout under the lock: yields (pointer state, rollout); logs ``action`` in history and
    ``audit_action`` (before/after: production, challenger, mode, share) in the audit trail."""
    from core import audit

    actor = actor or audit.default_actor()
    with _pointer_lock():
        state = _read_pointer()
        rollout = state.get("rollout")
        if not rollout:
            raise UserFacingError("no rollout is running (`rtml models rollout TAG --mode ...`)")
        previous = state.get("current")
        before = _rollout_view(previous, rollout)
        yield state, rollout
        after = _rollout_view(state.get("current"), state.get("rollout"))
        state.setdefault("history", []).append(
            {"action": action, "tag": rollout["challenger"], "previous": previous, "reason": reason, "actor": actor,
             "at": _now(), **extra}
        )  # fmt: skip
        _write_pointer(state)
    audit.record(audit_action, actor, before=before, after=after, reason=reason, details={"rollout_id": rollout["id"]})


def set_rollout_mode(mode: str, share: str | float, reason: str = "manual", actor: str | None = None) -> dict[str, Any]:
    """Move the running rollout to ``mode`` with ``share`` (e.g. shadow -> canary 5%). Audited (``model.rollout.mode``)."""
    if mode not in ROLLOUT_MODES:
        raise UserFacingError(f"rollout mode {mode!r}: use one of {', '.join(ROLLOUT_MODES)}")
    fraction = parse_share(share)
    with _running_rollout(f"rollout-{mode}", "model.rollout.mode", reason, actor, share=fraction) as (_state, rollout):
        rollout.update(mode=mode, share=fraction, updated_at=_now())
    return rollout


def complete_rollout(reason: str = "manual", actor: str | None = None) -> str:
    """Make the challenger the production model and end the rollout; return its tag. Audited
    (``model.rollout.complete``: the production model changes)."""
    with _running_rollout("rollout-complete", "model.rollout.complete", reason, actor) as (state, rollout):
        tag = rollout["challenger"]
        get_model(tag)  # must still exist
        if state.get("current") != tag:
            state["stack"] = [*state.get("stack", []), tag]
        state["current"] = tag
        state["rollout"] = None
    return tag


def abort_rollout(reason: str = "manual", actor: str | None = None) -> str:
    """End the rollout without promoting; return the challenger's tag. Audited (``model.rollout.abort``)."""
    with _running_rollout("rollout-abort", "model.rollout.abort", reason, actor) as (state, rollout):
        state["rollout"] = None
    return rollout["challenger"]
