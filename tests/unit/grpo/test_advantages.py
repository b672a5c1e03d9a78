"""Group advantages and zero-variance groups against the plain-Python reference."""

import math

import pytest
import torch

from m2rl_trainer.grpo import group_advantages, zero_variance_groups
from tests.unit.grpo import reference

REWARDS = [
    [1.0, 0.0, 0.0, 1.0],
    [0.0, 0.0, 0.0, 1.0],
    [1.0, 1.0, 1.0, 1.0],  # zero variance
    [0.25, 0.5, 0.0, 1.0],  # partial credit
    [0.0, 0.0, 0.0, 0.0],  # zero variance
]


@pytest.mark.parametrize("scale_by_std", [True, False], ids=["grpo-dapo-std-scaled", "dr_grpo-centred-only"])
def test_matches_reference(scale_by_std):
    got = group_advantages(torch.tensor(REWARDS, dtype=torch.float64), scale_by_std)
    want = reference.advantages(REWARDS, scale_by_std)
    for got_row, want_row in zip(got.tolist(), want, strict=True):
        assert got_row == pytest.approx(want_row, abs=1e-12)


def test_std_is_unbiased_like_verl():
    # [1, 0, 0]: mean 1/3; unbiased std = sqrt((4/9 + 1/9 + 1/9) / 2) = sqrt(1/3); the biased one
    # would be sqrt(2/9) and give 1.4142 instead of 1.1547.
    got = group_advantages(torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64), scale_by_std=True, eps=0.0)
    assert got[0, 0].item() == pytest.approx((2 / 3) / math.sqrt(1 / 3))
    assert got[0, 0].item() == pytest.approx(1.1547005, abs=1e-6)


def test_zero_variance_group_gets_zero_advantage_not_nan():
    got = group_advantages(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), scale_by_std=True)
    assert torch.equal(got, torch.zeros(2, 3))


def test_integer_rewards_are_accepted():
    got = group_advantages(torch.tensor([[1, 0]]), scale_by_std=False)
    assert got.tolist() == [[0.5, -0.5]]


@pytest.mark.parametrize("shape", [(4,), (3, 1)], ids=["flat", "group-of-one"])
def test_bad_shapes_are_rejected(shape):
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages(torch.zeros(shape), scale_by_std=True)


def test_zero_variance_groups_matches_reference():
    got = zero_variance_groups(torch.tensor(REWARDS))
    assert got.tolist() == reference.zero_variance(REWARDS) == [False, False, True, False, True]
