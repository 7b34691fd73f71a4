"""Experiment tracking with MLflow: every `rtml train` is a run, each hyperparameter trial a nested run.

The store is ``settings().mlflow_tracking_uri``: the local sqlite store under the state dir
(``<state_dir>/mlflow/mlflow.db``, artifacts in ``<state_dir>/mlflow/artifacts``) unless
``RTML_MLFLOW_URI`` points at a team's tracking server. ``rtml up --mlflow`` serves the local store's UI.

Tracking stays off the training's critical path: one worker thread imports MLflow, opens the store
and sends every call in order while the training set is built and the model trained; the pipeline
only waits for it when it needs the run id and at the end. :attr:`Tracker.overhead_s` is the time
the pipeline spent waiting on tracking (the benchmark's ``mlflow_logging_overhead_s``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import UserFacingError
from core.settings import settings

log = logging.getLogger(__name__)

# MLflow's own chatter (store migrations, artifact progress bars, git probing) stays out of rtml's output.
_QUIET_LOGGERS = ("mlflow", "alembic", "git", "databricks", "urllib3")
_LIBRARY_ENV = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GIT_PYTHON_REFRESH": "quiet",
    # a tracking server that is down is a clear error within seconds, never a long retry loop
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_CHARS = 6000


def _import_mlflow():
    for name, value in _LIBRARY_ENV.items():
        os.environ.setdefault(name, value)
    import mlflow  # noqa: F401
    from mlflow import MlflowClient

    quiet()
    return MlflowClient


def quiet() -> None:
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def client():
    """An ``MlflowClient`` on the configured store (the local store's folder is created)."""
    s = settings()
    MlflowClient = _import_mlflow()
    if s.mlflow.uri is None:
        s.mlflow_dir.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=s.mlflow_tracking_uri)


def experiment_id(mlflow_client, create: bool = True) -> str | None:
    """Id of the configured experiment (created on first use, artifacts under the state dir when local)."""
    s = settings()
    try:
        exp = mlflow_client.get_experiment_by_name(s.mlflow.experiment)
    except Exception as exc:  # noqa: BLE001 - MLflow raises its own and requests' errors
        raise UserFacingError(
            f"MLflow tracking store {s.mlflow_tracking_uri} is not reachable: {_short(exc)}"
        ) from None
    if exp is not None:
        return exp.experiment_id
    if not create:
        return None
    return mlflow_client.create_experiment(s.mlflow.experiment, artifact_location=_artifact_location())


def _artifact_location() -> str | None:
    """Artifacts of a local store sit next to its database (MLflow's default would be ``./mlruns`` in
    the current directory); a server decides for itself."""
    s = settings()
    uri = s.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def flat(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """``{prefix.key: value}`` for nested dicts, lists as JSON."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flat(key, v))
        else:
            out[key] = v
    return out


def numeric(values: dict[str, Any]) -> dict[str, float]:
    """The finite numbers (and bools as 0/1) among ``values``: what MLflow stores as metrics."""
    out = {}
    for k, v in values.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
            out[k] = float(v)
    return out


def _settle_pyspark_ml() -> None:
    """MLflow's ``Param`` checks ``pyspark.ml.param.Param`` whenever ``pyspark.ml`` is in ``sys.modules``. When
    another thread is importing ``pyspark.ml`` at that moment (Great Expectations does, when the pipeline's
    validation starts), the worker fails with "cannot access submodule 'ml' of module 'pyspark'". So the
    module is imported whole here, on the caller's thread, before the worker starts (~0.4 s once; validation
    imports it anyway)."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is not None:
        import pyspark.ml.param  # noqa: F401


class Tracker:
    """One training run. Calls are queued to a worker thread and sent in order; :meth:`run_id` and
    :meth:`finish` wait for it. A store that cannot be reached fails the run at the first wait."""

    def __init__(self, run_name: str, tags: dict[str, str] | None = None) -> None:
        self.overhead_s = 0.0
        self.worker_s = 0.0
        self.uri = settings().mlflow_tracking_uri
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._reported = False
        self._client = None
        self._experiment: str | None = None
        self._run_id: str | None = None
        self._started = threading.Event()
        _settle_pyspark_ml()
        self._thread = threading.Thread(target=self._work, name="mlflow-tracking", daemon=True)
        self._thread.start()
        self._submit(lambda: self._start(run_name, tags or {}))

    # ------------------------------------------------------------ worker side

    def _work(self) -> None:
        while True:
            call = self._queue.get()
            if call is None:
                return
            if self._error is None:
                t0 = time.perf_counter()
                try:
                    call()
                except BaseException as exc:  # noqa: BLE001 - reported to the pipeline at its next wait
                    self._error = exc
                self.worker_s += time.perf_counter() - t0
            if not self._started.is_set() and (self._run_id or self._error):
                self._started.set()

    def _start(self, run_name: str, tags: dict[str, str]) -> None:
        self._client = client()
        self._experiment = experiment_id(self._client)
        run = self._client.create_run(self._experiment, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
        self._run_id = run.info.run_id

    def _log(self, run_id: str, params: dict[str, Any], metrics: dict[str, float], tags: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self._client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, _param(v)) for k, v in params.items()],
            tags=[RunTag(k, str(v)) for k, v in tags.items()],
        )

    # ------------------------------------------------------------ pipeline side

    def _submit(self, call: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        self._queue.put(call)
        self.overhead_s += time.perf_counter() - t0

    def _wait(self, until: Callable[[], bool]) -> None:
        t0 = time.perf_counter()
        while not until() and self._error is None:
            time.sleep(0.005)
        self.overhead_s += time.perf_counter() - t0
        if self._error is not None and not self._reported:
            self._reported = True
            err = self._error
            if isinstance(err, UserFacingError):
                raise err
            raise UserFacingError(f"experiment tracking failed ({self.uri}): {_short(err)}") from err

    def run_id(self) -> str:
        """The run's id (waits until the run exists)."""
        self._wait(self._started.is_set)
        assert self._run_id is not None
        return self._run_id

    def log(
        self,
        params: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        """Params, (finite numeric) metrics and tags of the run."""
        p, m, t = dict(params or {}), numeric(metrics or {}), dict(tags or {})
        self._submit(lambda: self._log(self._run_id, p, m, t))

    def trial(self, index: int, params: dict[str, Any], metrics: dict[str, Any]) -> None:
        """One hyperparameter trial as a nested run."""
        p, m = dict(params), numeric(metrics)

        def call() -> None:
            run = self._client.create_run(
                self._experiment, run_name=f"trial-{index}", tags={PARENT_TAG: self._run_id, "rtml.trial": str(index)}
            )
            self._log(run.info.run_id, p, m, {})
            self._client.set_terminated(run.info.run_id)

        self._submit(call)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        data = json.loads(json.dumps(obj, default=str))
        self._submit(lambda: self._client.log_dict(self._run_id, data, artifact_file))

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        self._submit(lambda: self._client.log_artifacts(self._run_id, str(folder), artifact_path))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._submit(lambda: self._client.log_artifact(self._run_id, str(path), artifact_path))

    def then(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the worker after everything queued so far (e.g. remove a file once logged)."""
        self._submit(call)

    def finish(self, status: str = "FINISHED") -> None:
        """End the run (``FINISHED`` or ``FAILED``) and wait until everything is sent."""
        self._submit(lambda: self._client.set_terminated(self._run_id, status=status))
        self._queue.put(None)
        t0 = time.perf_counter()
        self._thread.join()
        self.overhead_s += time.perf_counter() - t0
        if self._error is not None:
            self._wait(lambda: True)

    def artifact_uri(self) -> str:
        return f"{self.uri} run {self._run_id}"


def _param(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


# ---------------------------------------------------------------- reading runs back


def find_run(mlflow_client, run_ref: str):
    """A run by id or unique id prefix (in the configured experiment)."""
    exp = experiment_id(mlflow_client, create=False)
    if exp is None:
        raise UserFacingError(f"no experiment {settings().mlflow.experiment!r} in {settings().mlflow_tracking_uri}")
    try:
        return mlflow_client.get_run(run_ref)
    except Exception:  # noqa: BLE001 - not a full id: try it as a prefix
        pass
    runs = [r for r in top_level_runs(mlflow_client) if r.info.run_id.startswith(run_ref)]
    if len(runs) != 1:
        raise UserFacingError(
            f"run {run_ref!r} {'is ambiguous' if runs else 'not found'} in experiment {settings().mlflow.experiment!r}"
        )
    return runs[0]


def top_level_runs(mlflow_client, max_results: int = 200) -> list:
    """Training runs (not trials), newest first."""
    exp = experiment_id(mlflow_client, create=False)
    if exp is None:
        return []
    runs = mlflow_client.search_runs([exp], max_results=max_results, order_by=["attributes.start_time DESC"])
    return [r for r in runs if PARENT_TAG not in r.data.tags]


def download(mlflow_client, run_id: str, artifact_path: str, dst: Path) -> Path:
    """One artifact of a run, downloaded to ``dst`` (a folder); returns the local path."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow_client.download_artifacts(run_id, artifact_path, str(dst)))
