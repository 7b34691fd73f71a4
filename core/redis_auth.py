"""Who may do what in Redis: rtml's ACL users and the credentials each client authenticates with.

Roles and their ACL users (the rules themselves: ``infra/k8s/redis/start-redis.sh``, the one ACL table, run
by `rtml up`, docker-compose and the Kubernetes StatefulSet alike):

* ``admin`` -> ``rtml-admin``: every command and key (operators, `rtml up`'s own checks).
* ``writer`` -> ``rtml-writer``: the stream job, materialize, backfill, Feast apply; only the Feast project's
  keys and the commands the writers send.
* ``serving`` -> ``rtml-serving``: the prediction service; read-only, hash reads of the same keys.

The default user is off: a client that does not authenticate can run nothing (NOAUTH).

Credentials: ``RTML_REDIS_USER``/``RTML_REDIS_PASSWORD`` when set (a deployment gives each component its own;
they apply whatever role the code asks for), else, for the local Redis of `rtml up` (``RTML_REDIS_SECURITY=acl``,
the default), the role's generated password in ``<state_dir>/secrets/redis.json`` (mode 0600). An external
Redis (``RTML_REDIS_URL``) without a password, or ``RTML_REDIS_SECURITY=none``, gets no AUTH.

TLS (``RTML_REDIS_TLS=1`` or a ``rediss://`` URL): every client wraps its connection in TLS and verifies the
server's certificate and host name against ``settings.redis_ca_file`` (:func:`tls_kwargs` for redis-py,
:func:`client_ssl_context` for asyncio); never without verification.
"""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings, generated_passwords, settings

USERS = {"admin": "rtml-admin", "writer": "rtml-writer", "serving": "rtml-serving"}
# The variables start-redis.sh reads each user's password from.
PASSWORD_ENV = {"admin": "REDIS_ADMIN_PASSWORD", "writer": "REDIS_WRITER_PASSWORD", "serving": "REDIS_SERVING_PASSWORD"}


def secrets_path(s: Settings | None = None) -> Path:
    return (s or settings()).secrets_dir / "redis.json"


def secured(s: Settings | None = None) -> bool:
    """True when the local Redis runs with rtml's ACL users (generated passwords)."""
    s = s or settings()
    return s.redis_security == "acl" and not s.redis_external


def load_secrets(s: Settings | None = None) -> dict[str, str]:
    """role -> password from the state dir ({} when `rtml up` has not generated them yet)."""
    return generated_passwords(secrets_path(s), "stop Redis (`rtml down`), delete it and run `rtml up`")


def credentials(role: str, s: Settings | None = None) -> tuple[str | None, str] | None:
    """(user, password) a client with ``role`` authenticates with; None: no AUTH."""
    if role not in USERS:
        raise ValueError(f"unknown Redis role {role!r}; one of {', '.join(USERS)}")
    s = s or settings()
    if s.redis_password:
        return s.redis_user, s.redis_password
    if not secured(s):
        return None
    password = load_secrets(s).get(role)
    # Not generated yet (no `rtml up` in this state dir): connect without AUTH; the server answers NOAUTH.
    return (USERS[role], password) if password else None


def no_retry():
    """redis-py's ``retry=`` for clients whose callers handle failures themselves. redis-py 6+ retries a
    refused connection 3 times with exponential backoff by default: ~10 s before a down server is reported."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def tls_kwargs(s: Settings | None = None) -> dict:
    """redis-py keyword arguments for a TLS connection to the settings' Redis ({} without TLS): certificate
    and host name verified (redis-py's defaults: ``ssl_cert_reqs="required"``, ``ssl_check_hostname=True``)
    against the settings' CA (None: the system's trust store)."""
    s = s or settings()
    if not s.redis_tls:
        return {}
    return {"ssl": True, "ssl_ca_certs": str(s.redis_ca_file) if s.redis_ca_file else None}


def client_ssl_context(cafile: str | None):
    """A client context that requires a certificate signed by ``cafile`` (None: the system's CAs) naming the host."""
    import ssl

    from core.errors import UserFacingError

    try:
        return ssl.create_default_context(cafile=cafile)  # CERT_REQUIRED, check_hostname, TLS >= 1.2
    except (FileNotFoundError, ssl.SSLError) as exc:
        raise UserFacingError(f"cannot load the Redis CA certificate {cafile} ({exc}); run `rtml up` (local Redis) "
                              "or set RTML_REDIS_TLS_CA to the CA that signed the Redis server's certificate") from None


def connect(url: str | None = None, *, role: str = "writer", **kwargs):
    """A redis-py client for ``url`` (default: the settings' single Redis) authenticated as ``role``, over TLS
    verified against the settings' CA when TLS is on (no hidden retries: a down server fails at once)."""
    import redis

    kwargs.setdefault("retry", no_retry())
    s = settings()
    creds = credentials(role)
    if creds is not None:
        kwargs.setdefault("username", creds[0])
        kwargs.setdefault("password", creds[1])
    url = url or s.redis_url
    if s.redis_tls:
        if url.startswith("redis://"):
            url = "rediss://" + url[len("redis://"):]
        kwargs.setdefault("ssl_ca_certs", tls_kwargs(s)["ssl_ca_certs"])  # (from_url: rediss:// turns ssl on)
    return redis.Redis.from_url(url, **kwargs)
