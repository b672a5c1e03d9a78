"""A seeded random projection with exactly orthonormal rows, computed a block of entries at a time.

The study compares task vectors by their cosine after a random orthogonal projection to 256
dimensions (beside the exact cosine). A dense orthogonal D x N matrix cannot be held or generated for
N in the billions, so the projection here is a hashed one (the "count sketch" of Charikar et al.
2002): entry p of the flattened model goes to row h(p) with sign s(p), both from a hash of
(seed, tensor name, index within the tensor), and row r is divided by sqrt(n_r), the number of
entries hashed to it:

    P[r, p] = s(p) / sqrt(n_r)  if h(p) = r, else 0.

Rows have disjoint supports, so P P^T = I exactly (an orthogonal projection; rows no entry hashes to
are zero). For a task vector u, (P u)_r = sum over h(p) = r of s(p) u_p / sqrt(n_r); the sums are
additive over tensors and blocks, so the model is streamed once. The hash depends only on the
tensor's name and the entry's index, never on the block size or reading order.

Known error: for vectors whose mass is spread over many entries (task vectors of LLMs), the
projected cosine of two vectors with cosine c has a standard deviation of about (1 - c^2) / sqrt(D),
as for a Gaussian random projection: 0.0625 at D = 256 for orthogonal vectors (tests check it).
"""

from __future__ import annotations

import hashlib

import torch

# splitmix64 (Steele, Lea and Flood 2014) in wrapping int64 arithmetic; `>>` on int64 is arithmetic
# in torch, so each shift is masked to act as a logical one.
_GAMMA = -7046029254386353131  # 0x9E3779B97F4A7C15 as a signed int64
_M1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_M2 = -7723592293110705685  # 0x94D049BB133111EB


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's output function on int64 values (wrapping)."""
    x = x ^ ((x >> 30) & ((1 << 34) - 1))
    x = x * _M1
    x = x ^ ((x >> 27) & ((1 << 37) - 1))
    x = x * _M2
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def tensor_key(seed: int, tensor: str) -> int:
    """A 63-bit key per (seed, tensor name)."""
    digest = hashlib.sha256(f"{seed}\0{tensor}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def rows_and_signs(key: int, start: int, count: int, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(row in [0, dims), sign +-1.0) of entries start .. start + count - 1 of the keyed tensor."""
    index = torch.arange(start, start + count, dtype=torch.int64)
    x = mix64(key + (index + 1) * _GAMMA)
    rows = (x & ((1 << 62) - 1)) % dims
    signs = ((x >> 62) & 1).to(torch.float64) * 2 - 1
    return rows, signs
