"""The deploy scripts start the fit only once every GPU's worker has joined (`--wait-workers`).

The scripts run under bash with stand-ins for `nvidia-smi`, `dask`, `srun` and `dreml` first on
PATH: each records its arguments, `dask scheduler` writes its scheduler file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

_STANDINS = {
    "nvidia-smi": 'printf "GPU 0: H100 (UUID: GPU-a)\\nGPU 1: H100 (UUID: GPU-b)\\nGPU 2: H100 (UUID: GPU-c)\\n"',
    "dask": """echo "dask $*" >> "$RECORD"
if [ "$1" = scheduler ]; then
  while [ "$1" != --scheduler-file ]; do shift; done
  echo '{"address": "tcp://10.0.0.1:8786"}' > "$2"
fi""",
    "srun": 'echo "srun $*" >> "$RECORD"',
    "dreml": 'echo "dreml $*" >> "$RECORD"',
}

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _run(script: str, tmp_path: Path, env: dict[str, str]) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in _STANDINS.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "record.txt"
    base = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES" and not k.startswith("SLURM_")}
    done = subprocess.run(
        ["bash", str(DEPLOY / script), "s.zarr", "p.pheno", "out", "--seed", "1"],
        env={**base, **env, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return record.read_text().splitlines()


def _fit(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("dreml fit"))


def test_gpu_node__waits_for_one_worker_per_gpu_of_the_node(tmp_path):
    lines = _run("gpu_node.sh", tmp_path, {})
    assert "--scheduler tcp://10.0.0.1:8786 --wait-workers 3 --seed 1" in _fit(lines)
    assert any(line.startswith("dask cuda worker") and "--device-memory-limit 0.9" in line for line in lines)


def test_gpu_node__waits_for_the_visible_gpus(tmp_path):
    lines = _run("gpu_node.sh", tmp_path, {"CUDA_VISIBLE_DEVICES": "0,2", "DEVICE_MEMORY_LIMIT": "70GiB"})
    assert "--wait-workers 2 " in _fit(lines)
    assert any(line.startswith("dask cuda worker") and "--device-memory-limit 70GiB" in line for line in lines)


@pytest.mark.parametrize(("gpus_per_node", "expected"), [("a100:4", 8), ("4", 8), (None, 6)])
def test_slurm__waits_for_nodes_times_gpus_per_node(tmp_path, gpus_per_node, expected):
    env = {"SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_ID": "42"}
    if gpus_per_node is not None:
        env["SLURM_GPUS_PER_NODE"] = gpus_per_node  # else counted by nvidia-smi on the first node: 3
    lines = _run("slurm_dask_cuda.sbatch", tmp_path, env)
    assert f"--wait-workers {expected} --seed 1" in _fit(lines)
    assert any(line.startswith("srun") and "dask cuda worker" in line for line in lines)
