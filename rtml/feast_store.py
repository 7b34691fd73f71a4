"""The Feast feature store with rtml's settings: the repo's feature_store.yaml, with the registry
path, Redis connection and offline store taken from :mod:`rtml.config`."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import yaml

from rtml.config import FEATURE_REPO, settings


def repo_config():
    """Feast ``RepoConfig`` for the current settings."""
    from feast.repo_config import RepoConfig

    s = settings()
    raw = yaml.safe_load((FEATURE_REPO / "feature_store.yaml").read_text())
    raw["registry"] = str(s.registry_path)
    raw["online_store"] = {**raw.get("online_store", {}), "connection_string": s.feast_redis_connection}
    if s.offline_store == "spark":
        raw["offline_store"] = {
            "type": "spark",
            "spark_conf": {
                "spark.master": s.spark_master,
                "spark.sql.session.timeZone": "UTC",
                "spark.ui.enabled": "false",
            },
        }
    config = RepoConfig(**raw)
    config.repo_path = FEATURE_REPO
    return config


def _forget_definition_modules() -> None:
    """Drop cached imports of the repo's modules, so definitions see the current settings (paths, bootstrap)."""
    for path in FEATURE_REPO.glob("*.py"):
        sys.modules.pop(path.stem, None)


@contextlib.contextmanager
def _repo_on_path():
    """Feast imports definition modules by file name and chdirs into the repo; undo both afterwards."""
    cwd = os.getcwd()
    _forget_definition_modules()
    sys.path.insert(0, str(FEATURE_REPO))
    try:
        yield
    finally:
        os.chdir(cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(FEATURE_REPO))


def get_store():
    """A ``FeatureStore`` bound to the registry and online store of the current settings."""
    from feast import FeatureStore

    settings().state_dir.mkdir(parents=True, exist_ok=True)
    with _repo_on_path():
        return FeatureStore(config=repo_config())


def apply_repo() -> None:
    """`feast apply` for ``feature_repo/`` with the current settings (idempotent)."""
    from feast.repo_operations import apply_total

    settings().state_dir.mkdir(parents=True, exist_ok=True)
    with _repo_on_path():
        apply_total(repo_config(), Path(FEATURE_REPO), skip_source_validation=True)


def plan_repo() -> None:
    """`feast plan`: print what `apply` would change."""
    from feast.repo_operations import plan

    with _repo_on_path():
        plan(repo_config(), Path(FEATURE_REPO), skip_source_validation=True)
