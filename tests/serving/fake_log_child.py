"""A stand-in for the prediction log's child process (``bentos.prediction_log_process``): reads the same
frames, writes each entry's request id to a file and reports it delivered; with ``crash-once`` the first
child started (no marker file yet) exits after its first frame without reporting anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bentos.prediction_log import Batch, Message
from bentos.prediction_log_process import Receiver, read_frame
from core.prediction_messages import batch_records


def _ids(e) -> list[str]:
    if isinstance(e, Batch):
        return e.ids
    if isinstance(e, Message):
        return [rid.decode() for _, _, rid in batch_records(e.value)]
    return [e[0]]


def main() -> None:
    mode, out_path = sys.argv[1], Path(sys.argv[2])
    marker = out_path.with_suffix(".crashed")
    crash = mode == "crash-once" and not marker.exists()
    receiver, delivered = Receiver(), 0
    while (body := read_frame(sys.stdin.buffer)) is not None:
        entries = receiver.entries(body)
        if crash and entries:
            marker.touch()
            sys.exit(3)
        ids = [i for e in entries for i in _ids(e)]
        with out_path.open("a") as f:
            f.writelines(f"{i}\n" for i in ids)
        delivered += len(ids)
        status = {"delivered": delivered, "drops": {}, "connected": True}
        sys.stdout.buffer.write(json.dumps(status).encode() + b"\n")
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
