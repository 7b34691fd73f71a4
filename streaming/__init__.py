"""Streaming: transaction simulator/producer, and the stream feature job with its backfill.

Stream job (``rtml stream``): :mod:`streaming.stream_job` wires Spark's Kafka source,
:mod:`streaming.parsing` (JSON parse + validation -> dead letters) and :mod:`streaming.processor`
(per micro-batch: watermark, :mod:`streaming.aggregates` exact windowed features from the registry's
StreamFeatureViews (:mod:`streaming.feature_specs`), :class:`core.online_store.OnlineStore` Redis in Feast's
format, :mod:`streaming.offline_writer` Parquet, :mod:`streaming.state_store` versioned state in the
checkpoint folder, :mod:`streaming.metrics` Prometheus).

Backfill (``rtml backfill``): :mod:`streaming.backfill` runs the same aggregates over the raw history
with Spark, then :mod:`streaming.materialize` loads the latest rows into Redis.
"""
