"""A hand-made batch for the GRPO core tests: 2 prompts x 3 completions of lengths 4, 2, 5, 1, 3, 5.

Per token, `delta = logprob - old_logprob` is chosen to land in every clip region: inside both
ranges, below 1 - 0.2 (log 0.8 = -0.223), between 1.2 and 1.28 (log 1.2 = 0.182, log 1.28 = 0.247:
clipped by GRPO's 0.2 but not by DAPO's 0.28), and above both; every value stays at least 0.002
from an edge so finite differences do not straddle one. Padding positions hold finite garbage
that the code under test must ignore.
"""

from __future__ import annotations

import math

import torch

from tests.unit.grpo.reference import Sequence

MAX_RESPONSE_TOKENS = 8  # the configured limit: larger than the padded width, as in a real batch
REWARDS = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]  # one advantage sign per completion: +, -, -, -, +, +

OLD_LOGPROBS = [
    [-0.5, -1.2, -2.0, -0.3],
    [-1.0, -0.7],
    [-0.2, -2.5, -1.1, -0.9, -1.6],
    [-1.4],
    [-0.6, -1.8, -0.4],
    [-2.2, -0.8, -1.3, -0.5, -1.0],
]
DELTAS = [
    [0.30, -0.40, 0.05, 0.22],
    [-0.25, 0.15],
    [0.10, -0.10, 0.35, -0.15, 0.0],
    [0.26],
    [-0.30, 0.18, 0.24],
    [0.02, -0.22, 0.40, -0.05, 0.12],
]
# log(pi_old_trainer / pi_rollout) per token, around the importance-sampling bounds used in the
# tests (cap 2: log 2 = 0.693; floor 0.5: log 0.5 = -0.693), with one beyond exp's safety bound (25).
MISMATCH = [
    [0.9, -0.1, 0.0, 0.3],
    [-0.8, 0.2],
    [0.05, 1.2, -0.3, 0.6, -0.05],
    [0.5],
    [-1.0, 0.1, 0.8],
    [0.0, -0.2, 25.0, 0.4, -0.6],
]
PAD_LOGPROB, PAD_OLD, PAD_ENTROPY = 3.0, -7.0, 50.0  # garbage: a ratio of e^10 if it leaked


def sequences(advantages: list[float]) -> list[Sequence]:
    """The batch as ragged reference sequences, with the given advantage per completion."""
    result = []
    for i, (old, delta) in enumerate(zip(OLD_LOGPROBS, DELTAS, strict=True)):
        logprobs = [o + d for o, d in zip(old, delta, strict=True)]
        ref = [lp + 0.4 * math.sin(1.7 * i + t) for t, lp in enumerate(logprobs)]  # |log r| <= 0.4
        entropy = [0.5 + abs(math.cos(i + 2 * t)) for t in range(len(old))]
        result.append(Sequence(logprobs, old, ref, entropy, advantages[i]))
    return result


def flat_advantages(rows: list[list[float]]) -> list[float]:
    return [a for row in rows for a in row]


def padded(
    seqs: list[Sequence], width: int | None = None, dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """Right-padded [B, width] tensors (width: the longest sequence + 1 by default) and advantages [B]."""
    width = width if width is not None else max(len(s.logprobs) for s in seqs) + 1

    def pad(rows: list[list[float]], fill: float) -> torch.Tensor:
        return torch.tensor([row + [fill] * (width - len(row)) for row in rows], dtype=dtype)

    return {
        "logprobs": pad([s.logprobs for s in seqs], PAD_LOGPROB),
        "old_logprobs": pad([s.old_logprobs for s in seqs], PAD_OLD),
        "ref_logprobs": pad([s.ref_logprobs for s in seqs], PAD_OLD),
        "entropy": pad([s.entropy for s in seqs], PAD_ENTROPY),
        "mask": pad([[1.0] * len(s.logprobs) for s in seqs], 0.0),
        "advantages": torch.tensor([s.advantage for s in seqs], dtype=dtype),
    }


def rollout_logprobs(seqs: list[Sequence]) -> list[list[float]]:
    """The rollout log-probabilities of the hand-made batch: the trainer's old ones minus MISMATCH."""
    return [
        [o - m for o, m in zip(s.old_logprobs, gap, strict=True)]
        for s, gap in zip(seqs, MISMATCH, strict=True)
    ]


def padded_with_rollout(seqs: list[Sequence]) -> dict[str, torch.Tensor]:
    """`padded`, plus the rollout log-probabilities [B, width] (padding: garbage)."""
    batch = padded(seqs)
    width = batch["mask"].shape[1]
    rows = [row + [PAD_LOGPROB] * (width - len(row)) for row in rollout_logprobs(seqs)]
    batch["rollout_logprobs"] = torch.tensor(rows, dtype=batch["logprobs"].dtype)
    return batch
