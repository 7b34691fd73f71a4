"""API keys of the prediction service: salted hashes on disk, scopes per endpoint, per-key rate limits.

A key is ``rtml_<id>_<secret>``, sent as ``Authorization: Bearer <key>``. The server keeps only
``sha256(salt + secret)`` per id in ``<state_dir>/secrets/api_keys.json`` (mode 0600), written by
``rtml keys create|list|revoke``. Every endpoint but the health probes needs a key whose scope covers it:

============================  ==============================
``/predict``                  ``predict`` (or ``admin``)
``/predict_batch``            ``predict_batch`` (or ``admin``)
``/metrics``                  ``metrics`` (or ``admin``): its own credential, for Prometheus
anything else (docs, schema)  ``admin``
============================  ==============================

Answers: 401 when the key is missing, malformed, unknown, wrong or revoked (one message for all, so a
caller cannot tell whether a key exists), 403 when a valid key's scope does not cover the endpoint,
429 past the key's rate (token bucket, ``Retry-After``). The middleware re-reads the key file when it
changes (checked at most once a second), so a revoked key stops working within seconds, with no restart.
Verified keys are cached by token, so the hot path costs one dict lookup and a token bucket update.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import UserFacingError
from core.settings import settings

SCOPES = ("predict", "predict_batch", "metrics", "admin")
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz"})
SCOPE_OF_PATH = {"/predict": "predict", "/predict_batch": "predict_batch", "/metrics": "metrics"}
DEFAULT_RATE_PER_S = 2000.0
RELOAD_EVERY_S = 1.0
PREFIX = "rtml_"


def keys_path() -> Path:
    """``RTML_API_KEYS_FILE`` (a deployment mounts the file from a Secret), else the state dir's."""
    configured = settings().serving.api_keys_file
    return Path(configured) if configured else settings().state_dir / "secrets" / "api_keys.json"


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the key file (management side)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"keys": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserFacingError(f"{path} is corrupt ({exc}); fix it or revoke and recreate the keys") from None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".api_keys.", suffix=".json")
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def create_key(name: str, scopes: list[str], rate_per_s: float = DEFAULT_RATE_PER_S, path: Path | None = None) -> str:
    """Create a key; returns the token (shown once: only its salted hash is stored)."""
    bad = sorted(set(scopes) - set(SCOPES))
    if bad or not scopes:
        raise UserFacingError(f"unknown scope(s) {bad or scopes}; choose from {', '.join(SCOPES)}")
    if rate_per_s <= 0:
        raise UserFacingError("--rate must be positive")
    path = path or keys_path()
    data = _read(path)
    key_id = secrets.token_hex(4)
    while key_id in data["keys"]:
        key_id = secrets.token_hex(4)
    secret, salt = secrets.token_urlsafe(24), secrets.token_hex(16)
    data["keys"][key_id] = {
        "name": name, "scopes": sorted(set(scopes)), "rate_per_s": float(rate_per_s), "salt": salt,
        "hash": _hash(salt, secret), "created_at": _now(), "revoked_at": None,
    }
    _write(path, data)
    return f"{PREFIX}{key_id}_{secret}"


def list_keys(path: Path | None = None) -> list[dict[str, Any]]:
    """Every key's id, name, scopes, rate and dates (never its hash or salt)."""
    rows = []
    for key_id, k in _read(path or keys_path())["keys"].items():
        rows.append({"id": key_id, **{f: k.get(f) for f in ("name", "scopes", "rate_per_s", "created_at", "revoked_at")}})
    return rows


def revoke_key(key_id: str, path: Path | None = None) -> dict[str, Any]:
    """Revoke a key by id (or by its token); returns its record."""
    if key_id.startswith(PREFIX):
        key_id = key_id[len(PREFIX):].split("_", 1)[0]
    path = path or keys_path()
    data = _read(path)
    key = data["keys"].get(key_id)
    if key is None:
        raise UserFacingError(f"no API key with id {key_id!r}; see `rtml keys list`")
    if key["revoked_at"] is None:
        key["revoked_at"] = _now()
        _write(path, data)
    return {"id": key_id, "name": key["name"], "scopes": key["scopes"], "revoked_at": key["revoked_at"]}


# ---------------------------------------------------------------- verification (serving side)


@dataclass
class _Bucket:
    """Token bucket: ``rate`` tokens a second, holding at most ``max(rate, 1)`` (a rate below 1/s still lets
    one request through every ``1/rate`` seconds)."""

    rate: float
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True)
class _Key:
    key_id: str
    scopes: frozenset[str]
    bucket: _Bucket


class KeyVerifier:
    """Checks bearer tokens against the key file; reloads it when it changes."""

    def __init__(self, path: Path | None = None, clock=time.monotonic):
        self.path = path or keys_path()
        self.clock = clock
        self._mtime: float | None = None
        self._checked = -1e9
        self._keys: dict[str, dict[str, Any]] = {}
        self._valid: dict[bytes, _Key] = {}  # token -> verified key (cleared on reload)
        self._buckets: dict[str, _Bucket] = {}

    def _maybe_reload(self, now: float) -> None:
        if now - self._checked < RELOAD_EVERY_S:
            return
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime = mtime
        self._keys = _read(self.path)["keys"] if mtime is not None else {}
        self._valid = {}

    def check(self, token: bytes | None, scope: str) -> tuple[int, str | None]:
        """(0, None) when allowed, else (HTTP status, reason)."""
        now = self.clock()
        self._maybe_reload(now)
        key = self._valid.get(token) if token else None
        if key is None:
            key = self._verify(token, now)
            if key is None:
                return 401, "missing or invalid API key"
        if scope not in key.scopes and "admin" not in key.scopes:
            return 403, f"this API key's scope does not cover {scope}"
        if not key.bucket.take(now):
            return 429, "rate limit of this API key exceeded"
        return 0, None

    def _verify(self, token: bytes | None, now: float) -> _Key | None:
        if not token or not token.startswith(PREFIX.encode()):
            return None
        key_id, _, secret = token[len(PREFIX):].decode("ascii", "replace").partition("_")
        record = self._keys.get(key_id)
        if record is None or record.get("revoked_at") or not secret:
            return None
        if not hmac.compare_digest(_hash(record["salt"], secret), record["hash"]):
            return None
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.rate != record["rate_per_s"]:
            bucket = self._buckets[key_id] = _Bucket(record["rate_per_s"], max(record["rate_per_s"], 1.0), now)
        key = _Key(key_id, frozenset(record["scopes"]), bucket)
        if len(self._valid) > 10_000:  # bounded: random tokens must not grow it
            self._valid.clear()
        self._valid[token] = key
        return key


class ApiKeyMiddleware:
    """Pure ASGI middleware (cheap on the hot path): bearer-token auth, scopes and rate limits."""

    def __init__(self, app, verifier: KeyVerifier | None = None):
        self.app = app
        self.verifier = verifier or KeyVerifier()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        token = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if value[:7].lower() == b"bearer ":
                    token = value[7:].strip()
                break
        status, reason = self.verifier.check(token, SCOPE_OF_PATH.get(scope["path"], "admin"))
        if status == 0:
            return await self.app(scope, receive, send)
        headers = [(b"content-type", b"application/json")]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="rtml"'))
        elif status == 429:
            headers.append((b"retry-after", b"1"))
        body = json.dumps({"error": reason}).encode()
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
