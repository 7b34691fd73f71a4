"""Seeded, deterministic card-transaction simulator: history to Parquet, live events to Kafka.

Public API (the implementation lives in :mod:`streaming.simulation`):

- :func:`simulate_history` writes ``users.parquet``, ``merchants.parquet``,
  ``transactions/part-YYYYMMDD.parquet`` and ``labels.parquet`` under the data dir.
- :func:`iter_live_events` / :func:`live_events_frame` give the exact events the live producer
  (:func:`streaming.producer.stream_live`) sends, for tests and benchmarks.
- :class:`Scenario` switches on a named drift (``amount_shift``, ``merchant_mix``,
  ``new_fraud_pattern``) at ``starts_at``.
"""

from __future__ import annotations

from streaming.simulation.history import HistorySummary, simulate_history
from streaming.simulation.population import Population, make_population
from streaming.simulation.scenarios import SCENARIO_NAMES, Scenario

__all__ = [
    "SCENARIO_NAMES",
    "HistorySummary",
    "Population",
    "Scenario",
    "make_population",
    "simulate",
    "simulate_history",
]

simulate = simulate_history  # the name COMMON.md announced

from streaming.simulation.live import (  # noqa: E402
    iter_live_batches,
    iter_live_events,
    live_events_frame,
    natural_rate_per_s,
)

__all__ += ["iter_live_batches", "iter_live_events", "live_events_frame", "natural_rate_per_s"]
