"""Safe defaults: a bounded micro-batch in the code, the CLI and both deployment manifests (one value)."""

from __future__ import annotations

from pathlib import Path

import yaml

from streaming.stream_job import DEFAULT_MAX_OFFSETS_PER_TRIGGER, StreamOptions

ROOT = Path(__file__).resolve().parents[2]


def _flag(args: list[str]) -> int:
    return int(args[args.index("--max-offsets-per-trigger") + 1])


def test_max_offsets_per_trigger_is_bounded_everywhere():
    import argparse

    from streaming.commands.stream import add_arguments

    assert 0 < DEFAULT_MAX_OFFSETS_PER_TRIGGER <= 1_000_000
    assert StreamOptions().max_offsets_per_trigger == DEFAULT_MAX_OFFSETS_PER_TRIGGER
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert parser.parse_args([]).max_offsets_per_trigger == DEFAULT_MAX_OFFSETS_PER_TRIGGER
    compose = yaml.safe_load((ROOT / "infra" / "docker-compose.yml").read_text())
    assert _flag(compose["services"]["stream"]["command"]) == DEFAULT_MAX_OFFSETS_PER_TRIGGER
    docs = list(yaml.safe_load_all((ROOT / "infra" / "k8s" / "stream-job.yaml").read_text()))
    app = next(d for d in docs if d and d.get("kind") == "SparkApplication")
    assert _flag(app["spec"]["arguments"]) == DEFAULT_MAX_OFFSETS_PER_TRIGGER
    conf = app["spec"]["sparkConf"]
    assert conf["spark.sql.streaming.stateStore.providerClass"].endswith("RocksDBStateStoreProvider")
    assert conf["spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled"] == "true"
    from streaming.spark_session import STATE_STORE_CONF

    assert {k: conf.get(k) for k in STATE_STORE_CONF} == STATE_STORE_CONF  # the manifest runs the session's state store
