"""The rtml image's entry points, run here without Docker: the Spark-on-Kubernetes entrypoint builds the
commands the operator's pods expect, and rtml/cli.py hands its arguments to the rtml CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.manifests import INFRA, REPO_ROOT

ENTRYPOINT = INFRA / "docker" / "spark-entrypoint.sh"


def _fake_bin(path: Path, name: str) -> None:
    """A stand-in that prints its name and arguments, one per line (tini execs what follows `--`)."""
    script = path / name
    if name == "tini":
        script.write_text('#!/usr/bin/env bash\nwhile [ "$1" != "--" ]; do shift; done; shift; exec "$@"\n')
    else:
        script.write_text(f'#!/usr/bin/env bash\necho {name}; for a in "$@"; do echo "$a"; done\n')
    script.chmod(0o755)


@pytest.fixture
def fake_env(tmp_path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    spark_bin = tmp_path / "spark" / "bin"
    bin_dir.mkdir()
    spark_bin.mkdir(parents=True)
    for name in ("tini", "java"):
        _fake_bin(bin_dir, name)
    _fake_bin(spark_bin, "spark-submit")
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SPARK_HOME": str(tmp_path / "spark"), "HOME": str(tmp_path)}


def _run(args: list[str], env: dict[str, str]) -> list[str]:
    done = subprocess.run(["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_driver_runs_spark_submit_in_client_mode_bound_to_the_pod(fake_env):
    env = {**fake_env, "SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3"}
    out = _run(["driver", "--properties-file", "/opt/spark/conf/spark.properties", "local:///app/rtml/cli.py", "stream"], env)
    assert out[0] == "spark-submit"
    assert out[1:] == [
        "--conf", "spark.driver.bindAddress=10.1.2.3",
        "--conf", "spark.executorEnv.SPARK_DRIVER_POD_IP=10.1.2.3",
        "--deploy-mode", "client",
        "--properties-file", "/opt/spark/conf/spark.properties", "local:///app/rtml/cli.py", "stream",
    ]


def test_executor_runs_the_kubernetes_executor_backend(fake_env):
    env = {
        **fake_env, "SPARK_EXECUTOR_MEMORY": "2g", "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver:7078",
        "SPARK_EXECUTOR_ID": "3", "SPARK_EXECUTOR_CORES": "1", "SPARK_APPLICATION_ID": "spark-abc",
        "SPARK_EXECUTOR_POD_IP": "10.1.2.4", "SPARK_RESOURCE_PROFILE_ID": "0", "SPARK_EXECUTOR_POD_NAME": "rtml-stream-exec-3",
        "SPARK_JAVA_OPT_0": "-Dspark.driver.port=7078",
    }
    out = _run(["executor"], env)
    assert out[0] == "java"
    assert out[1:4] == ["-Dspark.driver.port=7078", "-Xms2g", "-Xmx2g"]
    assert out[4] == "-cp" and f"{env['SPARK_HOME']}/jars/*" in out[5].split(":")
    backend = out[6:]
    assert backend[0] == "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
    options = dict(zip(backend[1::2], backend[2::2], strict=True))
    assert options == {
        "--driver-url": env["SPARK_DRIVER_URL"], "--executor-id": "3", "--cores": "1", "--app-id": "spark-abc",
        "--hostname": "10.1.2.4", "--resourceProfileId": "0", "--podName": "rtml-stream-exec-3",
    }


def test_other_commands_pass_through(fake_env):
    assert _run(["echo", "rtml", "monitor"], fake_env) == ["rtml monitor"]


def test_cli_script_hands_arguments_to_the_rtml_cli():
    """Run as a script (as spark-submit does): rtml/ first on sys.path shadows no package (no rtml/kafka.py any more)."""
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "rtml" / "cli.py"), "stream", "--help"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: rtml stream" in done.stdout and "--metrics-port" in done.stdout


def test_driver_command_runs_the_cli_script_under_real_spark_submit(tmp_path):
    """The operator's driver path end to end, minus Kubernetes: entrypoint `driver` -> pyspark's real
    spark-submit (client mode) -> PythonRunner -> rtml/cli.py -> the rtml CLI."""
    import pyspark

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_bin(bin_dir, "tini")
    python = sys.executable
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SPARK_")},
        "PATH": f"{bin_dir}:{Path(python).parent}:{os.environ['PATH']}",
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
        "PYSPARK_PYTHON": python,
        "PYSPARK_DRIVER_PYTHON": python,
    }
    done = subprocess.run(
        ["bash", str(ENTRYPOINT), "driver", "--master", "local[1]", "--conf", "spark.ui.enabled=false",
         str(REPO_ROOT / "rtml" / "cli.py"), "stream", "--help"],
        env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "usage: rtml stream" in done.stdout
