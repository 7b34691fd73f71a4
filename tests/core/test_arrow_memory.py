"""Arrow's pool for large joins: jemalloc (else the system allocator) unless the operator chose one."""

import os
import subprocess
import sys

CHECK = "import pyarrow as pa; from core.arrow_memory import use_fast_pool; use_fast_pool(); print(pa.default_memory_pool().backend_name)"


def _backend(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"} | env_extra
    return subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_joins_use_jemalloc_unless_the_operator_chose_a_pool():
    assert _backend({}) in ("jemalloc", "system")  # never pyarrow's mimalloc default
    assert _backend({"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}) == "mimalloc"
