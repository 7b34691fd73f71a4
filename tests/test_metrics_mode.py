"""`import feast` flips prometheus_client into multi-process mode; importing core first prevents it."""

import subprocess
import sys

PROBE = (
    "import os; os.environ.pop('PROMETHEUS_MULTIPROC_DIR', None)\n"
    "{imports}\n"
    "assert 'PROMETHEUS_MULTIPROC_DIR' in os.environ  # what Feast does at import\n"
    "from prometheus_client import CollectorRegistry, Counter\n"
    "a = Counter('x', 'x', registry=CollectorRegistry()); a.inc()\n"
    "b = Counter('x', 'x', registry=CollectorRegistry()); b.inc()  # e.g. a restarted job's metrics\n"
    "print(b._value.get())\n"
)


def _second_counter_value(imports: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_feast_alone_makes_two_counters_share_one_value():
    assert _second_counter_value("import feast") == "2.0"  # the trap rtml guards against


def test_rtml_first_keeps_counters_separate():
    assert _second_counter_value("import core, feast") == "1.0"
