"""Baseline only (benchmarks): the former driver-side stream job, measured beside :mod:`streaming.stream_job`.

:mod:`.driver_job` wires Spark's Kafka source to :mod:`.processor` (exact per-event windows in pandas/numba
on the driver, its whole raw-event state in :mod:`.state_store`, seeded by :mod:`.warm_start`), and
:mod:`.online_writer` holds the plain-Feast online writer (``FeastOnlineWriter``: Feast's own
``online_write_batch``), which the tests also use to check that rtml's online store writes Feast's bytes.
"""
