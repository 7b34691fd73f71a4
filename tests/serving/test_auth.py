"""API keys: salted hashes only, 401/403/429 as documented, revocation without a restart."""

from __future__ import annotations

import asyncio
import json
import stat

import httpx
import pytest

from bentos import auth
from core.errors import UserFacingError


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def keyfile(tmp_path):
    return tmp_path / "secrets" / "api_keys.json"


def test_key_file_holds_only_salted_hashes_with_mode_0600(keyfile):
    token = auth.create_key("checkout", ["predict"], path=keyfile)
    text = keyfile.read_text()
    secret = token.split("_", 2)[2]
    assert secret not in text and token not in text
    record = next(iter(json.loads(text)["keys"].values()))
    assert record["hash"] == auth._hash(record["salt"], secret)
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert [k["name"] for k in auth.list_keys(keyfile)] == ["checkout"]
    assert "hash" not in auth.list_keys(keyfile)[0] and "salt" not in auth.list_keys(keyfile)[0]


def test_same_secret_under_two_keys_hashes_differently(keyfile):
    auth.create_key("a", ["predict"], path=keyfile)
    auth.create_key("b", ["predict"], path=keyfile)
    salts = [k["salt"] for k in json.loads(keyfile.read_text())["keys"].values()]
    assert len(set(salts)) == 2


def test_unknown_scope_is_refused(keyfile):
    with pytest.raises(UserFacingError, match="unknown scope"):
        auth.create_key("x", ["everything"], path=keyfile)


def test_statuses_do_not_reveal_whether_a_key_exists(keyfile):
    token = auth.create_key("checkout", ["predict"], path=keyfile).encode()
    v = auth.KeyVerifier(keyfile, clock=Clock())
    key_id = token.split(b"_")[1]
    assert v.check(token, "predict") == (0, None)
    wrong_secret = b"rtml_" + key_id + b"_" + b"x" * 32
    unknown_key = b"rtml_deadbeef_" + b"x" * 32
    assert v.check(wrong_secret, "predict") == v.check(unknown_key, "predict") == v.check(None, "predict")
    assert v.check(None, "predict")[0] == 401
    assert v.check(b"garbage", "predict")[0] == 401
    assert v.check(token, "predict_batch") == (403, "this API key's scope does not cover predict_batch")
    assert v.check(token, "admin")[0] == 403


def test_admin_scope_covers_every_endpoint(keyfile):
    token = auth.create_key("ops", ["admin"], path=keyfile).encode()
    v = auth.KeyVerifier(keyfile, clock=Clock())
    assert all(v.check(token, s) == (0, None) for s in ("predict", "predict_batch", "metrics", "admin"))


def test_rate_limit_answers_429_then_refills(keyfile):
    token = auth.create_key("bursty", ["predict"], rate_per_s=5, path=keyfile).encode()
    clock = Clock()
    v = auth.KeyVerifier(keyfile, clock=clock)
    assert [v.check(token, "predict")[0] for _ in range(7)] == [0, 0, 0, 0, 0, 429, 429]
    clock.t += 0.5  # 2.5 tokens back at 5/s
    assert [v.check(token, "predict")[0] for _ in range(3)] == [0, 0, 429]


def test_a_rate_below_one_per_second_lets_one_request_through_per_period(keyfile):
    token = auth.create_key("trickle", ["predict"], rate_per_s=0.2, path=keyfile).encode()
    clock = Clock()
    v = auth.KeyVerifier(keyfile, clock=clock)
    assert [v.check(token, "predict")[0] for _ in range(3)] == [0, 429, 429]
    clock.t += 4.9
    assert v.check(token, "predict")[0] == 429
    clock.t += 0.2  # 5 s after the first: one token back
    assert [v.check(token, "predict")[0] for _ in range(2)] == [0, 429]


def test_revoked_key_stops_within_the_reload_interval(keyfile):
    token = auth.create_key("leaked", ["predict"], path=keyfile)
    clock = Clock()
    v = auth.KeyVerifier(keyfile, clock=clock)
    assert v.check(token.encode(), "predict") == (0, None)
    auth.revoke_key(token, path=keyfile)  # by token works too
    clock.t += auth.RELOAD_EVERY_S
    assert v.check(token.encode(), "predict")[0] == 401
    assert auth.list_keys(keyfile)[0]["revoked_at"] is not None


def _call(app, path: str, token: str | None) -> httpx.Response:
    async def go():
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.post(path, headers=headers, json={})

    return asyncio.run(go())


def test_middleware_guards_everything_but_health_probes(keyfile):
    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = auth.ApiKeyMiddleware(inner, auth.KeyVerifier(keyfile, clock=Clock()))
    token = auth.create_key("checkout", ["predict"], path=keyfile)
    assert _call(app, "/readyz", None).status_code == 200
    refused = _call(app, "/predict", None)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json() == {"error": "missing or invalid API key"}
    assert _call(app, "/predict", token).text == "ok"
    assert _call(app, "/predict_batch", token).status_code == 403
    assert _call(app, "/metrics", token).status_code == 403
    assert _call(app, "/docs", token).status_code == 403


def test_key_commands_are_audited_without_the_secret(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RTML_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # no broker: the JSONL still gets every entry
    from core import audit
    from rtml.cli import main

    assert main(["keys", "create", "--name", "checkout", "--scope", "predict", "--reason", "new client"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    key_id = token.split("_")[1]
    assert main(["keys", "revoke", key_id]) == 0
    text = audit.path().read_text()
    entries = [json.loads(line) for line in text.splitlines()]
    assert [e["action"] for e in entries] == ["key.create", "key.revoke"]
    assert entries[0]["after"]["id"] == key_id and entries[0]["reason"] == "new client"
    assert token.split("_", 2)[2] not in text
