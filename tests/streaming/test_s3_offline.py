"""The stream job's offline rows on a real S3 API (local s3proxy): a crash after a micro-batch's offline write
and before its commit replays the batch under the same object name: nothing lost, nothing duplicated."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pandas as pd
import pytest

from core import storage
from streaming.processor import job_counters
from tests.streaming.helpers import publish
from tests.streaming.test_restart import Crash, _check, _events, _sentinel

pytestmark = pytest.mark.integration


def test_crash_after_offline_write_replays_exactly_once_on_s3(stream_job, feast_store, s3_data_dir):
    events = _events(77, 120, span=timedelta(minutes=3))
    offline = {v.name: f"{s3_data_dir}/{v.name}" for v in stream_job.spec.views}
    job_name = f"s3{uuid.uuid4().hex[:6]}"
    publish(stream_job.topic, events[:50])
    crashed = {"done": False, "armed": False}

    def fault(batch_id: int, at: str) -> None:
        if at == "before_state" and crashed["armed"] and not crashed["done"]:  # offline objects already written
            crashed["done"] = True
            raise Crash(f"simulated crash after the offline write of batch {batch_id}")

    job = stream_job(fault_hook=fault, job_name=job_name, offline_dirs=offline)
    query = job.start()
    query.processAllAvailable()
    crashed["armed"] = True
    publish(stream_job.topic, events[50:])
    with pytest.raises(Exception, match="simulated crash"):
        query.processAllAvailable()
    job.close()
    restarted = stream_job(job_name=job_name, offline_dirs=offline)
    q2 = restarted.start()
    q2.processAllAvailable()
    events = events + [_sentinel(events)]
    publish(stream_job.topic, events[-1:])
    q2.processAllAvailable()
    restarted.stop()
    counters = job_counters(restarted.options.checkpoint(), stream_job.spec)
    rows = {}
    for name, url in offline.items():
        folder = storage.location(url)
        names = [p.name for p in folder.glob("")]
        assert names and all(n.startswith(f"stream-{job_name}-b") for n in names)
        rows[name] = folder.read_pandas() if names else pd.DataFrame()
    _check(events, stream_job.spec.views, feast_store, rows, counters)
