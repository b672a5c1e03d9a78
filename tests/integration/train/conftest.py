"""Shared set-up for trainer runs: config files (the toy data and warm-up model are in tests/conftest.py)."""

from __future__ import annotations

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
