"""Spark's Kafka connector (spark-sql-kafka-0-10) pre-resolved from Maven Central, so a streaming job starts offline.

Pass the result to Spark: ``.config("spark.jars", ",".join(str(p) for p in connector_jars()))``.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import REPO_ROOT, settings
from core.storage import S3A_JARS_PREFIX
from infra import maven
from infra.proc import require_tool

POM = REPO_ROOT / "infra" / "spark" / "pom.xml"
S3A_POM = REPO_ROOT / "infra" / "hadoop_aws" / "pom.xml"
_VERSIONED = re.compile(r"^(?P<name>.+?)-\d[^/]*\.jar$")


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def _cached(pom: Path, properties: dict[str, str], name: str, progress: bool, resolve: bool) -> Path:
    out = settings().cache_dir / name
    if resolve:
        maven.resolve(pom, properties, out, progress=progress)
    return out


def _not_shipped(folder: Path) -> list[Path]:
    """The jars of ``folder`` minus those pyspark already ships."""
    shipped = _pyspark_artifacts()
    return [j for j in sorted(folder.glob("*.jar")) if _artifact(j) not in shipped]


def connector_dir(progress: bool = True, resolve: bool = True) -> Path:
    """Folder with the connector and all its transitive jars (resolved the first time)."""
    version = spark_version()
    return _cached(POM, {"spark.version": version}, f"spark-kafka-{version}", progress, resolve)


def preflight() -> None:
    """Fail fast if resolving the connector would need a missing `mvn`."""
    if not maven.is_resolved(connector_dir(resolve=False)):
        require_tool("mvn")


def _artifact(jar: Path) -> str:
    match = _VERSIONED.match(jar.name)
    return match.group("name") if match else jar.stem


def _pyspark_artifacts() -> set[str]:
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    return {_artifact(j) for j in jars.glob("*.jar")}


def connector_jars(progress: bool = False) -> list[Path]:
    """Jars to add to ``spark.jars`` for the Kafka source/sink, minus those pyspark already ships."""
    return _not_shipped(connector_dir(progress))


def hadoop_version() -> str:
    """The Hadoop version pyspark ships (hadoop-client-api-<v>.jar): hadoop-aws must match it."""
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    if not jars:
        raise RuntimeError("pyspark ships no hadoop-client-api jar")
    return jars[0].name[len("hadoop-client-api-"):-len(".jar")]


def s3a_dir(progress: bool = True, resolve: bool = True) -> Path:
    """Folder with hadoop-aws (Spark's s3a filesystem) and the AWS SDK jars it needs (resolved the first time)."""
    version = hadoop_version()
    return _cached(S3A_POM, {"hadoop.version": version}, f"{S3A_JARS_PREFIX}{version}", progress, resolve)


def s3a_jars(progress: bool = False) -> list[Path]:
    """Jars to add to ``spark.jars`` for ``s3a://`` paths, minus those pyspark already ships."""
    return _not_shipped(s3a_dir(progress))
