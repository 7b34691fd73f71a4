"""The Feast feature store with rtml's settings: the repo's feature_store.yaml, with the registry
path, Redis connection and offline store taken from :mod:`core.settings` (on an ``s3://`` data dir: Spark's s3a
options, or pyarrow's S3 route registered on the duckdb connection Feast's duckdb store reads through)."""

from __future__ import annotations

import yaml

from core.feature_repo import repo_on_path
from core.settings import settings
from core.storage import register_ibis_duckdb, s3a_conf


def project_name() -> str:
    """The Feast project of the feature repo (its ``feature_store.yaml``): the suffix of every online key."""
    return str(yaml.safe_load((settings().feature_repo / "feature_store.yaml").read_text())["project"])


def repo_config():
    """Feast ``RepoConfig`` for the current settings."""
    from feast.repo_config import RepoConfig

    s = settings()
    raw = yaml.safe_load((s.feature_repo / "feature_store.yaml").read_text())
    raw["registry"] = str(s.registry_path)
    raw["online_store"] = {**raw.get("online_store", {}), **s.feast_online_store}
    if s.offline_store == "spark":
        raw["offline_store"] = {
            "type": "spark",
            "spark_conf": {
                "spark.master": s.spark_master,
                "spark.sql.session.timeZone": "UTC",
                "spark.ui.enabled": "false",
                **(s3a_conf() if s.data_on_s3 else {}),
            },
        }
    config = RepoConfig(**raw)
    config.repo_path = s.feature_repo
    return config


def get_store():
    """A ``FeatureStore`` bound to the registry and online store of the current settings."""
    from feast import FeatureStore

    settings().state_dir.mkdir(parents=True, exist_ok=True)
    if settings().data_on_s3 and settings().offline_store != "spark":
        register_ibis_duckdb()  # Feast's duckdb store reads s3arrow:// sources through pyarrow
    with repo_on_path():
        return FeatureStore(config=repo_config())


def apply_repo() -> None:
    """`feast apply` for ``feature_repo/`` with the current settings (idempotent). Feast's own chatter
    ("No project found ...", "Deploying infrastructure for ...") goes to the DEBUG log, not the terminal:
    the caller prints one summary line."""
    import contextlib
    import io
    import logging

    from feast.repo_operations import apply_total

    settings().state_dir.mkdir(parents=True, exist_ok=True)
    said = io.StringIO()
    with repo_on_path(), contextlib.redirect_stdout(said):
        apply_total(repo_config(), settings().feature_repo, skip_source_validation=True)
    for line in said.getvalue().splitlines():
        if line.strip():
            logging.getLogger(__name__).debug("feast apply: %s", line.strip())


def plan_repo() -> None:
    """`feast plan`: print what `apply` would change."""
    from feast.repo_operations import plan

    with repo_on_path():
        plan(repo_config(), settings().feature_repo, skip_source_validation=True)
