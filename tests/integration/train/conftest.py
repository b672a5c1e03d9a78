"""Shared set-up for trainer runs: a toy dataset and config files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_trainer.data.toy_tasks import toy_splits, write_jsonl


@pytest.fixture(scope="session")
def max3_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train / held-out JSONL of the `max3` toy task (disjoint questions)."""
    root = tmp_path_factory.mktemp("max3")
    train, heldout = toy_splits("max3", 500, 300, seed=0)
    return write_jsonl(train, root / "train.jsonl"), write_jsonl(heldout, root / "heldout.jsonl")


@pytest.fixture(scope="session")
def max3_sft_model(
    tiny_model_dir: Path, max3_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model after 40 supervised steps on `max3`: it answers in the right format and is
    right about 45% of the time (often it names another of the three digits), so GRPO groups have
    reward variance to learn from."""
    import json

    from m2rl_trainer.data.toy_tasks import completion_for
    from m2rl_trainer.train.sft import supervised_warmup

    rows = [json.loads(line) for line in max3_data[0].read_text().splitlines()]
    out = tmp_path_factory.mktemp("sft") / "max3-sft"
    return supervised_warmup(tiny_model_dir, out, [(r["prompt"], completion_for(r)) for r in rows], steps=40)


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
