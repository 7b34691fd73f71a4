"""Calibrate the monitor for a stored model, once: ``python -m monitoring.calibrate_model [--tag T]``.

The clean history is the model's training period: its saved training set (``<state_dir>/training_sets/
<hash>``, named by the model's ``training_set_hash``), scored by the model. The result (thresholds,
tolerances, lineage, seasonal reference) is written into the model's folder in the model store
(``monitoring/``). The monitor runs it when it starts on a model without calibration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd

from monitoring.calibration import Calibration, calibrate, load, save
from monitoring.drift import SCORE_COLUMN, TIME_COLUMN

log = logging.getLogger(__name__)

TIME_COLUMNS = ("event_time", TIME_COLUMN)  # the training set's event time, else the entity time


def calibration_dir(model) -> Path:
    from monitoring.calibration import FOLDER

    return Path(model.path_of(FOLDER))


def training_history(model) -> pd.DataFrame:
    """The model's training set with the model's scores and one event time column."""
    from core.model_store import load_booster
    from core.settings import settings
    from training.datasets import load_training_set
    from training.model import predict

    meta = model.info.metadata
    digest = str(meta.get("training_set_hash") or "")
    path = settings().state_dir / "training_sets" / digest[:16]
    if not digest or not (path / "data.parquet").exists():
        raise FileNotFoundError(f"the training set of {model.tag} ({path}) is not available")
    frame = load_training_set(path).frame
    features = list(meta["features"])
    time_col = next(c for c in TIME_COLUMNS if c in frame.columns)
    out = frame[features].copy()
    out[SCORE_COLUMN] = predict(load_booster(model), frame, features)
    out[TIME_COLUMN] = frame[time_col].to_numpy()
    return out


def calibrate_model(tag: str | None = None, window_rows: int = 5000) -> Calibration:
    from core.model_store import get_model, production_model
    from monitoring.lineage import repo_lineage

    model = get_model(tag) if tag else production_model()
    history = training_history(model)
    try:
        lineage = repo_lineage().to_dict()
    except Exception as exc:  # noqa: BLE001 - without lineage, alerts name features, not inputs
        log.warning("no feature lineage (%s): alerts will group nothing", exc)
        lineage = {}
    features = list(model.info.metadata["features"])
    cal, reference = calibrate(history, features, window_rows, lineage=lineage, model=str(model.tag))
    save(calibration_dir(model), cal, reference)
    log.info(
        "calibrated %s on %d clean windows of %d rows (%s .. %s)",
        model.tag, cal.windows, window_rows, cal.history["start"], cal.history["end"],
    )
    return cal


def ensure_calibration(model, window_rows: int) -> tuple[Calibration, pd.DataFrame] | None:
    """The model's stored calibration; calibrated now if it has none. None when that is impossible
    (no training set): the monitor then uses the flat reference sample and default thresholds."""
    stored = load(calibration_dir(model))
    if stored is not None:
        return stored
    log.info("model %s has no monitor calibration yet: calibrating on its training period", model.tag)
    try:
        calibrate_model(str(model.tag), window_rows)
    except (FileNotFoundError, ValueError) as exc:
        log.warning("cannot calibrate %s (%s): flat reference sample and default thresholds", model.tag, exc)
        return None
    return load(calibration_dir(model))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default=None, help="model tag (default: production)")
    parser.add_argument("--window", type=int, default=5000, help="monitor window size in rows")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        calibrate_model(args.tag, args.window)
    except (FileNotFoundError, ValueError) as exc:
        print(f"calibration impossible: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
