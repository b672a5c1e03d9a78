"""Benchmark rows for end-to-end evaluations (the warm-up model `max3_sft_model` is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from m2rl_trainer.data.toy_tasks import toy_splits


@pytest.fixture(scope="session")
def max3_heldout() -> list[dict[str, str]]:
    """24 `max3` questions the warm-up never saw."""
    return toy_splits("max3", 500, 24, seed=0)[1]
