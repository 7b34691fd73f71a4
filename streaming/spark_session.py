"""The Spark session of the stream and backfill jobs (Kafka connector jars from the local cache; on an ``s3://``
data dir also the s3a jars and ``spark.hadoop.fs.s3a.*`` options from settings)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.errors import UserFacingError


def connector_jars() -> list[str]:
    """spark-sql-kafka-0-10 and its dependencies, already resolved into the local cache (no download here).

    ``RTML_SPARK_JARS`` (comma-separated paths) overrides the cache, e.g. for a cluster image.
    """
    from core.settings import settings

    override = settings().spark_jars
    if override:
        return list(override)
    try:
        from infra.spark_deps import connector_jars as cached_jars
    except ImportError as exc:  # pragma: no cover - infra not installed
        raise UserFacingError("infra.spark_deps is missing: cannot locate the Spark Kafka connector jars") from exc
    return [str(p) for p in cached_jars()]


ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
# The state store of every stateful job (also in infra/k8s/stream-job.yaml's sparkConf, checked by a test).
LOG4J_CONF = Path(__file__).with_name("log4j2.properties")  # the driver's log: warnings, minus known noise
STATE_STORE_CONF = {
    "spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    # Spark 4.2 writes and verifies a checksum file beside every checkpoint file: ~15% of each micro-batch
    # at 5k events/s here (1.55 -> 1.2-1.4 s). The checkpoint's file system keeps its own checksums
    # (Hadoop's .crc, object stores' ETags); a checkpoint written either way restarts either way.
    "spark.sql.streaming.checkpoint.fileChecksum.enabled": "false",
}


def build_session(app_name: str, master: str | None = None, shuffle_partitions: int = 2, kafka: bool = True,
                  extra_conf: dict[str, str] | None = None, ui_port: int | None = None):
    """A SparkSession in UTC with the venv's Python, few shuffle partitions and the RocksDB state store
    (changelog checkpointing, no extra checkpoint checksum files). The UI is off unless ``ui_port`` is
    given; ``extra_conf`` overrides any of it."""
    from core.settings import settings

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName(app_name)
        .master(master or settings().spark_master)
        .config("spark.sql.session.timeZone", "UTC")
        .config(map=STATE_STORE_CONF)
        .config("spark.ui.enabled", "true" if ui_port else "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", settings().spark_driver_memory)
        .config("spark.sql.streaming.stopGracefullyOnShutdown", "true")
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={LOG4J_CONF}")
    )
    jars = []
    if kafka:
        jars = connector_jars()
        missing = [j for j in jars if not Path(j).exists()]
        if missing:
            raise UserFacingError(f"Spark Kafka connector jars missing: {missing[:3]} (run `rtml up` to fetch them)")
    conf = dict(extra_conf or {})
    if settings().data_on_s3:  # s3a:// paths: hadoop-aws + AWS SDK jars, endpoint and credentials from settings
        from core.storage import s3a_conf

        s3a = s3a_conf()
        jars += s3a.pop("spark.jars").split(",")
        conf = {**s3a, **conf}
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    if ui_port:
        builder = builder.config("spark.ui.port", str(ui_port))
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
