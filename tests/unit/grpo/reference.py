"""An independent reference for the GRPO core: plain Python floats and loops, no torch.

Written from the papers' formulas (and verl's where the papers are silent), not from
m2rl_trainer.grpo: sequences are ragged lists (no padding, no masks), and the KL estimators are
computed from probabilities rather than from log-probability differences.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def advantages(rewards: list[list[float]], scale_by_std: bool, eps: float = 1e-6) -> list[list[float]]:
    """GRPO: (r - mean) / (unbiased std + eps); Dr.GRPO: r - mean."""
    result = []
    for group in rewards:
        n = len(group)
        mean = sum(group) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in group) / (n - 1))
        result.append([(r - mean) / (std + eps) if scale_by_std else r - mean for r in group])
    return result


def zero_variance(rewards: list[list[float]]) -> list[bool]:
    return [len(set(group)) == 1 for group in rewards]


def kl(logprob: float, ref_logprob: float, estimator: str) -> float:
    """Schulman's estimators of KL(p || p_ref) at a sample y ~ p, with r = p_ref(y) / p(y)."""
    r = math.exp(ref_logprob) / math.exp(logprob)
    if estimator == "k1":
        return -math.log(r)
    if estimator == "k2":
        return 0.5 * math.log(r) ** 2
    if estimator == "k3":
        return r - 1.0 - math.log(r)
    raise ValueError(estimator)


def clipped_surrogate(
    logprob: float, old_logprob: float, advantage: float, clip_low: float, clip_high: float
) -> float:
    """-min(r A, clip(r, 1 - eps_low, 1 + eps_high) A), r = p / p_old."""
    r = math.exp(logprob) / math.exp(old_logprob)
    clipped = min(max(r, 1.0 - clip_low), 1.0 + clip_high)
    return -min(r * advantage, clipped * advantage)


def dual_clipped_surrogate(
    logprob: float, old_logprob: float, advantage: float, clip_low: float, clip_high: float, c: float
) -> float:
    """Dual-clip PPO (Ye et al. 2019, eq. 5): for A < 0 the objective is max(min(r A, clip(r) A), c A)."""
    r = math.exp(logprob) / math.exp(old_logprob)
    clipped = min(max(r, 1.0 - clip_low), 1.0 + clip_high)
    objective = min(r * advantage, clipped * advantage)
    if advantage < 0:
        objective = max(objective, c * advantage)
    return -objective


def importance_weight(
    trainer_logprob: float, rollout_logprob: float, mode: str, cap: float, floor: float
) -> float:
    """rho = p_trainer / p_rollout; tis: truncated into [floor, cap]; mis: rho inside, 0 outside."""
    rho = math.exp(trainer_logprob) / math.exp(rollout_logprob)
    if mode == "tis":
        return min(max(rho, floor), cap)
    if mode == "mis":
        return rho if floor <= rho <= cap else 0.0
    raise ValueError(mode)


def aggregate(
    rows: list[list[float]],
    mode: str,
    num_tokens: float | None = None,
    num_sequences: float | None = None,
    max_len: int | None = None,
) -> float:
    """verl's modes over ragged rows; empty rows count as no sequence."""
    nonempty = [row for row in rows if row]
    tokens = num_tokens if num_tokens is not None else sum(len(row) for row in rows)
    sequences = num_sequences if num_sequences is not None else len(nonempty)
    total = sum(sum(row) for row in rows)
    if mode == "token-mean":
        return total / tokens
    if mode == "seq-mean-token-mean":
        return sum(sum(row) / len(row) for row in nonempty) / sequences
    if mode == "seq-mean-token-sum":
        return total / sequences
    if mode == "seq-mean-token-sum-norm":
        assert max_len is not None
        return total / (max_len * sequences)
    raise ValueError(mode)


def softmax(logits: list[float]) -> list[float]:
    top = max(logits)
    exps = [math.exp(z - top) for z in logits]
    return [e / sum(exps) for e in exps]


def entropy(logits: list[float]) -> float:
    return -sum(p * math.log(p) for p in softmax(logits) if p > 0)


def log_softmax_at(logits: list[float], index: int) -> float:
    return math.log(softmax(logits)[index])


def overlong(length: int, max_len: int, buffer: int, penalty: float) -> float:
    """DAPO eq. 13, the -1 scaled by `penalty`."""
    if buffer == 0 or length <= max_len - buffer:
        return 0.0
    if length <= max_len:
        return ((max_len - buffer) - length) / buffer * penalty
    return -penalty


@dataclass
class Sequence:
    """One response: per-token values of its valid tokens only."""

    logprobs: list[float]
    old_logprobs: list[float]
    ref_logprobs: list[float]
    entropy: list[float]
    advantage: float


def policy_loss(
    sequences: list[Sequence],
    *,
    clip_low: float,
    clip_high: float,
    mode: str,
    num_tokens: float | None = None,
    num_sequences: float | None = None,
    max_len: int | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy_coef: float = 0.0,
    clip_ratio_c: float | None = None,
    weights: list[list[float]] | None = None,
) -> float:
    rows = []
    for i, s in enumerate(sequences):
        row = []
        for t in range(len(s.logprobs)):
            if clip_ratio_c is None:
                x = clipped_surrogate(s.logprobs[t], s.old_logprobs[t], s.advantage, clip_low, clip_high)
            else:
                x = dual_clipped_surrogate(
                    s.logprobs[t], s.old_logprobs[t], s.advantage, clip_low, clip_high, clip_ratio_c
                )
            if weights is not None:
                x *= weights[i][t]
            if kl_coef:
                x += kl_coef * kl(s.logprobs[t], s.ref_logprobs[t], kl_estimator)
            x -= entropy_coef * s.entropy[t]
            row.append(x)
        rows.append(row)
    return aggregate(rows, mode, num_tokens, num_sequences, max_len)


def clip_fractions(sequences: list[Sequence], clip_low: float, clip_high: float) -> tuple[float, float]:
    """(low, high): fraction of tokens with r < 1 - eps_low and A < 0, r > 1 + eps_high and A > 0."""
    low = high = count = 0
    for s in sequences:
        for lp, old in zip(s.logprobs, s.old_logprobs, strict=True):
            r = math.exp(lp - old)
            low += r < 1.0 - clip_low and s.advantage < 0
            high += r > 1.0 + clip_high and s.advantage > 0
            count += 1
    return low / count, high / count
