"""Shared set-up for trainer runs: config files (the toy data and warm-up model are in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def write_config(path: Path, model: Path, dataset: Path, output_dir: Path, **overrides: Any) -> Path:
    """A small colocated GRPO config; `overrides` replace top-level sections (merged one level deep)."""
    config: dict[str, Any] = {
        "model": str(model),
        "output_dir": str(output_dir),
        "run_name": output_dir.name,
        "data": {"domains": [{"name": "math", "dataset": str(dataset), "verifier": "math"}]},
        "algorithm": {
            "group_size": 4,
            "prompts_per_step": 4,
            "learning_rate": 1e-3,
            "max_response_tokens": 8,
            "steps": 6,
            "micro_batch_size": 8,
            "seed": 3,
        },
        "rollout": {"mode": "colocated"},
        "deepspeed": {"zero_stage": 2},
        "checkpoint": {"every_steps": 1, "keep": 0},
    }
    for key, value in overrides.items():
        config[key] = {**config[key], **value} if isinstance(config.get(key), dict) else value
    path.write_text(yaml.safe_dump(config))
    return path


def run_script_json(script: str, *args: str) -> Any:
    """Run `script` in a fresh interpreter (one intra-op thread, offline) and decode the JSON of its
    last stdout line; a non-zero exit fails with its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
