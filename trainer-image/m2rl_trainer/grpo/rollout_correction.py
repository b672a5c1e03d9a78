"""Rollout/trainer mismatch correction: a weight per token from pi_old_trainer / pi_rollout.

The rollout engine (vLLM: other kernels, bf16, other batch shapes) and the trainer give the same
tokens slightly different probabilities, so the rollout's log-probabilities are not exactly the
sampling policy as the trainer sees it. With `recompute_old_logprobs` the trainer recomputes
pi_old in one forward pass without gradient; the PPO ratio becomes pi_theta / pi_old_trainer
(exactly 1 at the first update) and the mismatch enters only through a per-token weight of the
clipped policy term, with rho = pi_old_trainer / pi_rollout:

- "tis", truncated importance sampling (Yao et al. 2025, "Your Efficient RL Framework Secretly
  Brings You Off-Policy RL Training", fengyao.notion.site/off-policy-rl): w = clamp(rho, floor, cap).
  slime's `--use-tis` (`vanilla_tis_function` in slime/backends/megatron_utils/loss.py, with
  `--tis-clip` 2.0 and `--tis-clip-low` 0) and verl's `rollout_is: token` with
  `rollout_is_threshold` (verl/trainer/ppo/rollout_corr_helper.py) do this.
- "mis", masked importance sampling: w = rho inside [floor, cap], 0 outside, i.e. tokens whose
  mismatch is too large are rejected (slime's `icepop_function` and the "mask" mode of
  examples/train_infer_mismatch_helper/mis.py; verl's rejection sampling). A rejected token still
  counts in the loss normalisers, as slime keeps the pre-rejection denominators.

rho is computed from the log-ratio clamped to [-20, 20] (slime's and verl's SAFETY_BOUND), so exp
cannot overflow. The weights carry no gradient and multiply the policy term only, not the KL or
entropy terms, as in both frameworks.
"""

from __future__ import annotations

import torch
from torch import Tensor

SAFETY_BOUND = 20.0
MODES = ("none", "tis", "mis")


def _rho(trainer_logprobs: Tensor, rollout_logprobs: Tensor) -> Tensor:
    return torch.exp((trainer_logprobs - rollout_logprobs).clamp(-SAFETY_BOUND, SAFETY_BOUND))


@torch.no_grad()
def importance_weights(
    trainer_logprobs: Tensor, rollout_logprobs: Tensor, mode: str, *, cap: float, floor: float = 0.0
) -> Tensor:
    """Per-token weights [B, T] for the policy term; trainer_logprobs, rollout_logprobs: [B, T].

    mode "tis": clamp(rho, floor, cap); "mis": rho where floor <= rho <= cap, else 0; "none": 1.
    Padding positions get finite values; the aggregation masks them.
    """
    if mode not in MODES:
        raise ValueError(f"unknown importance_sampling mode {mode!r} (known: {', '.join(MODES)})")
    if mode == "none":
        return torch.ones_like(trainer_logprobs)
    rho = _rho(trainer_logprobs, rollout_logprobs)
    if mode == "tis":
        return rho.clamp(min=floor, max=cap)
    return torch.where((rho >= floor) & (rho <= cap), rho, torch.zeros_like(rho))


@torch.no_grad()
def mismatch_sums(
    trainer_logprobs: Tensor,
    rollout_logprobs: Tensor,
    mask: Tensor,
    mode: str,
    *,
    cap: float,
    floor: float = 0.0,
) -> dict[str, Tensor]:
    """Sums over the valid tokens of mask [B, T], to be added over micro-batches and ranks:

    tokens; kl (sum of log pi_rollout - log pi_trainer: the k1 estimate of KL(pi_rollout ||
    pi_trainer), verl's `rollout_corr/kl`); k3_kl (sum of rho - 1 - log rho, verl's
    `rollout_corr/k3_kl`); corrected (tokens whose weight is not rho: truncated by tis, rejected
    by mis; 0 for "none"); weight (sum of the weights); ratio_max (the largest rho: combine with max).
    """
    valid = mask.bool()
    log_rho = (trainer_logprobs - rollout_logprobs).clamp(-SAFETY_BOUND, SAFETY_BOUND)
    rho = torch.exp(log_rho)
    weights = importance_weights(trainer_logprobs, rollout_logprobs, mode, cap=cap, floor=floor)
    zero = torch.zeros_like(rho)

    def total(x: Tensor) -> Tensor:
        return torch.where(valid, x, zero).sum()

    corrected = (weights != rho) if mode != "none" else torch.zeros_like(valid)
    return {
        "tokens": valid.sum().to(rho.dtype),
        "kl": total(-log_rho),
        "k3_kl": total(torch.expm1(log_rho) - log_rho),
        "corrected": total(corrected.to(rho.dtype)),
        "weight": total(weights),
        "ratio_max": torch.where(valid, rho, zero).max() if valid.any() else zero.sum(),
    }
