"""Spark reads Kafka through the pre-resolved connector jars (`spark.jars`), with no download at job start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from core.kafka_io import make_producer
from infra.spark_deps import connector_jars

pytestmark = pytest.mark.integration

# Own process: a SparkSession created elsewhere in the test session (without these jars) cannot interfere.
READER = textwrap.dedent(
    """
    import json, sys
    from pyspark.sql import SparkSession
    from core.kafka_io import spark_kafka_options
    bootstrap, topic, jars = sys.argv[1], sys.argv[2], sys.argv[3]
    spark = (SparkSession.builder.master("local[1]").appName("rtml-connector-check")
             .config("spark.jars", jars).config("spark.ui.enabled", "false")
             .config("spark.jars.ivy", "/nonexistent-no-downloads").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    rows = (spark.read.format("kafka").options(**spark_kafka_options("admin", bootstrap)).option("subscribe", topic)
            .option("startingOffsets", "earliest").load()
            .selectExpr("CAST(key AS STRING) AS k", "CAST(value AS STRING) AS v", "timestamp").collect())
    print(json.dumps([[r.k, json.loads(r.v)["i"], int(r.timestamp.timestamp() * 1000)] for r in rows]))
    spark.stop()
    """
)


def test_connector_jars_exclude_what_pyspark_ships():
    names = [p.name for p in connector_jars()]
    assert any(n.startswith("spark-sql-kafka-0-10_2.13-") for n in names)
    assert any(n.startswith("kafka-clients-") for n in names)
    assert not any(n.startswith(("scala-library-", "hadoop-client-", "slf4j-api-")) for n in names)


def test_spark_batch_read_from_kafka_with_connector_jars(stack, kafka_topic):
    topic = kafka_topic("spark", partitions=2)
    base_ms = 1_700_000_000_000
    sent = sorted([str(i % 7), i, base_ms + 1000 * i] for i in range(40))
    producer = make_producer(stack.kafka_bootstrap, role="admin")
    try:
        for key, i, ts in sent:
            producer.send(topic, key=key, value={"i": i}, timestamp_ms=ts)
        producer.flush(timeout=30)
    finally:
        producer.close()

    jars = ",".join(str(p) for p in connector_jars())
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    done = subprocess.run(
        [sys.executable, "-c", READER, stack.kafka_bootstrap, topic, jars],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = sorted(json.loads(done.stdout.strip().splitlines()[-1]))
    assert got == sent
