"""The product-service guide's examples use the key the demo creates (docs/product-services.md, rtml.demo)."""

from __future__ import annotations

import re
import stat

from core.settings import REPO_ROOT

GUIDE = REPO_ROOT / "docs" / "product-services.md"


def _clients_section() -> str:
    text = GUIDE.read_text()
    return text[text.index("## Clients"):text.index("\n## ", text.index("## Clients") + 1)]


def test_the_guide_exports_the_key_file_the_demo_writes(monkeypatch):
    from rtml.demo import api_key_file

    section = _clients_section()
    assert section.index("make demo") < section.index("export RTML_API_KEY=$(cat ")
    [path] = re.findall(r"export RTML_API_KEY=\$\(cat (\S+)\)", section)
    monkeypatch.delenv("RTML_STATE_DIR", raising=False)  # the guide speaks of the default state dir
    assert REPO_ROOT / path == api_key_file()


def test_every_client_example_sends_the_exported_key():
    section = _clients_section()
    curls = [c for c in re.split(r"\n(?=curl )", section) if c.startswith("curl ")]
    assert len(curls) == 2 and all('-H "Authorization: Bearer $RTML_API_KEY"' in c for c in curls)
    assert """headers={"Authorization": f"Bearer {os.environ['RTML_API_KEY']}"}""" in section
    assert "export RTML_API_KEY=..." not in section  # no placeholder left for the demo reader to fill in


def test_the_demo_key_is_private_and_may_predict(tmp_path, monkeypatch):
    from bentos.auth import KeyVerifier, keys_path
    from rtml.demo import Demo, DemoOptions, api_key_file

    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RTML_KAFKA_BOOTSTRAP", "127.0.0.1:1")  # no broker: the key's audit entry stays in the JSONL
    started = []
    demo = Demo(DemoOptions(port=3999))
    monkeypatch.setattr(demo, "rtml", lambda *args: started.append(args))
    demo.serve()
    assert started == [("serve", "--detach", "--port", "3999")]
    token = api_key_file().read_text()
    assert stat.S_IMODE(api_key_file().stat().st_mode) == 0o600 and token == demo.api_key
    verifier = KeyVerifier(keys_path())
    assert [verifier.check(token.encode(), scope) for scope in ("predict", "predict_batch", "metrics")] == [(0, None)] * 3
    assert verifier.check(token.encode(), "admin")[0] == 403
    assert verifier.check(token.encode() + b"x", "predict")[0] == 401
