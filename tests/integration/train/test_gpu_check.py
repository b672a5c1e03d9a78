"""The GPU check's reduced CPU form runs the same checks through the same code, so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHECKS = [
    "environment", "model", "chunked head", "shared prefix, checkpointing", "train, gradient checkpointing",
    "train, no checkpointing", "loss on the device", "process group", "deepspeed zero-2", "all",
]  # fmt: skip


def test_gpu_check_cpu_form_passes_every_check() -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None), env.pop("MASTER_PORT", None)
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu-check.sh"), "--cpu"],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith(("PASS ", "FAIL "))]
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert [line.split(":")[0].split(" ", 1)[1] for line in lines] == CHECKS, lines
    assert all(line.startswith("PASS") for line in lines)
    train = next(line for line in lines if line.startswith("PASS train, gradient checkpointing"))
    assert "<= bound" in train and "2048 response tokens" in train
