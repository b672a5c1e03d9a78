"""The clipped policy loss of GRPO, DAPO and Dr.GRPO, and the per-token quantities it needs.

One function, `policy_loss`, covers the three algorithms; they differ only in the inputs the
trainer chooses (AlgorithmConfig): advantages scaled by the group std or not, the clip range, and
the aggregation mode. Per token, with ratio r = pi_theta / pi_old (pi_old: the policy that sampled
the batch) and advantage A:

    loss_t = w_t * pg_t + kl_coef * KL_t - entropy_coef * H_t
    pg_t   = -min(r A, clip(r, 1 - clip_low, 1 + clip_high) A), and with dual-clip, for A < 0,
             min(pg_t, -clip_ratio_c A)
    w_t    = the rollout-correction weight (rollout_correction.py; 1 without correction)

then `aggregate` reduces loss_t over the response tokens (see aggregation.py).

Deviations from the papers, and where verl and TRL differ, the choice made here:

- GRPO (Shao et al. 2024, "DeepSeekMath", arXiv 2402.03300, eq. 3 and 4). The paper's loss is
  seq-mean-token-mean with the k3 KL to the reference inside the per-token sum; that is our "grpo"
  setting, except: the KL is off by default (kl_coef 0, no reference model; the paper used 0.04);
  the group std is the unbiased one plus eps 1e-6 (the paper does not say; verl and TRL do this);
  the log-ratio is clamped to [-20, 20] and k3 to <= 10 (verl's numerical guards); only outcome
  rewards (one scalar per completion), no process supervision.
- DAPO (Yu et al. 2025, "DAPO", arXiv 2503.14476). Clip-higher, token-level loss (token-mean over
  all tokens of the batch, kept exact under gradient accumulation by the global token count),
  dynamic sampling (`zero_variance_groups`; the refill is the trainer's) and overlong shaping
  (reward_shaping.py) are as in the paper. DAPO drops the KL term; here it is allowed (kl_coef).
- Dr.GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv 2503.20783). No std
  scaling, and the sum of token losses divided by a constant: MAX_TOKENS times the number of
  sequences, as the paper's code listing and TRL's "dr_grpo" do. verl's seq-mean-token-sum-norm does
  not divide by the number of sequences (its loss is that many times larger); we follow the paper.
- PPO dual-clip (Ye et al. 2019, "Mastering Complex Control in MOBA Games with Deep RL", arXiv
  1912.09729): `clip_ratio_c` bounds the loss of a negative-advantage token at -c A however large
  its ratio, as verl's `compute_policy_loss_vanilla` (always on there, c = 3) and slime's
  `compute_policy_loss` (`--eps-clip-c`, off by default) do. Off by default here (None), as in the
  three papers and TRL.
- Rollout/trainer mismatch (not in the papers): `is_weights` multiplies the policy term per token,
  after the dual clip, as slime's `--use-tis` and verl's rollout correction do (see
  rollout_correction.py).
- Entropy bonus (in none of the three papers; off by default): aggregated with the same mode and
  normalisers as the policy term, as verl does, so accumulation stays exact. TRL always takes a
  token-mean of the entropy whatever its loss type.
- The ratio is per token (not GSPO's per sequence). `old_logprobs` should come from the policy that
  generated the tokens (vLLM's logprobs, or the trainer's recomputation before the first update);
  with several update epochs per batch they stay fixed while `logprobs` move.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from m2rl_trainer.grpo.aggregation import aggregate
from m2rl_trainer.grpo.kl import kl_penalty


def selective_log_softmax(logits: Tensor, token_ids: Tensor) -> Tensor:
    """log softmax(logits)[token_id] per position; logits [B, T, V], token_ids [B, T] -> [B, T].

    Equal to `logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]` without materialising the
    [B, T, V] log-softmax: one row of the batch at a time (TRL's `selective_log_softmax` idea).
    Divide logits by the sampling temperature first. Low-precision logits are upcast to float32
    per row (bf16 log-softmax is too coarse for importance ratios), so the result is float32.
    """
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)  # [B, T]
        # [B, T]; a loop over rows so that only one row's exp([T, V]) exists at a time
        log_norm = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
        return picked - log_norm
    rows = [
        F.log_softmax(row.float(), dim=-1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
        for row, ids in zip(logits, token_ids, strict=True)
    ]
    return torch.stack(rows)


def token_entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy (nats) of the next-token distribution per position; logits [B, T, V] -> [B, T].

    H = logsumexp(z) - sum softmax(z) z, computed one batch row at a time to bound the peak memory;
    low-precision logits are upcast to float32. Differentiable (for an entropy bonus).
    """
    rows = []
    for row in logits:  # [T, V]
        row = row if row.dtype in (torch.float32, torch.float64) else row.float()
        rows.append(torch.logsumexp(row, dim=-1) - (F.softmax(row, dim=-1) * row).sum(dim=-1))
    return torch.stack(rows)


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float,
    clip_high: float,
    aggregation: str,
    num_tokens: float | None = None,
    num_sequences: float | None = None,
    max_response_tokens: int | None = None,
    ref_logprobs: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    clip_ratio_c: float | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Clipped surrogate loss (+ KL, - entropy) of one micro-batch, and its statistics.

    logprobs [B, T] (with grad), old_logprobs [B, T] (sampling policy), advantages [B] (one per
    sequence) or [B, T], mask [B, T] (1 on response tokens), ref_logprobs [B, T] (needed when
    kl_coef > 0; given with kl_coef 0 it is only measured), entropy [B, T] (with grad when
    entropy_coef > 0). num_tokens / num_sequences / max_response_tokens: see `aggregate`.
    clip_ratio_c: the dual-clip bound (> 1) for negative advantages; None: off. is_weights [B, T]:
    rollout-correction weights of the policy term (no gradient); None: 1.

    Statistics are token means over this micro-batch (combine micro-batches weighted by
    "num_tokens"): clip_fraction (= clip_fraction_low + clip_fraction_high: tokens whose clipped term
    is the active one, i.e. r < 1 - clip_low with A < 0, or r > 1 + clip_high with A > 0),
    approx_kl (verl's ppo_kl, mean of log pi_old - log pi_theta), ratio_mean, ratio_max, kl_ref,
    entropy, and with dual-clip dual_clip_ratio (tokens whose dual bound is the active one, verl's
    pg_clipfrac_lower).
    """
    if kl_coef != 0.0 and ref_logprobs is None:
        raise ValueError("kl_coef is non-zero but no ref_logprobs were given")
    if clip_ratio_c is not None and clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 (dual-clip lower bound), got {clip_ratio_c}")
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(-1)  # [B, 1], broadcast over tokens
    # [B, T]; clamped as verl does, so that exp cannot overflow
    log_ratio = (logprobs - old_logprobs).clamp(min=-20.0, max=20.0)
    ratio = torch.exp(log_ratio)
    clipped_ratio = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    per_token = -torch.minimum(ratio * advantages, clipped_ratio * advantages)  # [B, T]
    dual = None
    if clip_ratio_c is not None:
        bound = -clip_ratio_c * advantages  # [B, 1]: the most a negative-advantage token may cost
        dual = (advantages < 0) & (per_token > bound)  # [B, T]
        per_token = torch.where(advantages < 0, torch.minimum(per_token, bound), per_token)
    if is_weights is not None:
        per_token = per_token * is_weights.detach()

    kl = None
    if ref_logprobs is not None:  # measured even when not in the loss (then without a graph)
        kl = kl_penalty(logprobs if kl_coef != 0.0 else logprobs.detach(), ref_logprobs, kl_estimator)
        if kl_coef != 0.0:
            per_token = per_token + kl_coef * kl  # verl's use_kl_loss: a loss term, not a reward penalty
    if entropy is not None and entropy_coef != 0.0:
        per_token = per_token - entropy_coef * entropy  # a bonus: higher entropy lowers the loss

    loss = aggregate(
        per_token,
        mask,
        aggregation,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        max_response_tokens=max_response_tokens,
    )
    return loss, _stats(mask, ratio, log_ratio, advantages, clip_low, clip_high, kl, entropy, dual)


def clip_regions(
    ratio: Tensor, advantages: Tensor, clip_low: float, clip_high: float
) -> tuple[Tensor, Tensor]:
    """(low, high), bool [B, T]: tokens whose clipped term is the active one, r < 1 - clip_low with
    A < 0 (low) or r > 1 + clip_high with A > 0 (high); advantages [B, 1] or [B, T]."""
    return (ratio < 1.0 - clip_low) & (advantages < 0), (ratio > 1.0 + clip_high) & (advantages > 0)


@torch.no_grad()
def _stats(
    mask: Tensor,
    ratio: Tensor,
    log_ratio: Tensor,
    advantages: Tensor,
    clip_low: float,
    clip_high: float,
    kl: Tensor | None,
    entropy: Tensor | None,
    dual: Tensor | None,
) -> dict[str, float]:
    valid = mask.bool()  # [B, T]
    count = valid.sum()

    def mean(x: Tensor) -> Tensor:
        x = x.expand_as(valid).to(ratio.dtype)
        return torch.where(valid, x, torch.zeros_like(x)).sum() / count.clamp(min=1)

    low, high = clip_regions(ratio, advantages, clip_low, clip_high)  # [B, T]
    stats = {
        "clip_fraction": mean(low | high),
        "clip_fraction_low": mean(low),
        "clip_fraction_high": mean(high),
        "approx_kl": mean(-log_ratio),
        "ratio_mean": mean(ratio),
        "ratio_max": torch.where(valid, ratio, torch.zeros_like(ratio)).max(),
        "num_tokens": count.to(ratio.dtype),
    }
    if kl is not None:
        stats["kl_ref"] = mean(kl)
    if entropy is not None:
        stats["entropy"] = mean(entropy)
    if dual is not None:
        stats["dual_clip_ratio"] = mean(dual)
    values = torch.stack(list(stats.values())).tolist()  # one device sync for all of them
    return dict(zip(stats, values, strict=True))
