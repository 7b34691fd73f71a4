"""The prediction log in its own process: the serving worker hands predictions over, a child process
sends them to Kafka.

Building and sending a record costs ~9 us of CPU under the GIL (record dict, JSON, librdkafka's
``produce``): ~0.9 ms for a 100-row ``/predict_batch``, and the thread doing it in the worker slows the
request thread it interleaves with. Here the worker's side only queues (the same never-blocking
bounded deque as :class:`~bentos.prediction_log.PredictionLog`), and one thread wakes when a request
has queued ``wake_at`` entries or more (:meth:`PredictionLogProcess.request_done`, a ``/predict_batch``)
or else every ``flush_interval_s``, scores shadow predictions (as before, many rows per XGBoost call),
and writes the queued entries to the child's stdin as one msgpack frame (~25 us per 100 entries).
Handing a batch's entries over right after it, instead of ~15 batches' every 50 ms, spreads that work
evenly over requests: the periodic burst had made every ~15th 100-row request 3-6 ms slower (p99 at
concurrency 1: 8.2-9.7 ms, against 6.4-7.1 ms woken after each batch, same machine and session). The child
(``python -m bentos.prediction_log_process``) runs :class:`~bentos.prediction_log.PredictionLog`
unchanged: same records, same Kafka producer, same reconnects.

A ``/predict_batch``'s entries (a :class:`~bentos.prediction_log.Batch`) are handed over as the finished
Kafka message: the hand-over thread encodes it in the columns shape of :mod:`core.prediction_messages`
(~25 us for 100 records) and the child produces it as it is. Decoding the batch and re-encoding it as
JSON in the child had cost ~0.7 ms of CPU per 100-row request on a 2-core machine, and that CPU, not the
worker's, made the 100-row p99 at concurrency 1 7.0-7.4 ms against 4.3-4.8 ms (same machine and hour).
A batch that cannot be encoded so goes over in columns as before (``"b"`` frames) and the child's log
sends its records one by one, or counts them.

Nothing is lost silently. The child reports on stdout how many records were delivered and how many
dropped, by reason; the worker adds the drops to ``rtml_serving_prediction_log_dropped_total``. When
the child dies, every entry handed to it and not reported is counted as ``send_failed`` and a new
child starts; entries that cannot be handed over (no child, a full pipe for long) wait in the bounded
queue, which drops and counts (``queue_full``) when full. At shutdown the child drains and flushes
(``drain_s``); what is then still unreported is counted as ``shutdown``.

Wire: frames of a 4-byte big-endian length and a msgpack body, either ``["v", key, tag, name,
features]`` (a variant, once per child), ``["e", [entry, ...]]`` (entries with the variant replaced
by its key), ``["m", kafka key, timestamp ms, records, value]`` (a batch message to produce as it is) or
``["b", ...]`` (a :class:`~bentos.prediction_log.Batch` in columns, :func:`batch_frame`). Status lines:
JSON ``{"delivered": n, "drops": {reason: n}, "connected": bool}``, totals.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import IO, Any

import msgspec
import numpy as np

from bentos.prediction_log import Batch, Entry, Message, PredictionLog, batch_messages, records

log = logging.getLogger(__name__)

_ROOT = str(Path(__file__).resolve().parents[1])
REASONS = ("queue_full", "send_failed", "shutdown")
_LEN = struct.Struct(">I")
_pack = msgspec.msgpack.Encoder().encode
_unpack = msgspec.msgpack.Decoder().decode


def variant_key(v: Any) -> str:
    """A variant's wire key: its name and model tag (the same tag is the same model and features)."""
    return f"{v.name}|{v.tag}"


def frame(body: Any) -> bytes:
    """One wire frame: length prefix + msgpack ``body``."""
    raw = _pack(body)
    return _LEN.pack(len(raw)) + raw


def read_frame(stream: IO[bytes]) -> Any | None:
    """The next frame's body from ``stream``, or ``None`` at its end."""
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = _LEN.unpack(head)
    raw = stream.read(n)
    return _unpack(raw) if len(raw) == n else None


def batch_frame(b: Batch) -> list:
    """The wire body of a :class:`~bentos.prediction_log.Batch`: its columns, the feature matrix as float64 bytes."""
    rows = b.rows if isinstance(b.rows, np.ndarray) else np.asarray(b.rows, dtype=np.float64).reshape(b.n, -1)
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    return ["b", variant_key(b.variant), b.ids, b.keys, b.times, b.predicted, b.scores, b.decisions, rows.tobytes(),
            rows.shape[1], b.missing, b.ages, b.served, b.seconds]


def _batch_frames(b: Batch) -> list[bytes]:
    """The frames of a request batch: its finished batch message(s), or, when it cannot be encoded as one, its
    columns (the child sends the records one by one or counts them)."""
    try:
        messages = batch_messages(b)
    except (TypeError, ValueError, OverflowError, AttributeError, KeyError, msgspec.EncodeError):
        return [frame(batch_frame(b))]
    return [frame(["m", m.key, m.timestamp_ms, m.n, m.value]) for m in messages]


class Receiver:
    """The child's side of the wire: turns frames back into :class:`PredictionLog` entries."""

    def __init__(self) -> None:
        self.variants: dict[str, SimpleNamespace] = {}

    def entries(self, body: Sequence) -> list[Entry | Batch | Message]:
        """The entries of one frame (none for a variant frame, which is remembered)."""
        if body[0] == "m":
            _, key, timestamp_ms, n, value = body
            return [Message(key, value, timestamp_ms, n)]
        if body[0] == "v":
            _, key, tag, name, features = body
            self.variants[key] = SimpleNamespace(tag=tag, name=name, features=list(features),
                                                 model_version=tag.split(":", 1)[1])
            return []
        if body[0] == "b":
            _, key, ids, keys, times, predicted, scores, decisions, raw, width, missing, ages, served, seconds = body
            rows = np.frombuffer(raw, dtype=np.float64).reshape(len(ids), width)
            return [Batch(ids, keys, times, predicted, scores, decisions, rows, missing, ages, self.variants[key],
                          served, seconds)]
        variants = self.variants
        return [(*e[:8], variants[e[8]], *e[9:]) for e in body[1]]


class PredictionLogProcess:
    """Drop-in for :class:`PredictionLog` in the serving worker: ``put`` / ``start`` / ``stop``, with
    the records built and sent by a child process."""

    def __init__(
        self,
        id_field: str,
        entity_keys: Sequence[str],
        maxsize: int = 10_000,
        on_drop: Callable[[str, int], None] | None = None,
        flush_interval_s: float = 0.05,
        drain_s: float = 10.0,
        restart_s: float = 1.0,
        command: Sequence[str] | None = None,
        nice: int = 10,
        wake_at: int = 64,
    ):
        self.id_field = id_field
        self.entity_keys = list(entity_keys)
        self.maxsize = maxsize
        self.queue: collections.deque[Entry | Batch] = collections.deque()
        self.put_count = self.taken = 0  # predictions queued / taken off the queue (one writer each)
        self.on_drop = on_drop or (lambda reason, n: None)
        self.flush_interval_s = flush_interval_s
        self.wake_at = wake_at
        self.drain_s = drain_s
        self.restart_s = restart_s
        self.nice = nice
        self.command = list(command or [sys.executable, "-m", "bentos.prediction_log_process"])
        self.dropped = 0  # every record counted as dropped, by the worker or the child
        self.delivered = 0
        self.connected = False
        self.restarts = 0
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by request_done (and stop): hand over now
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._child: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()  # the current child's counters (reader thread vs this thread)
        self._handed = 0  # entries written to the current child
        self._reported = 0  # of those, delivered or dropped as the child reported
        self._delivered = 0  # the current child's reported delivered total
        self._drops: dict[str, int] = {}  # the current child's reported drop totals
        self._variants: set[str] = set()  # variant keys the current child knows

    # ---- the request path -------------------------------------------------------------------------
    def put(self, entry: Entry | Batch) -> None:
        """Enqueue one prediction (or a :class:`~bentos.prediction_log.Batch`); never blocks (drops and counts
        when the queue is full)."""
        n = entry.n if entry.__class__ is Batch else 1
        if self.put_count - self.taken + n > self.maxsize:
            self._drop("queue_full", n)
        else:
            self.queue.append(entry)
            self.put_count += n

    def put_batch(self, ids: list[str], reqs: list[dict], now: float, scores: list[float], decisions: list[str],
                  rows, missing: list[list[str]], ages: list, variant: Any, seconds: float | None) -> None:
        """Enqueue the served predictions of one request batch (one variant; ``rows``: its float64 input
        matrix) as one :class:`~bentos.prediction_log.Batch`: handed over in columns, sent as one message."""
        n = len(ids)
        keys = {f: [r[f] for r in reqs] for f in dict.fromkeys((self.id_field, *self.entity_keys))}
        self.put(Batch(ids, keys, [r.get("timestamp") for r in reqs], [now] * n, scores, decisions, rows, missing,
                       ages, variant, [True] * n, [seconds] * n))

    def request_done(self) -> None:
        """End of a request's puts: wake the hand-over thread now if ``wake_at`` predictions or more are queued
        (a batch's), so they go over right after it instead of in a burst with many other requests'."""
        if self.put_count - self.taken >= self.wake_at:
            self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Hand over what is queued, let the child send and flush it (at most ``drain_s``), then stop."""
        self._stop.set()
        self._wake.set()
        self._thread.join(self.drain_s + 10 if timeout is None else timeout)

    # ---- accounting -------------------------------------------------------------------------------
    def _drop(self, reason: str, n: int) -> None:
        if n > 0:
            self.dropped += n
            self.on_drop(reason, n)

    def _status(self, line: bytes) -> None:
        """A status line of the current child: add what it newly reports."""
        s = json.loads(line)
        with self._lock:
            delivered = s["delivered"] - self._delivered
            self._delivered = s["delivered"]
            self.delivered += delivered
            self._reported += delivered
            for reason, total in s["drops"].items():
                new = total - self._drops.get(reason, 0)
                self._drops[reason] = total
                self._reported += new
                self._drop(reason, new)
            self.connected = bool(s["connected"])

    def _read_status(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            try:
                self._status(line)
            except (ValueError, KeyError):  # not a status line: the child's own problem, logged there
                log.debug("prediction log child: %r", line[:200])

    # ---- the child --------------------------------------------------------------------------------
    def _spawn(self) -> bool:
        args = json.dumps({"id_field": self.id_field, "entity_keys": self.entity_keys, "maxsize": self.maxsize,
                           "drain_s": self.drain_s, "nice": self.nice})
        env = dict(os.environ)  # the child imports this package from where the worker does
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
        try:
            child = subprocess.Popen([*self.command, args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        except OSError as exc:
            log.warning("prediction log: cannot start its process (%s); retrying in %.0f s", exc, self.restart_s)
            return False
        with self._lock:
            self._handed = self._reported = self._delivered = 0
            self._drops = {}
        self._variants = set()
        self._child = child
        self._reader = threading.Thread(target=self._read_status, args=(child.stdout,), name="prediction-log-status",
                                        daemon=True)
        self._reader.start()
        return True

    def _reap(self, reason: str) -> None:
        """The current child has ended (or is ending): wait for its last status, count the unreported."""
        child, self._child = self._child, None
        if child is None:
            return
        try:
            child.stdin.close()
        except OSError:
            pass
        try:
            child.wait(self.drain_s + 5)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if self._reader is not None:
            self._reader.join(5)
        with self._lock:
            lost = self._handed - self._reported
            self._handed = self._reported
        self._drop(reason, lost)
        self.connected = False

    def _write(self, data: bytes) -> bool:
        try:  # buffered: a large frame is written whole, then flushed to the child at once
            self._child.stdin.write(data)
            self._child.stdin.flush()
            return True
        except (OSError, ValueError):  # the child is gone (broken pipe) or its stdin closed
            return False

    def _hand_over(self, entries: list[Entry | Batch]) -> bool:
        """Write ``entries`` (shadows scored) to the child; False when it is gone (they count as lost)."""
        wire = []
        batches = []
        new: dict[str, Any] = {}  # variants the child does not know yet: sent before the entries
        for e in PredictionLog.score_shadow([e for e in entries if e.__class__ is not Batch]):
            v = e[8]
            key = variant_key(v)
            if key not in self._variants and key not in new:
                new[key] = v
            wire.append((*e[:8], key, *e[9:]))
        for b in (e for e in entries if e.__class__ is Batch):
            key = variant_key(b.variant)
            if key not in self._variants and key not in new:
                new[key] = b.variant
            batches.append(b)
        n = len(wire) + records(batches)
        try:
            parts = [frame(["v", key, v.tag, v.name, list(v.features)]) for key, v in new.items()]
            if wire:
                parts.append(frame(["e", wire]))
            parts += [f for b in batches for f in _batch_frames(b)]
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:  # a value msgpack cannot carry: counted
            log.warning("prediction log: %d records cannot be encoded (%s)", n, exc)
            self._drop("send_failed", n)
            return True
        self._variants.update(new)
        with self._lock:
            self._handed += n
        return self._write(b"".join(parts))

    def _run(self) -> None:
        q = self.queue
        while True:
            stopping = self._stop.is_set()
            if self._child is not None and self._child.poll() is not None:
                log.warning("prediction log process exited (code %s); starting a new one", self._child.returncode)
                self._reap("send_failed")
                self.restarts += 1
            if self._child is None and not self._spawn():
                if stopping:
                    break
                self._stop.wait(self.restart_s)
                continue
            if not q:
                if stopping:
                    break
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()  # before taking the queue: a later request_done wakes the next round
                continue
            entries = [q.popleft() for _ in range(len(q))]
            self.taken += records(entries)
            if not self._hand_over(entries):
                self._reap("send_failed")
                self.restarts += 1
        self._reap("shutdown")
        if q:
            left = records(q)
            self.taken += left
            self._drop("shutdown", left)
            q.clear()


# ---- the child process ------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    """Child: read frames from stdin into a :class:`PredictionLog`, report totals on stdout; at the end of
    stdin drain, flush and report the last totals."""
    args = json.loads((argv or sys.argv[1:])[0])
    os.nice(args.get("nice", 0))  # background work: the worker's request thread comes first on a busy CPU
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s prediction-log: %(message)s")
    drops = dict.fromkeys(REASONS, 0)
    out = sys.stdout.buffer
    out_lock = threading.Lock()

    def on_drop(reason: str, n: int) -> None:
        drops[reason] = drops.get(reason, 0) + n

    plog = PredictionLog(args["id_field"], args["entity_keys"], maxsize=args["maxsize"], on_drop=on_drop,
                         drain_s=args["drain_s"], chunk=1024)  # its own process: no event loop to yield the GIL to
    last: list[Any] = [None]

    def report() -> None:
        status = {"delivered": plog.delivered, "drops": dict(drops), "connected": plog.connected}
        if status != last[0]:
            with out_lock:
                out.write(json.dumps(status).encode() + b"\n")
                out.flush()
            last[0] = status

    done = threading.Event()

    def reporter() -> None:
        while not done.wait(0.2):
            report()

    plog.start()
    threading.Thread(target=reporter, name="status", daemon=True).start()
    receiver = Receiver()
    stdin = sys.stdin.buffer
    while (body := read_frame(stdin)) is not None:
        for e in receiver.entries(body):
            plog.put(e)
    plog.stop()
    done.set()
    report()


if __name__ == "__main__":
    main()
