"""Every aggregation mode against the ragged-list reference, with and without global normalisers."""

import math

import pytest
import torch

from m2rl_trainer.grpo import AGGREGATIONS, aggregate, normalisers
from tests.unit.grpo import reference

MODES = list(AGGREGATIONS)
# Ragged per-token values of 4 sequences (lengths 3, 1, 5, 2), padded to width 6 with NaN.
ROWS = [[0.5, -1.0, 2.0], [4.0], [0.1, 0.2, 0.3, 0.4, 0.5], [-2.0, 1.5]]
WIDTH = 6


def padded(rows, width=WIDTH, fill=math.nan):
    values = torch.tensor([row + [fill] * (width - len(row)) for row in rows], dtype=torch.float64)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return values, mask


@pytest.mark.parametrize("mode", MODES)
def test_own_counts_match_reference(mode):
    values, mask = padded(ROWS)
    got = aggregate(values, mask, mode).item()
    assert got == pytest.approx(reference.aggregate(ROWS, mode, max_len=WIDTH), abs=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_global_counts_match_reference(mode):
    values, mask = padded(ROWS)
    got = aggregate(values, mask, mode, num_tokens=40.0, num_sequences=9.0, max_response_tokens=16).item()
    assert got == pytest.approx(reference.aggregate(ROWS, mode, 40.0, 9.0, 16), abs=1e-12)


def test_hand_computed_values():
    values, mask = padded(ROWS)
    total = 0.5 - 1.0 + 2.0 + 4.0 + 1.5 - 2.0 + 1.5  # = 6.5
    assert aggregate(values, mask, "token-mean").item() == pytest.approx(total / 11)
    assert aggregate(values, mask, "seq-mean-token-mean").item() == pytest.approx(
        (1.5 / 3 + 4.0 + 1.5 / 5 - 0.5 / 2) / 4
    )
    assert aggregate(values, mask, "seq-mean-token-sum").item() == pytest.approx(total / 4)
    assert aggregate(values, mask, "seq-mean-token-sum-norm", max_response_tokens=8).item() == pytest.approx(
        total / 32
    )


def test_sum_norm_defaults_to_padded_width_like_verl():
    values, mask = padded(ROWS, width=10)
    assert aggregate(values, mask, "seq-mean-token-sum-norm").item() == pytest.approx(6.5 / (10 * 4))


@pytest.mark.parametrize("mode", MODES)
def test_empty_sequences_are_not_counted(mode):
    # A fully masked row adds nothing and is not a sequence (verl); no NaN from 0 / 0.
    with_empty = [*ROWS, []]
    values, mask = padded(with_empty)
    got = aggregate(values, mask, mode).item()
    assert got == pytest.approx(reference.aggregate(ROWS, mode, max_len=WIDTH), abs=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_empty_batch_gives_zero(mode):
    values, mask = padded([[], []])
    assert aggregate(values, mask, mode).item() == 0.0


def test_padding_gets_no_gradient():
    values, mask = padded(ROWS, fill=1e30)
    values.requires_grad_(True)
    aggregate(values, mask, "token-mean").backward()
    assert values.grad is not None
    assert torch.equal(values.grad, mask.to(torch.float64) / 11)


def test_normalisers_count_tokens_and_nonempty_sequences():
    _, mask = padded([*ROWS, []])
    assert normalisers(mask) == (11.0, 4.0)


def test_unknown_mode_names_itself():
    values, mask = padded(ROWS)
    with pytest.raises(ValueError, match="'seq-sum'"):
        aggregate(values, mask, "seq-sum")


@pytest.mark.parametrize("field", ["num_tokens", "num_sequences", "max_response_tokens"])
def test_non_positive_normaliser_is_rejected(field):
    values, mask = padded(ROWS)
    with pytest.raises(ValueError, match=field):
        aggregate(values, mask, "token-mean", **{field: 0})
