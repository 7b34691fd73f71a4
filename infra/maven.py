"""Resolve jars from Maven Central into a cache folder with `mvn dependency:copy-dependencies` (once, then reused)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

from core.errors import UserFacingError
from core.settings import settings
from infra.proc import require_tool

DONE_MARKER = ".complete"


def is_resolved(out_dir: Path) -> bool:
    return (out_dir / DONE_MARKER).exists()


def resolve(pom: Path, properties: dict[str, str], out_dir: Path, progress: bool = True) -> list[Path]:
    """Copy the runtime dependencies of ``pom`` (with ``-Dkey=value`` properties) into ``out_dir``.

    Reuses ``out_dir`` when a previous resolution completed. Safe when several processes resolve
    the same folder at once: a file lock serialises them and the folder appears atomically.
    """
    if not is_resolved(out_dir):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(out_dir.parent / f".{out_dir.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not is_resolved(out_dir):
                _run_mvn(pom, properties, out_dir, progress)
    return sorted(out_dir.glob("*.jar"))


def _run_mvn(pom: Path, properties: dict[str, str], out_dir: Path, progress: bool) -> None:
    mvn = require_tool("mvn")
    tmp = out_dir.with_name(f"{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        *(f"-D{k}={v}" for k, v in properties.items()),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
    ]
    if progress:
        print(f"resolving {out_dir.name} jars from Maven Central (first time only) ...", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=settings().mvn_timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserFacingError(
            f"Maven did not finish resolving {out_dir.name} within {settings().mvn_timeout_s:.0f} s; "
            "check network access to Maven Central (or set RTML_MVN_TIMEOUT) and retry."
        ) from exc
    if done.returncode != 0 or not any(tmp.glob("*.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        last = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise UserFacingError(f"Maven could not resolve {out_dir.name} (`{' '.join(cmd)}`):\n{last}")
    (tmp / DONE_MARKER).write_text(f"resolved in {time.monotonic() - started:.1f} s\n")
    if out_dir.exists():  # an incomplete earlier attempt
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    if progress:
        print(
            f"resolved {len(list(out_dir.glob('*.jar')))} jars into {out_dir} in {time.monotonic() - started:.1f} s",
            flush=True,
        )
