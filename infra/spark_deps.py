"""Spark's Kafka connector (spark-sql-kafka-0-10) pre-resolved from Maven Central, so a streaming job starts offline.

Pass the result to Spark: ``.config("spark.jars", ",".join(str(p) for p in connector_jars()))``.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.settings import REPO_ROOT, settings
from infra import maven
from infra.proc import require_tool

POM = REPO_ROOT / "infra" / "spark" / "pom.xml"
_VERSIONED = re.compile(r"^(?P<name>.+?)-\d[^/]*\.jar$")


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def connector_dir(progress: bool = True, resolve: bool = True) -> Path:
    """Folder with the connector and all its transitive jars (resolved the first time)."""
    version = spark_version()
    out = settings().cache_dir / f"spark-kafka-{version}"
    if resolve:
        maven.resolve(POM, {"spark.version": version}, out, progress=progress)
    return out


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
    shipped = _pyspark_artifacts()
    return [j for j in sorted(connector_dir(progress).glob("*.jar")) if _artifact(j) not in shipped]
