"""Loss aggregation: from a per-token loss [B, T] to the scalar that is back-propagated.

Mode names and meanings are verl's (`agg_loss` in verl/trainer/ppo/core_algos.py); TRL's loss types
map to them as "grpo" = seq-mean-token-mean, "bnpo"/"dapo" = token-mean, "dr_grpo" =
seq-mean-token-sum-norm. With S sequences, L_i valid tokens in sequence i and x_it the loss:

- token-mean (DAPO):               sum_i sum_t x_it / num_tokens
- seq-mean-token-mean (GRPO):      sum_i (sum_t x_it / L_i) / num_sequences
- seq-mean-token-sum:              sum_i sum_t x_it / num_sequences
- seq-mean-token-sum-norm (Dr.GRPO): sum_i sum_t x_it / (max_response_tokens * num_sequences)

Exact gradient accumulation: every formula is a sum over sequences divided by a constant, so when a
batch is split into micro-batches and each uses the FULL batch's `num_tokens` / `num_sequences`
(see `normalisers`), the micro-batch losses, and their gradients, sum to the full batch's. With data
parallelism DeepSpeed averages gradients over ranks, so pass the counts over all ranks and multiply
the loss by the world size (verl's `dp_size`).

seq-mean-token-sum-norm follows the Dr.GRPO paper's code and TRL (divide by MAX_TOKENS and by the
number of sequences). verl divides by `loss_mask.shape[-1]` (its padded response width, i.e. the
configured response length, or `loss_scale_factor`) and NOT by the number of sequences: verl's
value is `num_sequences` times ours, which matters under gradient-norm clipping.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Count = float | Tensor  # a normaliser: the caller's global float, or this batch's own count (0-d tensor)


def normalisers(mask: Tensor) -> tuple[float, float]:
    """(num_tokens, num_sequences) of a batch, counted as the defaults of `aggregate` count them.

    mask: [B, T], 1 for response tokens. Sequences with no valid token are not counted (verl).
    Compute this on the whole batch (all micro-batches, all ranks) and pass it to each micro-batch.
    """
    lengths = mask.sum(dim=-1)  # [B]
    return float(lengths.sum()), float((lengths > 0).sum())


def _token_mean(
    token_sums: Tensor, lengths: Tensor, num_tokens: Count, num_sequences: Count, max_len: int
) -> Tensor:
    return token_sums.sum() / num_tokens


def _seq_mean_token_mean(
    token_sums: Tensor, lengths: Tensor, num_tokens: Count, num_sequences: Count, max_len: int
) -> Tensor:
    # Empty sequences contribute 0 (0 / 1) instead of NaN (0 / 0).
    return (token_sums / lengths.clamp(min=1)).sum() / num_sequences


def _seq_mean_token_sum(
    token_sums: Tensor, lengths: Tensor, num_tokens: Count, num_sequences: Count, max_len: int
) -> Tensor:
    return token_sums.sum() / num_sequences


def _seq_mean_token_sum_norm(
    token_sums: Tensor, lengths: Tensor, num_tokens: Count, num_sequences: Count, max_len: int
) -> Tensor:
    # A constant normaliser: no length bias (Dr.GRPO), unlike dividing by each L_i.
    return token_sums.sum() / (max_len * num_sequences)


# One table of modes keyed by the config's names (AlgorithmConfig.loss_aggregation).
AGGREGATIONS: dict[str, Callable[[Tensor, Tensor, Count, Count, int], Tensor]] = {
    "token-mean": _token_mean,
    "seq-mean-token-mean": _seq_mean_token_mean,
    "seq-mean-token-sum": _seq_mean_token_sum,
    "seq-mean-token-sum-norm": _seq_mean_token_sum_norm,
}


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: str,
    *,
    num_tokens: float | None = None,
    num_sequences: float | None = None,
    max_response_tokens: int | None = None,
) -> Tensor:
    """Reduce per_token [B, T] over the valid positions of mask [B, T] (0/1 or bool) to a scalar.

    num_tokens / num_sequences: the full batch's counts (see `normalisers`); None: this call's own
    counts (the same as the full batch's when there is one micro-batch). max_response_tokens: the
    seq-mean-token-sum-norm constant; None: `mask.shape[-1]` (verl's default), which is only
    constant when every batch is padded to the configured response length.
    """
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {mode!r} (known: {', '.join(AGGREGATIONS)})")
    if per_token.shape != mask.shape or per_token.ndim != 2:
        raise ValueError(
            f"per_token and mask must both be [B, T], got {tuple(per_token.shape)}, {tuple(mask.shape)}"
        )
    for name, value in (
        ("num_tokens", num_tokens),
        ("num_sequences", num_sequences),
        ("max_response_tokens", max_response_tokens),
    ):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be > 0 (or None for this batch's own count), got {value}")
    valid = mask.bool()
    # where, not multiply: a NaN/inf at a padding position must not leak into the sum (NaN * 0 = NaN).
    token_sums = torch.where(valid, per_token, torch.zeros_like(per_token)).sum(dim=-1)  # [B]
    lengths = valid.sum(dim=-1).to(per_token.dtype)  # [B]
    # Own counts stay tensors (no device sync); clamped so an empty micro-batch gives 0, not NaN.
    tokens = num_tokens if num_tokens is not None else lengths.sum().clamp(min=1)
    sequences = num_sequences if num_sequences is not None else (lengths > 0).sum().clamp(min=1)
    max_len = max_response_tokens if max_response_tokens is not None else mask.shape[-1]
    return AGGREGATIONS[mode](token_sums, lengths, tokens, sequences, max_len)
