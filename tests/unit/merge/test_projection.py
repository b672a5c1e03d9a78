"""The analysis' random projection: splitmix64 as published, rows exactly orthonormal, independent of
how the tensor is split into blocks, and a projected cosine within its known error."""

from __future__ import annotations

import math

import pytest
import torch

from m2rl_trainer.merge.projection import mix64, rows_and_signs, tensor_key
from tests.unit.merge.checkpoints import dense_projection

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

MASK = (1 << 64) - 1


def _splitmix64(state: int) -> int:
    """The reference splitmix64 step (Steele, Lea and Flood 2014; Vigna's C code) in Python integers."""
    z = (state + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def test_mix64_is_splitmix64() -> None:
    # The published first outputs for seed 1234567 (Vigna's splitmix64.c).
    state, outputs = 1234567, []
    for _ in range(3):
        outputs.append(_splitmix64(state))
        state = (state + 0x9E3779B97F4A7C15) & MASK
    assert outputs == [6457827717110365317, 3203168211198807973, 9817491932198370423]
    states = [0, 1, 2**62 + 12345, 2**63 - 1, 2**64 - 1]
    gamma = 0x9E3779B97F4A7C15
    signed = torch.tensor([((s + gamma) & MASK) - (1 << 64) * (((s + gamma) & MASK) >> 63) for s in states])
    got = [int(v) & MASK for v in mix64(signed)]
    assert got == [_splitmix64(s) for s in states]


def test_rows_are_orthonormal_and_blocks_do_not_matter() -> None:
    base = {"a.weight": torch.zeros(37, 29), "b.bias": torch.zeros(300)}
    p = dense_projection(base, list(base), 256, seed=3)
    gram = p @ p.T
    filled = p.abs().sum(dim=1) > 0
    assert int(filled.sum()) > 240  # 1373 entries over 256 rows: few rows stay empty
    torch.testing.assert_close(gram[filled][:, filled], torch.eye(int(filled.sum()), dtype=torch.float64))
    # Rows and signs of entries 100..199 are the same whether asked for alone or within 0..299.
    key = tensor_key(3, "b.bias")
    whole = rows_and_signs(key, 0, 300, 256)
    part = rows_and_signs(key, 100, 100, 256)
    assert torch.equal(whole[0][100:200], part[0]) and torch.equal(whole[1][100:200], part[1])
    assert set(whole[1].tolist()) == {-1.0, 1.0}
    # Another seed, another projection.
    assert not torch.equal(rows_and_signs(tensor_key(4, "b.bias"), 0, 300, 256)[0], whole[0])


@pytest.mark.parametrize("c", [0.0, 0.5, 0.9])
def test_projected_cosine_is_within_its_known_error(c: float) -> None:
    """Pairs of spread-out vectors of cosine c in 20,000 dimensions, 40 projection seeds: the projected
    cosine is unbiased and its standard deviation is (1 - c^2) / sqrt(256), as for a Gaussian random
    projection (0.0625 for orthogonal vectors)."""
    n, dims, trials = 20_000, 256, 40
    g = torch.Generator().manual_seed(0)
    x, noise = (
        torch.randn(n, generator=g, dtype=torch.float64),
        torch.randn(n, generator=g, dtype=torch.float64),
    )
    noise -= (noise @ x) / (x @ x) * x
    y = c * x / x.norm() + math.sqrt(1 - c * c) * noise / noise.norm()
    x = x / x.norm()
    assert float(x @ y) == pytest.approx(c, abs=1e-12)
    errors = []
    for seed in range(trials):
        rows, signs = rows_and_signs(tensor_key(seed, "t"), 0, n, dims)
        z = torch.zeros(2, dims, dtype=torch.float64).index_add_(1, rows, torch.stack([x, y]) * signs)
        z = z / torch.bincount(rows, minlength=dims).clamp(min=1).sqrt()
        errors.append(float(torch.nn.functional.cosine_similarity(z[0], z[1], dim=0)) - c)
    sigma = (1 - c * c) / math.sqrt(dims)
    spread = torch.tensor(errors).std().item()
    assert 0.6 * sigma < spread < 1.5 * sigma
    assert abs(sum(errors) / trials) < 3 * sigma / math.sqrt(trials)
    assert max(abs(e) for e in errors) < 4 * sigma
