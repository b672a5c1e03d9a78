"""DAPO's soft overlong punishment against the paper's piecewise definition."""

import pytest
import torch

from m2rl_trainer.grpo import overlong_penalty
from tests.unit.grpo import reference

LENGTHS = [0, 10, 12, 13, 14, 15, 16, 17]  # max 16, buffer 4: the ramp starts after 12


@pytest.mark.parametrize("penalty", [1.0, 0.5], ids=["dapo-penalty-1", "penalty-0.5"])
def test_matches_paper(penalty):
    got = overlong_penalty(torch.tensor(LENGTHS), max_response_tokens=16, buffer_tokens=4, penalty=penalty)
    want = [reference.overlong(n, 16, 4, penalty) for n in LENGTHS]
    assert got.tolist() == pytest.approx(want)
    assert got.tolist() == pytest.approx(
        [0, 0, 0, -0.25 * penalty, -0.5 * penalty, -0.75 * penalty, -penalty, -penalty]
    )


def test_zero_buffer_switches_it_off():
    assert overlong_penalty(torch.tensor([5, 64, 99]), 64, 0, 1.0).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("buffer", [-1, 16, 20], ids=["negative", "equal-to-max", "above-max"])
def test_bad_buffer_is_rejected(buffer):
    with pytest.raises(ValueError, match="buffer_tokens"):
        overlong_penalty(torch.tensor([1]), 16, buffer, 1.0)
