"""Great Expectations turns on ``logging.captureWarnings`` at import; after the validation context is built, the
CLI's warning filters still apply (known third-party warnings hidden, others shown) and GX logs no INFO."""

from __future__ import annotations

import os
import subprocess
import sys

from core.settings import REPO_ROOT

SCRIPT = """
import logging, warnings
from rtml.cli import quiet_third_parties
logging.basicConfig(level=logging.INFO)
quiet_third_parties()
from training.validation import _context
_context()
warnings.warn("Stream feature views are experimental features in alpha development.", RuntimeWarning)
warnings.warn("a real warning stays visible", UserWarning)
"""


def test_validation_context_keeps_the_cli_warning_filters(tmp_path):
    script = tmp_path / "quiet.py"  # a file: importing great_expectations under `python -c` exits silently
    script.write_text(SCRIPT + "print('done')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0 and out.stdout.strip() == "done", out.stderr[-2000:]
    assert "a real warning stays visible" in out.stderr
    assert "Stream feature views are experimental" not in out.stderr
    assert "py.warnings" not in out.stderr and "Created temporary directory" not in out.stderr
