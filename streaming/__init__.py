"""Streaming: transaction simulator/producer, and the stream feature job with its backfill.

Stream job (``rtml stream``): :mod:`streaming.stream_job` wires Spark's Kafka source,
:mod:`streaming.parsing` (JSON parse + validation -> dead letters), the tile rows and native tile
aggregation of :mod:`streaming.state_schema` (state in Spark's RocksDB state store; window semantics in
:mod:`streaming.tiles`), and :mod:`streaming.writer` (``foreachBatch`` on the executors: Redis tiles and
Feast rows via :mod:`streaming.tile_store` and :mod:`core.online_store`, dead letters to Kafka).
:mod:`streaming.evolution` hands over to a new state layout after ``feast apply``; :mod:`streaming.metrics`
holds the Prometheus metrics and :mod:`streaming.batch_log` the job's counters per micro-batch (bounded).

Backfill (``rtml backfill``): :mod:`streaming.backfill` computes the offline rows (and, optionally, the
online tiles) from the raw event log with the same tile code.

The former driver-side job, the benchmark's baseline, lives in :mod:`tests.benchmarks.baseline`.
"""
