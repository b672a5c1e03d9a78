"""DAPO's soft overlong punishment, added to the verifier's reward before advantages.

DAPO (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
arXiv 2503.14476, eq. 13) defines, with L_max the response limit and L_cache the buffer:

    R_length(y) = 0                              if |y| <= L_max - L_cache
                = ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max
                = -1                             if L_max < |y|

Here the -1 is scaled by `penalty` (verl's `overlong_buffer.penalty_factor`; DAPO used 1.0), and
lengths beyond L_max get -penalty as in the paper (verl's reward manager leaves them unbounded,
but a generation capped at L_max never reaches them).
"""

from __future__ import annotations

import torch
from torch import Tensor


def overlong_penalty(lengths: Tensor, max_response_tokens: int, buffer_tokens: int, penalty: float) -> Tensor:
    """Length penalty (<= 0) per response; lengths: [N] token counts -> float [N].

    0 up to `max_response_tokens - buffer_tokens`, then linear down to `-penalty` at
    `max_response_tokens`, `-penalty` beyond. `buffer_tokens == 0` switches it off (all zeros).
    """
    if buffer_tokens < 0 or (buffer_tokens > 0 and buffer_tokens >= max_response_tokens):
        raise ValueError(f"buffer_tokens must be in [0, max_response_tokens), got {buffer_tokens}")
    lengths = lengths.to(torch.float32) if not lengths.is_floating_point() else lengths
    if buffer_tokens == 0:
        return torch.zeros_like(lengths)
    exceed = lengths - (max_response_tokens - buffer_tokens)  # [N], tokens into the buffer
    return (-exceed / buffer_tokens * penalty).clamp(min=-penalty, max=0.0)
