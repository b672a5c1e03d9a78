"""Per-token estimators of KL(pi_theta || pi_ref), with verl's `kl_penalty` names and signs.

Following Schulman's note "Approximating KL Divergence" (joschu.net/blog/kl-approx.html) with
samples y ~ pi_theta and `r = pi_ref(y) / pi_theta(y)`, i.e. `log r = ref_logprobs - logprobs`:

- k1 = -log r = logprobs - ref_logprobs: unbiased, high variance, can be negative per token.
- k2 = 0.5 * (log r)^2: biased, low variance, >= 0.
- k3 = (r - 1) - log r: unbiased, low variance, >= 0 (DeepSeekMath's GRPO KL term).

Signs are those of verl's `kl_penalty` ("k1"/"kl", "k2"/"mse", "k3"/"low_var_kl"), so a positive
value always means the policy has moved away from the reference. Like verl, k3 clamps `log r` to
[-20, 20] before `exp` and the result to at most 10: one token whose probability collapsed must not
dominate the loss (the clamp also zeroes that token's gradient; TRL does not clamp).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def _k1(log_ratio: Tensor) -> Tensor:
    return -log_ratio


def _k2(log_ratio: Tensor) -> Tensor:
    return 0.5 * log_ratio.square()


def _k3(log_ratio: Tensor) -> Tensor:
    log_ratio = log_ratio.clamp(min=-20.0, max=20.0)  # exp(20) is finite in fp32 and bf16
    # expm1, not exp - 1: near r = 1 the difference cancels and could round below zero.
    return (torch.expm1(log_ratio) - log_ratio).clamp(max=10.0)


# One table of estimators keyed by the config's names (AlgorithmConfig.kl_estimator).
KL_ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: str) -> Tensor:
    """Per-token KL estimate; logprobs, ref_logprobs: [B, T] (any equal shapes) -> same shape.

    `logprobs` are the current policy's (with grad), `ref_logprobs` the reference model's.
    Padding positions are not masked here: the aggregation masks them.
    """
    try:
        estimate = KL_ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(f"unknown KL estimator {estimator!r} (known: {', '.join(KL_ESTIMATORS)})") from None
    return estimate(ref_logprobs - logprobs)  # log r = log(pi_ref / pi_theta)
