"""infra/k8s/redis/start-redis.sh (run by docker-compose and by the Kubernetes StatefulSet): the ACL file
it writes, read without a server (a stand-in redis-server prints what it was given). The same script
against a real redis-server: tests/deploy/test_redis_args.py."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from core.settings import settings
from tests.deploy.manifests import K8S

SCRIPT = K8S / "redis" / "start-redis.sh"
PASSWORDS = {"REDIS_ADMIN_PASSWORD": "adm-" + "1" * 40, "REDIS_WRITER_PASSWORD": "wri-" + "2" * 40,
             "REDIS_SERVING_PASSWORD": "ser-" + "3" * 40}
WRITE_COMMANDS = {"set", "hset", "hdel", "del", "unlink", "expire", "pexpire", "pexpireat", "eval", "evalsha",
                  "flushall", "flushdb", "config", "script|load", "multi", "exec", "@all", "@write", "@dangerous"}


def project() -> str:
    return yaml.safe_load((settings().feature_repo / "feature_store.yaml").read_text())["project"]


def run_script(tmp_path: Path, passwords: dict[str, str], *args: str,
               extra_env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "redis-server"
    fake.write_text('#!/bin/sh\necho redis-server; for a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    acl_dir = tmp_path / "acl"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "REDIS_ACL_DIR": str(acl_dir), **passwords, **(extra_env or {})}
    done = subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=30)
    return done, acl_dir / "users.acl"


def users(acl: Path) -> dict[str, list[str]]:
    out = {}
    for line in acl.read_text().splitlines():
        word, name, *rules = line.split()
        assert word == "user"
        out[name] = rules
    return out


def test_execs_redis_server_with_the_arguments_and_the_acl_file(tmp_path):
    done, acl = run_script(tmp_path, PASSWORDS, "--appendonly", "yes", "--maxmemory", "3gb")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["redis-server", "--appendonly", "yes", "--maxmemory", "3gb", "--aclfile", str(acl)]
    assert stat.S_IMODE(acl.stat().st_mode) == 0o600
    assert stat.S_IMODE(acl.parent.stat().st_mode) == 0o700


def test_tls_dir_turns_the_plaintext_port_off_and_serves_tls(tmp_path):
    tls = tmp_path / "tls"
    tls.mkdir()
    done, _ = run_script(tmp_path, PASSWORDS, "--appendonly", "yes", extra_env={"REDIS_TLS_DIR": str(tls)})
    assert done.returncode == 66 and "tls.crt is missing" in done.stderr  # no silent plaintext fallback
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (tls / name).write_text("x")
    done, acl = run_script(tmp_path, PASSWORDS, "--appendonly", "yes", extra_env={"REDIS_TLS_DIR": str(tls)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "redis-server", "--appendonly", "yes", "--port", "0", "--tls-port", "6379",
        "--tls-cert-file", f"{tls}/tls.crt", "--tls-key-file", f"{tls}/tls.key", "--tls-ca-cert-file", f"{tls}/ca.crt",
        "--tls-auth-clients", "no", "--aclfile", str(acl)]


def test_acl_file_holds_hashes_not_passwords(tmp_path):
    _done, acl = run_script(tmp_path, PASSWORDS)
    text = acl.read_text()
    for var, password in PASSWORDS.items():
        assert password not in text
        assert f"#{hashlib.sha256(password.encode()).hexdigest()}" in text, var
    assert sorted(users(acl)) == ["default", "rtml-admin", "rtml-serving", "rtml-writer"]


def test_default_user_is_off_and_the_rtml_users_are_limited_to_the_feast_project(tmp_path):
    _done, acl = run_script(tmp_path, PASSWORDS)
    found = users(acl)
    # off and without a password: no client logs in as it (its full rights serve the append-only file's replay)
    assert "off" in found["default"] and "on" not in found["default"] and "resetpass" in found["default"]
    assert not any(r.startswith((">", "#")) or r == "nopass" for r in found["default"])
    keys = f"~*{project()}"  # Feast's Redis key = serialized entity key + project name
    writer, serving = found["rtml-writer"], found["rtml-serving"]
    assert [r for r in writer if r.startswith(("~", "%", "allkeys"))] == [keys]
    assert [r for r in serving if r.startswith(("~", "%", "allkeys"))] == [f"%R{keys}"]
    for rules in (writer, serving):
        assert rules.index("-@all") < min(i for i, r in enumerate(rules) if r.startswith("+"))
        assert "resetchannels" in rules and not any(r.startswith("&") for r in rules)
    granted_serving = {r[1:] for r in serving if r.startswith("+")}
    assert granted_serving & WRITE_COMMANDS == set()
    assert {"hmget", "ping"} <= granted_serving
    granted_writer = {r[1:] for r in writer if r.startswith("+")}
    assert {"hset", "hmget", "pexpireat", "eval", "evalsha"} <= granted_writer
    assert granted_writer & {"flushall", "flushdb", "config", "@all", "@dangerous", "keys", "set", "acl"} == set()


def test_another_feature_repo_gets_its_own_project_keys(tmp_path):
    """A second domain (its own Feast project) is limited to its keys: `rtml up` passes RTML_FEAST_PROJECT."""
    _done, acl = run_script(tmp_path, {**PASSWORDS, "RTML_FEAST_PROJECT": "rtml_ads"})
    found = users(acl)
    assert [r for r in found["rtml-writer"] if r.startswith("~")] == ["~*rtml_ads"]
    assert [r for r in found["rtml-serving"] if r.startswith("%")] == ["%R~*rtml_ads"]


@pytest.mark.parametrize("missing", sorted(PASSWORDS))
def test_refuses_to_start_without_a_password(tmp_path, missing):
    done, acl = run_script(tmp_path, {k: v for k, v in PASSWORDS.items() if k != missing})
    assert done.returncode != 0
    assert missing in done.stderr
    assert "redis-server" not in done.stdout


def test_script_is_posix_sh():
    """Runs under the images' /bin/sh (busybox in alpine): no bashisms."""
    text = SCRIPT.read_text()
    assert text.startswith("#!/bin/sh\n")
    assert not re.search(r"\[\[|\bfunction\b|\$\{[^}]*//|<<<|\bsource\b|pipefail", text)
    assert subprocess.run(["sh", "-n", str(SCRIPT)]).returncode == 0
