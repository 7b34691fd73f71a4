"""Security probes: what a demanding reviewer tries against the real local stack, each asserting a refusal.

A probe is a function ``(ctx) -> str`` registered with :func:`probe`: it tries one thing, returns what
happened when the stack refused it as expected, and raises :class:`Fail` (or any exception) when it did
not. Every probe authenticates with explicit credentials read from the state dir (never the session's
``RTML_KAFKA_USER`` / ``RTML_REDIS_USER`` overrides), so a role's own permissions are what is checked.

Groups: ``kafka``, ``redis`` (need the stack), ``files``, ``deploy``, ``git`` (no service), ``api``
(need a running prediction service: :mod:`tests.security.run` starts one), ``audit``.
``fast`` probes run in `make test` (tests/security/test_probes.py); `make security` runs them all.
"""

from __future__ import annotations

import re
import stat
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.contracts import domain_topics
from core.settings import REPO_ROOT, Settings


class Fail(AssertionError):
    """The stack allowed what it should have refused (or the probe could not check it)."""


@dataclass
class Context:
    """What probes need: the settings of the stack, and (api probes) the service and its keys."""

    s: Settings
    api_url: str | None = None
    keys: dict[str, str] = field(default_factory=dict)  # label -> token (predict, metrics, admin, ...)
    request: dict[str, Any] | None = None  # a valid /predict body
    restart_redis: tuple[Callable[[], Any], Callable[[], Any]] | None = None  # (stop, start) Redis: the 503 probe


@dataclass(frozen=True)
class Probe:
    name: str
    group: str
    tried: str
    expected: str
    fn: Callable[[Context], str]
    fast: bool


PROBES: list[Probe] = []


def probe(name: str, group: str, tried: str, expected: str, fast: bool = True):
    def register(fn: Callable[[Context], str]) -> Callable[[Context], str]:
        PROBES.append(Probe(name, group, tried, expected, fn, fast))
        return fn

    return register


def check(cond: bool, message: str) -> None:
    if not cond:
        raise Fail(message)


def run_probe(p: Probe, ctx: Context) -> dict[str, Any]:
    """One result entry: name, group, tried, expected, got, passed, detail, seconds."""
    started = time.monotonic()
    try:
        got = p.fn(ctx)
        passed = True
    except Exception as exc:  # noqa: BLE001 - a probe that errors did not prove the refusal
        got = f"{type(exc).__name__}: {str(exc)[:400]}"
        passed = False
    return {"name": p.name, "group": p.group, "tried": p.tried, "expected": p.expected, "got": got,
            "passed": passed, "detail": got, "seconds": round(time.monotonic() - started, 3)}


# ---------------------------------------------------------------------------------------------- Kafka
def _kafka_passwords(s: Settings) -> dict[str, str]:
    from core.kafka_io import load_secrets

    found = load_secrets(s)
    check(bool(found), "no generated Kafka credentials in the state dir (is the local broker secured?)")
    return found


def _kafka_sec(s: Settings, user: str, password: str) -> dict[str, Any]:
    return dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism=s.kafka_auth.mechanism,
                sasl_plain_username=user, sasl_plain_password=password)


def _role_sec(s: Settings, role: str) -> dict[str, Any]:
    return _kafka_sec(s, role, _kafka_passwords(s)[role])


def _broker_log(s: Settings) -> str:
    return (s.run_dir / "kafka.log").read_text(errors="replace")


def _admin_refused(s: Settings, marker: str, **security) -> str:
    from kafka.admin import KafkaAdminClient

    before = _broker_log(s).count(marker)
    try:
        client = KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap.split(","), request_timeout_ms=3000,
                                  bootstrap_timeout_ms=3000, **security)
    except Exception as exc:  # noqa: BLE001
        refused = type(exc).__name__
    else:
        client.close()
        raise Fail("the broker accepted the client")
    deadline = time.monotonic() + 5
    while _broker_log(s).count(marker) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    check(_broker_log(s).count(marker) > before, f"client failed ({refused}) but the broker logged no {marker!r}")
    return f"client: {refused}; broker log: {marker!r}"


@probe("kafka.no_credentials_refused", "kafka", "a PLAINTEXT client (no SASL) connects to the broker",
       "connection refused during the SASL handshake")
def _(ctx: Context) -> str:
    return _admin_refused(ctx.s, "Unexpected Kafka request of type METADATA during SASL handshake")


@probe("kafka.wrong_password_refused", "kafka", "user `admin` with a wrong password (SCRAM-SHA-512)",
       "SASL authentication failure")
def _(ctx: Context) -> str:
    return _admin_refused(ctx.s, "invalid credentials with SASL mechanism",
                          **_kafka_sec(ctx.s, "admin", "wrong-" + uuid.uuid4().hex))


@probe("kafka.unknown_user_refused", "kafka", "an unknown user `mallory` with some password",
       "SASL authentication failure")
def _(ctx: Context) -> str:
    return _admin_refused(ctx.s, "invalid credentials with SASL mechanism",
                          **_kafka_sec(ctx.s, "mallory", uuid.uuid4().hex))


def _write_denied(s: Settings, role: str, topic: str) -> str:
    from kafka import KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    producer = KafkaProducer(bootstrap_servers=s.kafka_bootstrap.split(","), max_block_ms=8000,
                             request_timeout_ms=8000, **_role_sec(s, role))
    try:
        producer.send(topic, b'{"probe": "security"}').get(timeout=15)
    except TopicAuthorizationFailedError as exc:
        return f"{type(exc).__name__} for {role} -> {topic}"
    finally:
        producer.close(timeout=3)
    raise Fail(f"role {role} wrote to {topic}")


def _read_denied(s: Settings, role: str, topic: str) -> str:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import TopicAuthorizationFailedError

    consumer = KafkaConsumer(bootstrap_servers=s.kafka_bootstrap.split(","), enable_auto_commit=False,
                             request_timeout_ms=10000, **_role_sec(s, role))
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        consumer.poll(timeout_ms=3000)
        consumer.position(TopicPartition(topic, 0), timeout_ms=5000)
    except TopicAuthorizationFailedError as exc:
        return f"{type(exc).__name__} for {role} <- {topic}"
    finally:
        consumer.close()
    raise Fail(f"role {role} read {topic}")


# (role, topic it must not write): every role against a topic that drives alerts, retraining or promotion
for _role, _topic in (("product", "predictions"), ("serving", "transactions"), ("stream", "labels"),
                      ("monitor", "transactions"), ("operator", "labels")):
    probe(f"kafka.{_role}_cannot_write_{_topic}", "kafka", f"role `{_role}` produces to `{_topic}`",
          "TopicAuthorizationFailed")(lambda ctx, r=_role, t=_topic: _write_denied(ctx.s, r, t))

for _role, _topic in (("product", "transactions"), ("serving", "labels"), ("stream", "predictions"),
                      ("monitor", "audit")):
    probe(f"kafka.{_role}_cannot_read_{_topic}", "kafka", f"role `{_role}` consumes `{_topic}`",
          "TopicAuthorizationFailed")(lambda ctx, r=_role, t=_topic: _read_denied(ctx.s, r, t))


@probe("kafka.stream_cannot_use_monitor_group", "kafka",
       "role `stream` consumes its own topic `transactions` in the monitor's consumer group `rtml-monitor-x`",
       "GroupAuthorizationFailed")
def _(ctx: Context) -> str:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(domain_topics().events, bootstrap_servers=ctx.s.kafka_bootstrap.split(","),
                             group_id=f"rtml-monitor-{uuid.uuid4().hex[:6]}", enable_auto_commit=False,
                             request_timeout_ms=10000, **_role_sec(ctx.s, "stream"))
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=1000)
    except Exception as exc:  # noqa: BLE001
        check("GroupAuthorization" in type(exc).__name__, f"refused, but with {type(exc).__name__}: {exc}")
        return type(exc).__name__
    finally:
        consumer.close()
    raise Fail("role stream joined the monitor's consumer group")


@probe("kafka.product_cannot_create_topics", "kafka", "role `product` creates a topic",
       "TopicAuthorizationFailed (only admin creates topics)")
def _(ctx: Context) -> str:
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"probe-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=ctx.s.kafka_bootstrap.split(","), request_timeout_ms=8000,
                             **_role_sec(ctx.s, "product"))
    try:
        try:
            result = admin.create_topics([NewTopic(name, 1, 1)])
        except Exception as exc:  # noqa: BLE001
            check("Authorization" in type(exc).__name__, f"refused, but with {type(exc).__name__}: {exc}")
            return type(exc).__name__
        errors = [e for e in getattr(result, "topic_errors", []) or [] if e[1] != 0]
        check(bool(errors), f"role product created topic {name}")
        return f"error code {errors[0][1]}"
    finally:
        admin.close()


@probe("kafka.product_cannot_grant_itself_acls", "kafka", "role `product` adds an ACL allowing itself to write `predictions`",
       "ClusterAuthorizationFailed")
def _(ctx: Context) -> str:
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePattern,
        ResourceType,
    )

    admin = KafkaAdminClient(bootstrap_servers=ctx.s.kafka_bootstrap.split(","), request_timeout_ms=8000,
                             **_role_sec(ctx.s, "product"))
    acl = ACL("User:product", "*", ACLOperation.WRITE, ACLPermissionType.ALLOW,
              ResourcePattern(ResourceType.TOPIC, ctx.s.topics.predictions, ACLResourcePatternType.LITERAL))
    try:
        try:
            result = admin.create_acls([acl])
        except Exception as exc:  # noqa: BLE001
            check("Authorization" in type(exc).__name__, f"refused, but with {type(exc).__name__}: {exc}")
            return type(exc).__name__
        check(bool(result.get("failed")) and not result.get("succeeded"), f"role product created an ACL: {result}")
        failure = result["failed"][0]
        error = failure[1] if isinstance(failure, tuple) else failure
        name = error.__name__ if isinstance(error, type) else type(error).__name__
        check("Authorization" in name, f"failed, but with {name}")
        return f"failed: {name}"
    finally:
        admin.close()


# ---------------------------------------------------------------------------------------------- Redis
def _project(s: Settings) -> str:
    return yaml.safe_load((s.feature_repo / "feature_store.yaml").read_text())["project"]


def _feast_key(s: Settings) -> bytes:
    """A key in the shape of Feast's (serialized entity key + project), unused by the real data."""
    return b"\x02\x00\x00\x00probe\x04\x00\x00\x00" + uuid.uuid4().hex.encode() + _project(s).encode()


def _redis(s: Settings, role: str | None, password: str | None = None):
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from core.redis_auth import USERS, load_secrets, tls_kwargs

    host, port = s.redis_host_port
    kw: dict[str, Any] = dict(host=host, port=port, socket_timeout=5, socket_connect_timeout=3, retry=Retry(NoBackoff(), 0),
                              **tls_kwargs(s))
    if role is not None:
        secrets = load_secrets(s)
        check(bool(secrets), "no generated Redis credentials in the state dir (is the local Redis secured?)")
        kw.update(username=USERS[role], password=password or secrets[role])
    return redis.Redis(**kw)


def _redis_refused(s: Settings, role: str | None, call: Callable[[Any], Any], expect: str, password: str | None = None) -> str:
    import redis

    client = _redis(s, role, password)
    try:
        call(client)
    except redis.RedisError as exc:
        text = f"{type(exc).__name__}: {exc}"
        check(expect.lower() in text.lower(), f"refused, but not with {expect}: {text}")
        return text[:200]
    finally:
        client.close()
    raise Fail(f"{role or 'anonymous'} was allowed")


@probe("redis.no_auth_refused", "redis", "GET a key without authenticating", "NOAUTH")
def _(ctx: Context) -> str:
    return _redis_refused(ctx.s, None, lambda c: c.get(_feast_key(ctx.s)), "Authentication required")


@probe("redis.wrong_password_refused", "redis", "AUTH as rtml-admin with a wrong password", "WRONGPASS")
def _(ctx: Context) -> str:
    return _redis_refused(ctx.s, "admin", lambda c: c.ping(), "invalid username-password", password="wrong-" + uuid.uuid4().hex)


@probe("redis.serving_cannot_write", "redis", "rtml-serving HSETs a feature hash of the project", "NOPERM")
def _(ctx: Context) -> str:
    return _redis_refused(ctx.s, "serving", lambda c: c.hset(_feast_key(ctx.s), "f", "poison"), "no permissions")


@probe("redis.serving_cannot_delete", "redis", "rtml-serving DELs / UNLINKs a feature hash", "NOPERM")
def _(ctx: Context) -> str:
    return _redis_refused(ctx.s, "serving", lambda c: c.unlink(_feast_key(ctx.s)), "no permissions")


@probe("redis.serving_cannot_flushall_config_keys", "redis", "rtml-serving runs FLUSHALL, CONFIG SET, KEYS *, EVAL",
       "NOPERM for each")
def _(ctx: Context) -> str:
    out = [_redis_refused(ctx.s, "serving", call, "no permissions").split(":")[0]
           for call in (lambda c: c.flushall(), lambda c: c.config_set("maxmemory", "1"), lambda c: c.keys("*"),
                        lambda c: c.eval("return 1", 0))]
    return f"{len(out)} commands refused: {', '.join(out)}"


@probe("redis.serving_cannot_read_other_keys", "redis", "rtml-serving HGETALLs a key outside the Feast project",
       "NOPERM (keys limited to the project)")
def _(ctx: Context) -> str:
    return _redis_refused(ctx.s, "serving", lambda c: c.hgetall(b"session:admin"), "no permissions")


@probe("redis.writer_cannot_flushall_config_keys_acl", "redis",
       "rtml-writer (stream job, materialize) runs FLUSHALL, FLUSHDB, CONFIG SET, KEYS *, ACL SETUSER, SHUTDOWN",
       "NOPERM for each")
def _(ctx: Context) -> str:
    out = [_redis_refused(ctx.s, "writer", call, "no permissions").split(":")[0]
           for call in (lambda c: c.flushall(), lambda c: c.flushdb(), lambda c: c.config_set("maxmemory", "1"),
                        lambda c: c.keys("*"), lambda c: c.acl_setuser("mallory", enabled=True),
                        lambda c: c.execute_command("SHUTDOWN", "NOSAVE"))]
    return f"{len(out)} commands refused"


@probe("redis.writer_limited_to_project_keys", "redis", "rtml-writer HSETs and SETs keys outside the Feast project",
       "NOPERM")
def _(ctx: Context) -> str:
    a = _redis_refused(ctx.s, "writer", lambda c: c.hset(b"session:admin", "f", "v"), "no permissions")
    _redis_refused(ctx.s, "writer", lambda c: c.set(_feast_key(ctx.s), "v"), "no permissions")  # SET: not a writer command
    return a


@probe("redis.roles_do_their_jobs", "redis",
       "the online store writes a row as rtml-writer and serving's reader reads it back as rtml-serving",
       "both succeed (the refusals above are not a Redis that refuses everything)")
def _(ctx: Context) -> str:
    from core.redis_auth import USERS, load_secrets

    writer, serving = _redis(ctx.s, "writer"), _redis(ctx.s, "serving")
    key = _feast_key(ctx.s)
    try:
        script = "redis.call('HSET', KEYS[1], 'f', ARGV[1]) redis.call('TIME') redis.call('PEXPIRE', KEYS[1], 60000) return 1"
        check(writer.eval(script, 1, key, "v1") == 1, "writer script failed")
        check(serving.hmget(key, ["f"]) == [b"v1"], "serving could not read what the writer wrote")
        users = sorted(u["username"] if isinstance(u, dict) else u for u in _redis(ctx.s, "admin").acl_users())
        check(sorted(users) == sorted(["default", *USERS.values()]), f"unexpected ACL users {users}")
        check(len(load_secrets(ctx.s)) == len(USERS), "a role has no generated password")
        return f"writer EVAL+HSET ok, serving HMGET ok; ACL users {users}"
    finally:
        _redis(ctx.s, "admin").delete(key)
        writer.close()
        serving.close()


@probe("redis.default_user_off", "redis",
       "ACL GETUSER default (as rtml-admin); AUTH as `default` (empty, guessed and one-argument AUTH); PING, GET, "
       "FLUSHALL and CONFIG GET without authenticating",
       "default is off with no password (its +@all only lets Redis replay the append-only file: start-redis.sh): "
       "every AUTH as it WRONGPASS, every unauthenticated command NOAUTH")
def _(ctx: Context) -> str:
    admin = _redis(ctx.s, "admin")
    try:
        info = admin.acl_getuser("default")
    finally:
        admin.close()
    flags = info.get("flags", [])
    check("off" in flags and "on" not in flags and "nopass" not in flags, f"default user flags {flags}")
    check(not info.get("passwords"), "the default user has a password: someone could log in as it")
    guess = "guess-" + uuid.uuid4().hex
    auths = [_redis_refused(ctx.s, None, call, "invalid username-password")
             for call in (lambda c: c.execute_command("AUTH", "default", ""),
                          lambda c: c.execute_command("AUTH", "default", guess),
                          lambda c: c.execute_command("AUTH", guess))]  # fmt: skip
    noauth = [_redis_refused(ctx.s, None, call, "Authentication required")
              for call in (lambda c: c.ping(), lambda c: c.get(_feast_key(ctx.s)), lambda c: c.flushall(),
                           lambda c: c.config_get("requirepass"))]  # fmt: skip
    return f"default flags {flags}, no password; {len(auths)} AUTHs refused ({auths[0]}); {len(noauth)} commands NOAUTH"


@probe("redis.tls_refuses_plaintext_and_unknown_ca", "redis",
       "against a local Redis started with RTML_REDIS_TLS=1: a plaintext client with the right password, a TLS "
       "client trusting another CA, and rtml-serving over verified TLS writing a feature hash",
       "plaintext connection dropped, certificate verify failed, NOPERM (reads work)")
def _(ctx: Context) -> str:
    import tempfile

    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from core.redis_auth import connect, load_secrets
    from infra.redis_tls import ensure_certificates
    from tests.fixtures.redis_tls import tls_redis

    got = []
    with tempfile.TemporaryDirectory(prefix="rtml-tls-probe-") as tmp, tls_redis(Path(tmp)) as s:
        port = s.redis_host_port[1]
        kw: dict[str, Any] = dict(port=port, socket_timeout=3, socket_connect_timeout=3, retry=Retry(NoBackoff(), 0))
        other_ca = ensure_certificates(Path(tmp) / "other", ca_name="another CA").ca_cert
        for label, extra in (("plaintext", dict(username="rtml-admin", password=load_secrets(s)["admin"])),
                             ("other CA", dict(ssl=True, ssl_ca_certs=str(other_ca)))):
            client = redis.Redis(**kw, **extra)
            try:
                client.ping()
                raise Fail(f"{label} client was answered")
            except redis.ConnectionError as exc:
                if label == "other CA":
                    check("certificate verify failed" in str(exc), f"other CA refused, but not by verification: {exc}")
                got.append(f"{label}: {str(exc)[:80]}")
            finally:
                client.close()
        serving = connect(role="serving", socket_timeout=3, socket_connect_timeout=3, retry=Retry(NoBackoff(), 0))
        try:
            check(serving.hgetall(_feast_key(s)) == {}, "rtml-serving cannot read over TLS")
            serving.hset(_feast_key(s), "f", "1")
            raise Fail("rtml-serving wrote over TLS")
        except redis.exceptions.NoPermissionError as exc:
            got.append(f"serving write: {str(exc)[:60]}")
        finally:
            serving.close()
    return "; ".join(got)


# ---------------------------------------------------------------------------------------------- files
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@probe("files.credentials_private", "files",
       "modes of the generated credentials in the state dir (Kafka, Redis, ACL file, API keys, broker config)",
       "files 0600, folders 0700")
def _(ctx: Context) -> str:
    s = ctx.s
    files = [s.secrets_dir / "kafka.json", s.secrets_dir / "redis.json", s.secrets_dir / "redis-acl" / "users.acl",
             s.state_dir / "kafka" / "server.properties"]
    files += [p for p in [s.secrets_dir / "api_keys.json"] if p.exists()]
    files += [p for p in [s.redis_tls_dir / "ca.key", s.redis_tls_dir / "tls.key"] if s.redis_tls and p.exists()]
    modes = {str(p.relative_to(s.state_dir)): oct(_mode(p)) for p in files}
    bad = {p: m for p, m in modes.items() if m != "0o600"}
    folders = {str(p.relative_to(s.state_dir)): oct(_mode(p)) for p in (s.secrets_dir, s.secrets_dir / "redis-acl")}
    bad.update({p: m for p, m in folders.items() if m != "0o700"})
    check(not bad, f"too open: {bad}")
    return f"{len(files)} files 0600, {len(folders)} folders 0700"


def _generated_secrets(s: Settings) -> list[str]:
    import json

    out: list[str] = []
    for name in ("kafka.json", "redis.json"):
        path = s.secrets_dir / name
        if path.exists():
            data = json.loads(path.read_text())
            out += list(data["users"].values()) + [v for k, v in data.items() if k != "users" and isinstance(v, str)]
    return out


@probe("files.acl_file_holds_only_hashes", "files", "read the Redis ACL file for the plaintext passwords",
       "only SHA-256 hashes")
def _(ctx: Context) -> str:
    text = (ctx.s.secrets_dir / "redis-acl" / "users.acl").read_text()
    from core.redis_auth import load_secrets

    passwords = list(load_secrets(ctx.s).values())
    check(passwords and not any(p in text for p in passwords), "a plaintext password is in the ACL file")
    return f"{text.count('#')} hashes, no plaintext"


@probe("files.no_secret_in_logs", "files",
       "search every log of the run dir (broker, Redis, services) and the Redis process environment for a generated password",
       "none found")
def _(ctx: Context) -> str:
    from infra import redis_server

    secrets = _generated_secrets(ctx.s) + list(ctx.keys.values())
    check(len(secrets) >= 3, "no generated secrets to look for")
    logs = [p for p in ctx.s.run_dir.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err")]
    leaks = [str(p.name) for p in logs if any(sec in p.read_text(errors="replace") for sec in secrets)]
    pid = redis_server.running_pid(ctx.s)
    if pid is not None:
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        if any(sec in environ for sec in secrets):
            leaks.append(f"redis-server environment (pid {pid})")
    check(not leaks, f"secrets found in {leaks}")
    return f"{len(secrets)} secrets, {len(logs)} logs{' + redis-server environ' if pid else ''}: none found"


# ---------------------------------------------------------------------------------------------- git
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    "AWS key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "API token": re.compile(r"\brtml_[0-9a-f]{8,}_[A-Za-z0-9_-]{20,}\b"),
    "password literal": re.compile(
        r"""(?i)\b(?:password|passwd|secret|token)["']?\s*[:=]\s*["']([A-Za-z0-9+/_\-]{12,})["']"""),
    "URL credentials": re.compile(r"\b[a-z]+://[^/\s:@]+:[^/\s:@${}]{6,}@"),
}
ALLOWED_LITERALS = re.compile(r"(?i)(example|changeme|placeholder|not-the-password|wrong|dummy|probe|test|xxx)")


@probe("git.no_secrets_tracked", "git",
       "scan every file tracked by git for private keys, cloud keys, API tokens, password literals, credentials in URLs,"
       " and the generated passwords of the state dir", "no match outside tests' throwaway values")
def _(ctx: Context) -> str:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout.split(b"\0")
    generated = _generated_secrets(ctx.s)
    hits: list[str] = []
    scanned = 0
    for name in filter(None, (f.decode() for f in files)):
        path = REPO_ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        text = path.read_text(errors="ignore")
        scanned += 1
        if any(g in text for g in generated):
            hits.append(f"{name}: a generated password of the state dir")
        for kind, pattern in SECRET_PATTERNS.items():
            for m in pattern.finditer(text):
                if name.startswith("tests/") and ALLOWED_LITERALS.search(m.group(0)):
                    continue
                if ALLOWED_LITERALS.search(m.group(0)) or "${" in m.group(0):
                    continue
                if kind == "password literal" and re.fullmatch(r"[A-Z][A-Z0-9_]+", m.group(1)):
                    continue  # the name of an environment variable, not a value
                hits.append(f"{name}: {kind}")
    check(not hits, f"{len(hits)} findings: {hits[:10]}")
    return f"{scanned} tracked files, no secret"


@probe("git.credentials_ignored", "git", "ask git whether the state dir, infra/.env and the k8s model env file are ignored",
       "all ignored (never committed by `git add -A`)")
def _(ctx: Context) -> str:
    paths = [".rtml/secrets/kafka.json", "infra/.env", "infra/k8s/serving-model.env"]
    done = subprocess.run(["git", "check-ignore", *paths], cwd=REPO_ROOT, capture_output=True, text=True)
    ignored = set(done.stdout.split())
    check(ignored == set(paths), f"not ignored: {set(paths) - ignored}")
    return f"ignored: {', '.join(paths)}"


# ---------------------------------------------------------------------------------------------- deploy
def _compose() -> dict:
    from tests.deploy.manifests import COMPOSE

    return yaml.safe_load(COMPOSE.read_text())


SECRET_NAME = re.compile(r"(?i)(password|secret|token|_auth)$")


@probe("deploy.compose_requires_every_secret", "deploy",
       "every credential-like variable of docker-compose.yml: a literal, or a ${VAR:-default}?",
       "each is ${VAR:?...}: Compose stops when it is unset; no default password")
def _(ctx: Context) -> str:
    text = (REPO_ROOT / "infra" / "docker-compose.yml").read_text()
    found, bad = 0, []
    for line in text.splitlines():
        m = re.match(r"\s*-?\s*([A-Z][A-Z0-9_]*)\s*[:=]\s*(.+)", line)
        if not m or not SECRET_NAME.search(m.group(1)):
            continue
        found += 1
        if not re.fullmatch(r"""["']?\$\{[A-Z0-9_]+:\?[^}]+\}["']?""", m.group(2).strip()):
            bad.append(m.group(1))
    check(found >= 4 and not bad, f"{found} credentials, without :? {bad}")
    return f"{found} credential variables, all required (${{VAR:?}})"


@probe("deploy.compose_kafka_sasl_and_acls", "deploy",
       "the compose Kafka broker's listeners, authorizer and passwords (its KAFKA_* environment as properties)",
       "every listener SASL_PLAINTEXT, StandardAuthorizer, super users admin and controller only, no ACL = no "
       "access, every JAAS password a required ${VAR:?}")
def _(ctx: Context) -> str:
    from tests.deploy.manifests import kafka_env_to_properties

    props = kafka_env_to_properties(_compose()["services"]["kafka"]["environment"])
    protocols = dict(item.split(":") for item in props["listener.security.protocol.map"].split(","))
    check(set(protocols.values()) == {"SASL_PLAINTEXT"}, f"listener protocols {protocols}")
    check(props.get("authorizer.class.name") == "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
          f"authorizer {props.get('authorizer.class.name')}")
    check(props.get("super.users") == "User:admin;User:controller", f"super users {props.get('super.users')}")
    check(props.get("allow.everyone.if.no.acl.found") == "false", "allow.everyone.if.no.acl.found is not false")
    passwords = [p for v in props.values() for p in re.findall(r'(?:password|user_[a-z]+)="([^"]*)"', v)]
    check(len(passwords) >= 4 and all(re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]+\}", p) for p in passwords),
          "a JAAS password is a literal or optional")
    return f"{len(protocols)} SASL listeners, StandardAuthorizer, {len(passwords)} JAAS passwords all required"


@probe("deploy.compose_ports_loopback_only", "deploy", "published ports of docker-compose.yml",
       "every one bound to 127.0.0.1")
def _(ctx: Context) -> str:
    ports = [(name, str(p)) for name, svc in _compose()["services"].items() for p in svc.get("ports", [])]
    bad = [f"{n}:{p}" for n, p in ports if not p.startswith("127.0.0.1:")]
    check(ports and not bad, f"published on every interface: {bad}")
    return f"{len(ports)} ports, all 127.0.0.1"


@probe("deploy.compose_no_anonymous_admin", "deploy",
       "Grafana anonymous access / default admin password, Prometheus lifecycle API in docker-compose.yml",
       "anonymous off, admin password required, no --web.enable-lifecycle")
def _(ctx: Context) -> str:
    services = _compose()["services"]
    text = yaml.safe_dump(services)
    check("--web.enable-lifecycle" not in text, "Prometheus lifecycle API enabled")
    grafana = next(s for n, s in services.items() if "grafana" in n)
    env = grafana.get("environment", {})
    env = dict(e.split("=", 1) for e in env) if isinstance(env, list) else env
    check(str(env.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() == "false", "Grafana anonymous access on")
    check(":?" in str(env.get("GF_SECURITY_ADMIN_PASSWORD", "")), "Grafana admin password not required")
    return "lifecycle API off, Grafana anonymous off, admin password required"


def _k8s_containers() -> list[tuple[str, dict, dict]]:
    from tests.deploy.manifests import objects_of, pod_specs

    out = []
    for obj, template in pod_specs():
        spec = template["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            out.append((f"{obj['kind']}/{obj['metadata']['name']}/{c['name']}", spec, c))
    for app in objects_of("SparkApplication"):
        for role in ("driver", "executor"):
            pod = app["spec"][role]  # Spark operator: podSecurityContext for the pod, securityContext for the container
            out.append((f"SparkApplication/{app['metadata']['name']}/{role}",
                        {"securityContext": pod.get("podSecurityContext")}, pod))
    for kind, path, containers in (("Kafka", ("kafka",), ("kafkaContainer", "initContainer")),
                                   ("Kafka", ("entityOperator",), ("topicOperatorContainer", "userOperatorContainer")),
                                   ("KafkaNodePool", (), ("kafkaContainer", "initContainer"))):
        for obj in objects_of(kind):  # Strimzi builds these pods from the templates of its custom resources
            spec = obj["spec"]
            for key in path:
                spec = spec[key]
            template = spec.get("template") or {}
            for c in containers:
                out.append((f"{kind}/{obj['metadata']['name']}/{'.'.join(path)}/{c}",
                            template.get("pod") or {}, {"name": c, **(template.get(c) or {})}))
    return out


@probe("deploy.k8s_non_root_read_only_no_escalation", "deploy",
       "securityContext of every Kubernetes container (Deployments, StatefulSet, Job, Spark driver/executors, "
       "Strimzi's Kafka and entity-operator pods)",
       "runAsNonRoot, readOnlyRootFilesystem, allowPrivilegeEscalation false, all capabilities dropped")
def _(ctx: Context) -> str:
    bad = []
    containers = _k8s_containers()
    for name, pod, c in containers:
        sc = {**(pod.get("securityContext") or {}), **(c.get("securityContext") or {})}
        if not sc.get("runAsNonRoot") and not (sc.get("runAsUser") or 0) > 0:
            bad.append(f"{name}: may run as root")
        if not sc.get("readOnlyRootFilesystem"):
            bad.append(f"{name}: writable root fs")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{name}: privilege escalation")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            bad.append(f"{name}: capabilities kept")
    check(len(containers) >= 5 and not bad, f"{bad}")
    return f"{len(containers)} containers hardened"


@probe("deploy.k8s_credentials_from_secrets", "deploy",
       "every credential-like env var of every Kubernetes container: a literal value?",
       "each comes from a Secret (secretKeyRef), none is a literal")
def _(ctx: Context) -> str:
    found, bad = 0, []
    for name, _pod, c in _k8s_containers():
        for e in c.get("env", []) or []:
            if SECRET_NAME.search(e["name"]):
                found += 1
                if "secretKeyRef" not in (e.get("valueFrom") or {}):
                    bad.append(f"{name}:{e['name']}")
    check(found >= 4 and not bad, f"{found} credentials, literal: {bad}")
    return f"{found} credential env vars, all from Secrets"


@probe("deploy.k8s_default_deny_network", "deploy", "NetworkPolicies of the namespace",
       "a default-deny policy for every pod (ingress and egress) plus per-flow allows")
def _(ctx: Context) -> str:
    from tests.deploy.manifests import objects_of

    policies = objects_of("NetworkPolicy")
    deny = [p for p in policies if p["spec"].get("podSelector") in ({}, None)
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    check(bool(deny), "no default-deny NetworkPolicy")
    return f"default deny {deny[0]['metadata']['name']}, {len(policies) - 1} allow policies"


@probe("deploy.k8s_spark_driver_cannot_delete_pvcs", "deploy", "the Spark driver's Role: verbs on persistentvolumeclaims",
       "no delete / deletecollection")
def _(ctx: Context) -> str:
    from tests.deploy.manifests import objects_of

    bad = [f"{r['metadata']['name']}: {rule.get('verbs')}" for r in objects_of("Role") for rule in r.get("rules", [])
           if "persistentvolumeclaims" in rule.get("resources", []) and {"delete", "deletecollection", "*"} & set(rule.get("verbs", []))]
    check(not bad, f"{bad}")
    return "no Role may delete PVCs"


# ---------------------------------------------------------------------------------------------- audit
@probe("audit.promote_and_rollback_recorded", "audit",
       "promote a model, then roll back, through core.model_store (as the CLI does)",
       "two audit entries (JSONL) naming actor, time, before/after and reason", fast=False)
def _(ctx: Context) -> str:
    from core import audit, model_store
    from tests.fixtures import models as fixture_models

    before = len(audit.read())
    first = model_store.production_tag() or fixture_models.save_test_model(n_rows=500, rounds=5, promote_it=True)
    tag = fixture_models.save_test_model(n_rows=500, rounds=5, seed=7, promote_it=False)
    model_store.promote(tag, reason="security probe", actor="probe-actor")
    model_store.rollback(reason="security probe rollback", actor="probe-actor")
    entries = [e for e in audit.read()[before:] if e["action"] in ("model.promote", "model.rollback")][-2:]
    check([e["action"] for e in entries] == ["model.promote", "model.rollback"], f"entries {entries}")
    for e in entries:
        check(e["actor"] == "probe-actor" and e["time"] and e["reason"].startswith("security probe"), f"incomplete {e}")
        check(e["before"] is not None and e["after"] is not None, f"no before/after in {e}")
    check(entries[0]["after"]["production"].endswith(tag.split(":")[-1]), f"promote entry names {entries[0]['after']}")
    check(model_store.production_tag() is not None and model_store.production_tag().split(":")[-1] == first.split(":")[-1],
          "rollback did not restore the first model")
    return f"model.promote {entries[0]['before']} -> {entries[0]['after']}; model.rollback recorded, actor probe-actor"


@probe("audit.rollout_recorded", "audit",
       "start a canary rollout of a challenger, complete it (the production model changes), roll back",
       "model.rollout.start and model.rollout.complete entries naming actor, time, reason and before/after "
       "(production, challenger, mode, share)", fast=False)
def _(ctx: Context) -> str:
    from core import audit, model_store
    from tests.fixtures import models as fixture_models

    before = len(audit.read())
    first = model_store.production_tag() or fixture_models.save_test_model(n_rows=500, rounds=5, promote_it=True)
    tag = fixture_models.save_test_model(n_rows=500, rounds=5, seed=8, promote_it=False)
    model_store.start_rollout(tag, "canary", "10%", reason="security probe rollout", actor="probe-actor")
    model_store.complete_rollout(reason="security probe complete", actor="probe-actor")
    model_store.rollback(reason="security probe restore", actor="probe-actor")
    entries = [e for e in audit.read()[before:] if e["action"].startswith("model.rollout.")]
    check([e["action"] for e in entries] == ["model.rollout.start", "model.rollout.complete"], f"entries {entries}")
    for e in entries:
        check(e["actor"] == "probe-actor" and e["time"] and e["reason"].startswith("security probe"), f"incomplete {e}")
    start, complete = entries
    check(start["after"] == {"production": first, "challenger": tag, "mode": "canary", "share": 0.1},
          f"start entry after {start['after']}")
    check(complete["before"] == start["after"] and complete["after"]["production"] == tag
          and complete["after"]["challenger"] is None, f"complete entry {complete['before']} -> {complete['after']}")
    check(model_store.production_tag() == first, "rollback did not restore the first model")
    return f"model.rollout.start -> {start['after']}; model.rollout.complete -> {complete['after']}"


# ---------------------------------------------------------------------------------------------- API
def _http(ctx: Context, method: str, path: str, token: str | None = None, **kw):
    import httpx

    check(ctx.api_url is not None, "no prediction service for the API probes")
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, f"{ctx.api_url}{path}", headers=headers, timeout=10, **kw)


def _predict(ctx: Context, token: str | None):
    return _http(ctx, "POST", "/predict", token, json=ctx.request)


@probe("api.no_key_401", "api", "POST /predict without Authorization", "401", fast=False)
def _(ctx: Context) -> str:
    r = _predict(ctx, None)
    check(r.status_code == 401, f"status {r.status_code}")
    return f"401 {r.text[:80]}"


@probe("api.wrong_key_401_indistinguishable", "api",
       "POST /predict with a wrong secret for an existing key id, and with an unknown key id", "401 with identical bodies",
       fast=False)
def _(ctx: Context) -> str:
    key_id = ctx.keys["predict"].split("_")[1]
    wrong = _predict(ctx, f"rtml_{key_id}_{'x' * 32}")
    unknown = _predict(ctx, f"rtml_deadbeef_{'x' * 32}")
    garbage = _predict(ctx, "garbage")
    check([wrong.status_code, unknown.status_code, garbage.status_code] == [401, 401, 401],
          f"statuses {wrong.status_code} {unknown.status_code} {garbage.status_code}")
    check(wrong.text == unknown.text, "the body tells an existing key from an unknown one")
    return "401 x3, same body"


@probe("api.valid_key_200", "api", "POST /predict with a predict-scoped key", "200 (positive control)", fast=False)
def _(ctx: Context) -> str:
    r = _predict(ctx, ctx.keys["predict"])
    check(r.status_code == 200, f"status {r.status_code}: {r.text[:200]}")
    return "200"


@probe("api.wrong_scope_403", "api", "POST /predict_batch and GET /metrics with a predict-only key", "403", fast=False)
def _(ctx: Context) -> str:
    batch = _http(ctx, "POST", "/predict_batch", ctx.keys["predict"], json={"transactions": [ctx.request]})
    metrics = _http(ctx, "GET", "/metrics", ctx.keys["predict"])
    check(batch.status_code == 403 and metrics.status_code == 403, f"statuses {batch.status_code} {metrics.status_code}")
    return "403, 403"


@probe("api.metrics_needs_its_key", "api", "GET /metrics without a key, then with a metrics-scoped key",
       "401, then 200 with Prometheus text", fast=False)
def _(ctx: Context) -> str:
    anonymous = _http(ctx, "GET", "/metrics")
    scoped = _http(ctx, "GET", "/metrics", ctx.keys["metrics"])
    check(anonymous.status_code == 401, f"anonymous /metrics: {anonymous.status_code}")
    check(scoped.status_code == 200 and "# TYPE" in scoped.text, f"metrics key: {scoped.status_code}")
    return "401 anonymous, 200 with the metrics key"


@probe("api.docs_need_admin", "api", "GET /docs.json and /deployment with a predict key", "403 (admin only)", fast=False)
def _(ctx: Context) -> str:
    codes = [_http(ctx, "GET", p, ctx.keys["predict"]).status_code for p in ("/docs.json", "/deployment")]
    check(all(c in (401, 403) for c in codes), f"statuses {codes}")
    return f"statuses {codes}"


@probe("api.health_probes_open", "api", "GET /livez and /readyz without a key", "200 (the only open endpoints)", fast=False)
def _(ctx: Context) -> str:
    codes = [_http(ctx, "GET", p).status_code for p in ("/livez", "/readyz")]
    check(codes == [200, 200], f"statuses {codes}")
    return "200, 200"


@probe("api.revoked_key_401_within_seconds", "api", "revoke a working key with `rtml keys revoke`, then call /predict",
       "401 within 5 s, no restart", fast=False)
def _(ctx: Context) -> str:
    from bentos import auth

    token = auth.create_key("probe-revoke", ["predict"])
    deadline = time.monotonic() + 10
    while _predict(ctx, token).status_code != 200:  # the service picks new keys up within its reload interval
        check(time.monotonic() < deadline, "a new key was not accepted within 10 s")
        time.sleep(0.2)
    key_id = token[len(auth.PREFIX):].split("_", 1)[0]
    done = subprocess.run([__import__("sys").executable, "-m", "rtml.cli", "keys", "revoke", key_id, "--reason", "probe"],
                          capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    check(done.returncode == 0, done.stderr[-300:])
    revoked_at = time.monotonic()
    while _predict(ctx, token).status_code != 401:
        check(time.monotonic() - revoked_at < 5, "revoked key still works after 5 s")
        time.sleep(0.1)
    return f"401 after {time.monotonic() - revoked_at:.2f} s"


@probe("api.rate_limit_429", "api", "a key limited to 2 requests/s sends 30 requests at once (8 in parallel)",
       "429 with Retry-After", fast=False)
def _(ctx: Context) -> str:
    from concurrent.futures import ThreadPoolExecutor

    from bentos import auth

    token = auth.create_key("probe-rate", ["predict"], rate_per_s=2)
    deadline = time.monotonic() + 10
    while _predict(ctx, token).status_code == 401:
        check(time.monotonic() < deadline, "the new key was not accepted within 10 s")
        time.sleep(0.2)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: _predict(ctx, token), range(30)))
    limited = [r for r in codes if r.status_code == 429]
    check(len(limited) >= 10, f"statuses {[r.status_code for r in codes]}")
    check(all(r.headers.get("Retry-After") for r in limited), "429 without Retry-After")
    return f"{len(limited)}/30 answered 429"


@probe("api.unavailable_503_leaks_no_address", "api",
       "POST /predict while Redis is down (stopped by the harness)", "503 whose body names no host, port or URL",
       fast=False)
def _(ctx: Context) -> str:
    check(ctx.restart_redis is not None, "the harness does not own Redis: cannot stop it")
    host, port = ctx.s.redis_host_port
    stop, start = ctx.restart_redis
    stop()
    try:
        r = _predict(ctx, ctx.keys["predict"])
    finally:
        start()
    check(r.status_code == 503, f"status {r.status_code}: {r.text[:200]}")
    leaked = [w for w in (host, str(port), "redis://", "127.0.0.1", "localhost") if w in r.text]
    check(not leaked, f"the 503 body names {leaked}: {r.text[:200]}")
    return f"503 {r.text[:120]}"
