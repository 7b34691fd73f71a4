"""The example notebook runs top to bottom on a crafted history (kernel = this venv's python)."""

from __future__ import annotations

import os
import sys

import nbformat
from nbclient import NotebookClient

from core.settings import REPO_ROOT, settings
from tests.training.history import make_history, write_history
from tests.training.oracle import fresh_apply

NOTEBOOK = REPO_ROOT / "training" / "notebooks" / "historical_features.ipynb"


def test_historical_features_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RTML_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RTML_OFFLINE_STORE", raising=False)
    write_history(make_history(n_users=40, n_merchants=10, days=4, seed=2), settings().data_dir)
    fresh_apply()
    # the kernel inherits this environment; make sure it is this venv's python and finds the repo
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert "identical" in str(nb.cells[-2].outputs)
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.executable  # the venv's python
