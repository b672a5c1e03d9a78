"""Reference log-probabilities: what an engine reports for its tokens, recomputed by one plain
forward pass."""

from __future__ import annotations

from typing import Any

import torch

from m2rl_trainer.rollout.base import Completion


def forward_logprobs(
    model: Any, prompt_ids: list[int], token_ids: list[int], temperature: float = 1.0
) -> list[float]:
    """log softmax(logits / T) of each of `token_ids` after `prompt_ids`: one unpadded forward pass, no
    KV cache."""
    ids = torch.tensor([prompt_ids + token_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float() / temperature, dim=-1)
    return [logprobs[len(prompt_ids) - 1 + k, t].item() for k, t in enumerate(token_ids)]


def max_error(model: Any, groups: list[list[Completion]], temperature: float = 1.0) -> float:
    """The largest difference between a reported log-probability and the forward pass's."""
    return max(
        abs(a - b)
        for group in groups
        for c in group
        for a, b in zip(
            c.logprobs, forward_logprobs(model, c.prompt_token_ids, c.token_ids, temperature), strict=True
        )
    )
