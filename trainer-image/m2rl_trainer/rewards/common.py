"""Helpers every verifier uses: the reasoning-model format gate and result constructors."""

from __future__ import annotations

from typing import Any

from m2rl_trainer.rewards.options import CommonOptions
from m2rl_trainer.rewards.types import FORMAT_ERROR, Result

THINK_CLOSE = "</think>"


def apply_think_gate(response: str, options: CommonOptions) -> tuple[str | None, Result | None]:
    """Apply the format gate and return the text to check, or the failing result.

    The M2RL study scored a reasoning model's response 0 when it had no `</think>`; that is the
    gate. Independently, `strip_think` checks only the final part so that an answer mentioned
    while reasoning is not mistaken for the final one.
    """
    has_close = THINK_CLOSE in response
    if options.require_think_close and not has_close:
        return None, Result(0.0, FORMAT_ERROR, {"reason": "no </think> in the response"})
    if options.strip_think and has_close:
        response = response.rsplit(THINK_CLOSE, 1)[1]
    return response, None


def binary(ok: bool, verdict_if_ok: str, verdict_if_not: str, details: dict[str, Any]) -> Result:
    """A 0/1 result, the reward scheme of the M2RL study."""
    return Result(1.0 if ok else 0.0, verdict_if_ok if ok else verdict_if_not, details)
