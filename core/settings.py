"""One place for runtime configuration: defaults for the local stack, overridable by environment variables.

Every component reads its settings from :func:`settings`. Feature definitions live in the Feast
repo (``feature_repo/``); everything that differs between machines comes from ``RTML_*`` variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = REPO_ROOT / "feature_repo"


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


@dataclass(frozen=True)
class Topics:
    """Kafka topic names."""

    transactions: str = "transactions"
    transactions_dlq: str = "transactions_dlq"
    labels: str = "labels"
    predictions: str = "predictions"
    alerts: str = "alerts"

    def all(self) -> list[str]:
        return [self.transactions, self.transactions_dlq, self.labels, self.predictions, self.alerts]


@dataclass(frozen=True)
class ServingSettings:
    """The prediction service (``RTML_SERVING_*``)."""

    workers: int = 1
    redis_timeout_s: float = 0.1
    log_queue: int = 10000
    switch_interval_s: float = 0.0005
    max_batch: int = 256
    model_tag: str | None = None  # pin a model instead of the registry's production pointer
    profile_path: str | None = None  # developer option: cProfile dump of a worker
    api_keys_file: str | None = None  # RTML_API_KEYS_FILE: API key hashes (default <state_dir>/secrets/api_keys.json)


@dataclass(frozen=True)
class BrokerSettings:
    """The local Kafka broker started by ``rtml up``."""

    version: str | None = None  # None: infra.kafka_broker's default
    controller_port: int | None = None
    start_timeout_s: float = 90.0
    heap: str = "512m"


@dataclass(frozen=True)
class MonitorSettings:
    """The drift monitor's hooks."""

    retrain_command: str | None = None  # None: `rtml train` with the current interpreter
    runbook_base: str | None = None  # URL prefix of runbook links (default: the repo's files)
    alert_webhook: str | None = None


@dataclass(frozen=True)
class S3Settings:
    """The S3 API endpoint of an ``s3://`` data dir (``RTML_S3_*``).

    Without ``RTML_S3_ACCESS_KEY``/``RTML_S3_SECRET_KEY`` the credentials are the ones `rtml up --s3`
    generated for its local s3proxy (``credentials_file``, mode 0600), read when first needed.
    """

    endpoint: str = "http://127.0.0.1:9000"
    external: bool = False  # RTML_S3_ENDPOINT names a server rtml does not start
    access_key_env: str | None = None
    secret_key_env: str | None = None
    region: str = "us-east-1"
    credentials_file: Path = Path("s3proxy/credentials.json")

    @property
    def port(self) -> int:
        rest = self.endpoint.split("://", 1)[-1].split("/", 1)[0]
        return int(rest.rpartition(":")[2]) if ":" in rest else (443 if self.endpoint.startswith("https") else 80)

    def credentials(self) -> tuple[str, str]:
        """(access key, secret key): the environment's, else the local s3proxy's generated pair."""
        if self.access_key_env and self.secret_key_env:
            return self.access_key_env, self.secret_key_env
        import json

        try:
            data = json.loads(self.credentials_file.read_text())
        except FileNotFoundError:
            from core.errors import UserFacingError

            raise UserFacingError(
                f"no S3 credentials: set RTML_S3_ACCESS_KEY and RTML_S3_SECRET_KEY, or start the local "
                f"s3proxy with `rtml up --s3` (writes {self.credentials_file})"
            ) from None
        return data["access_key"], data["secret_key"]


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Build with :func:`settings`; never mutate."""

    state_dir: Path
    data_url: str  # RTML_DATA_DIR: an absolute local folder or s3://bucket/prefix (read it through core.storage)
    kafka_bootstrap: str
    kafka_external: bool
    redis_url: str
    redis_external: bool
    spark_master: str
    offline_store: str
    feature_repo: Path = FEATURE_REPO
    feature_service: str | None = None  # None: the repo's only feature service
    model_name: str | None = None  # None: derived from the feature service (see core.model_store)
    spark_jars: tuple[str, ...] = ()  # overrides the cached Kafka connector jars (cluster images)
    spark_driver_memory: str = "2g"
    mvn_timeout_s: float = 900.0  # resolving jars from Maven Central
    promotion_margin: float = 0.005
    # This component's Redis ACL user (RTML_REDIS_USER / RTML_REDIS_PASSWORD; the deployment files give the
    # stream job and materialize `rtml-writer`, serving the read-only `rtml-serving`). None: no AUTH.
    redis_user: str | None = field(default=None, repr=False)
    redis_password: str | None = field(default=None, repr=False)
    serving: ServingSettings = field(default_factory=lambda: ServingSettings())
    broker: BrokerSettings = field(default_factory=lambda: BrokerSettings())
    monitor: MonitorSettings = field(default_factory=lambda: MonitorSettings())
    topics: Topics = field(default_factory=Topics)
    s3: S3Settings = field(default_factory=S3Settings)

    @property
    def data_on_s3(self) -> bool:
        return self.data_url.startswith("s3://")

    @property
    def data_dir(self) -> Path:
        """The local data folder; an ``s3://`` data dir has none (use :mod:`core.storage`)."""
        if self.data_on_s3:
            from core.errors import UserFacingError

            raise UserFacingError(f"RTML_DATA_DIR={self.data_url} is object storage; this step reads local files only")
        return Path(self.data_url)

    @property
    def redis_host_port(self) -> tuple[str, int]:
        """Host and port parsed from ``redis_url`` (``redis://host:port/db``)."""
        rest = self.redis_url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        host, _, port = rest.partition(":")
        return host or "127.0.0.1", int(port or 6379)

    @property
    def redis_db(self) -> int:
        tail = self.redis_url.split("://", 1)[-1].split("/", 1)
        return int(tail[1]) if len(tail) > 1 and tail[1] else 0

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        first = self.kafka_bootstrap.split(",")[0]
        host, _, port = first.rpartition(":")
        return host or "127.0.0.1", int(port)

    @property
    def feast_redis_connection(self) -> str:
        """Redis connection string in Feast's format (``host:port,db=N``)."""
        host, port = self.redis_host_port
        return f"{host}:{port},db={self.redis_db}"

    @property
    def registry_path(self) -> Path:
        return self.state_dir / "registry.db"

    @property
    def run_dir(self) -> Path:
        """Pid files and logs of services started by ``rtml up``."""
        return self.state_dir / "run"

    @property
    def cache_dir(self) -> Path:
        """Downloaded jars (Kafka broker, Spark connector); shared by all state dirs."""
        return Path(_env("RTML_CACHE_DIR", str(REPO_ROOT / ".cache")))


def _data_url(value: str | None, state_dir: Path) -> str:
    if value and value.startswith("s3://"):
        bucket = value[5:].split("/", 1)[0]
        if not bucket:
            from core.errors import UserFacingError

            raise UserFacingError(f"RTML_DATA_DIR={value}: expected s3://bucket[/prefix]")
        return value.rstrip("/")
    return str(Path(value or state_dir / "data").resolve())


@cache
def _settings_for(env_key: tuple[tuple[str, str], ...]) -> Settings:
    env = dict(env_key)
    state_dir = Path(env.get("RTML_STATE_DIR") or REPO_ROOT / ".rtml").resolve()
    return Settings(
        state_dir=state_dir,
        data_url=_data_url(env.get("RTML_DATA_DIR"), state_dir),
        kafka_bootstrap=env.get("RTML_KAFKA_BOOTSTRAP") or f"127.0.0.1:{env.get('RTML_KAFKA_PORT') or 9092}",
        kafka_external=bool(env.get("RTML_KAFKA_BOOTSTRAP")),
        redis_url=env.get("RTML_REDIS_URL") or f"redis://127.0.0.1:{env.get('RTML_REDIS_PORT') or 6379}/0",
        redis_external=bool(env.get("RTML_REDIS_URL")),
        spark_master=env.get("RTML_SPARK_MASTER") or "local[*]",
        offline_store=env.get("RTML_OFFLINE_STORE") or "duckdb",
        feature_repo=Path(env.get("RTML_FEATURE_REPO") or FEATURE_REPO).resolve(),
        feature_service=env.get("RTML_FEATURE_SERVICE") or None,
        model_name=env.get("RTML_MODEL_NAME") or None,
        spark_jars=tuple(p for p in (env.get("RTML_SPARK_JARS") or "").split(",") if p),
        spark_driver_memory=env.get("RTML_SPARK_DRIVER_MEMORY") or "2g",
        mvn_timeout_s=float(env.get("RTML_MVN_TIMEOUT") or 900),
        promotion_margin=float(env.get("RTML_PROMOTION_MARGIN") or 0.005),
        redis_user=env.get("RTML_REDIS_USER") or None,
        redis_password=env.get("RTML_REDIS_PASSWORD") or None,
        serving=ServingSettings(
            workers=int(env.get("RTML_SERVING_WORKERS") or 1),
            redis_timeout_s=float(env.get("RTML_SERVING_REDIS_TIMEOUT_MS") or 100) / 1000,
            log_queue=int(env.get("RTML_SERVING_LOG_QUEUE") or 10000),
            switch_interval_s=float(env.get("RTML_SERVING_SWITCH_INTERVAL_MS") or 0.5) / 1000,
            max_batch=int(env.get("RTML_SERVING_MAX_BATCH") or 256),
            model_tag=env.get("RTML_SERVING_MODEL_TAG") or None,
            profile_path=env.get("RTML_SERVING_PROFILE") or None,
            api_keys_file=env.get("RTML_API_KEYS_FILE") or None,
        ),
        broker=BrokerSettings(
            version=env.get("RTML_KAFKA_VERSION") or None,
            controller_port=int(env["RTML_KAFKA_CONTROLLER_PORT"]) if env.get("RTML_KAFKA_CONTROLLER_PORT") else None,
            start_timeout_s=float(env.get("RTML_KAFKA_START_TIMEOUT") or 90),
            heap=env.get("RTML_KAFKA_HEAP") or "512m",
        ),
        s3=S3Settings(
            endpoint=env.get("RTML_S3_ENDPOINT") or f"http://127.0.0.1:{env.get('RTML_S3_PORT') or 9000}",
            external=bool(env.get("RTML_S3_ENDPOINT")),
            access_key_env=env.get("RTML_S3_ACCESS_KEY") or None,
            secret_key_env=env.get("RTML_S3_SECRET_KEY") or None,
            region=env.get("RTML_S3_REGION") or "us-east-1",
            credentials_file=state_dir / "s3proxy" / "credentials.json",
        ),
        monitor=MonitorSettings(
            retrain_command=env.get("RTML_RETRAIN_COMMAND") or None,
            runbook_base=env.get("RTML_RUNBOOK_BASE") or None,
            alert_webhook=env.get("RTML_ALERT_WEBHOOK") or None,
        ),
    )


def settings() -> Settings:
    """Current settings, from ``RTML_*`` environment variables over the local defaults."""
    keys = sorted((k, v) for k, v in os.environ.items() if k.startswith("RTML_"))
    return _settings_for(tuple(keys))
