"""A model that is right some of the time, and benchmark files, for end-to-end evaluations."""

from __future__ import annotations

from pathlib import Path

import pytest

from m2rl_trainer.data.toy_tasks import completion_for, toy_splits


@pytest.fixture(scope="session")
def sft_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after 40 supervised steps on the `max3` toy task (about 6 s): it answers
    `\\boxed{D}` and is right on roughly a fifth to a third of the samples at temperature 1, so every
    metric has something to count. (tests/integration/train has the same fixture; not shared.)"""
    from m2rl_trainer.train.sft import supervised_warmup

    train, _ = toy_splits("max3", 500, 0, seed=0)
    out = tmp_path_factory.mktemp("eval-sft") / "max3-sft"
    return supervised_warmup(tiny_model_dir, out, [(r["prompt"], completion_for(r)) for r in train], steps=40)


@pytest.fixture(scope="session")
def max3_heldout() -> list[dict[str, str]]:
    """24 `max3` questions the warm-up never saw."""
    return toy_splits("max3", 500, 24, seed=0)[1]
