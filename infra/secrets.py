"""Generated credentials of the local stack: random passwords in private files under ``<state_dir>/secrets/``.

Folder mode 0700, files 0600, written atomically; never printed or logged, never in the repository.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (atomically: a temp file renamed over ``path``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_passwords(path: Path, users: Iterable[str], extra: Iterable[str] = ()) -> dict[str, Any]:
    """``{"users": {user: password}, <extra>: password}`` from ``path``, generating what is missing (once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        data = {"users": {}}
    changed = not path.exists()
    for name in extra:
        if name not in data:
            data[name] = secrets.token_urlsafe(24)
            changed = True
    for user in users:
        if user not in data["users"]:
            data["users"][user] = secrets.token_urlsafe(24)
            changed = True
    if changed:
        write_private(path, json.dumps(data, indent=2))
    os.chmod(path, 0o600)
    return data
