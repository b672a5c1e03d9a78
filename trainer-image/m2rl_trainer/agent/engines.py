"""The episode driver's `generate` over the trainer's rollout engines (rollout/base.RolloutEngine).

Each turn is one `engine.generate` call with one completion per context (n = 1: the episodes of a
GRPO group share their prompt but diverge after the first turn) and the token-id contexts as
prompts. Engines take a single `max_tokens` per call, so the call asks for the largest budget left
and each continuation is cut to its own episode's budget (a cut turn ends with finish "length",
as if the engine had stopped there: the kept tokens and their log-probs are what it sampled).
Seeds: the call's seed is derived from (seed, turn), and the engine derives one per context from
that and the context's position, so the same episodes at the same step sample the same tokens (a
resumed run repeats an uninterrupted one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from m2rl_trainer.agent.episode import Continuation, Generate
from m2rl_trainer.rollout.base import RolloutEngine, SamplingParams
from m2rl_trainer.rollout.server import derive_seed


def engine_generate(engine: RolloutEngine, params: SamplingParams) -> Generate:
    """A `Generate` for one batch of episodes (a fresh one per step: it counts turns for seeds)."""
    turn = 0

    def generate(contexts: Sequence[Sequence[int]], max_new_tokens: Sequence[int]) -> list[Continuation]:
        nonlocal turn
        turn += 1
        if not contexts:
            return []
        seed = None if params.seed is None else derive_seed(params.seed, turn)
        call = replace(params, n=1, max_tokens=max(max_new_tokens), seed=seed)
        groups = engine.generate([list(c) for c in contexts], call)  # type: ignore[arg-type]
        out = []
        for (completion,), budget in zip(groups, max_new_tokens, strict=True):
            ids, logprobs = completion.token_ids, completion.logprobs
            if len(ids) > budget:
                out.append(Continuation(ids[:budget], logprobs[:budget], "length"))
            else:
                out.append(Continuation(list(ids), list(logprobs), completion.finish_reason))
        return out

    return generate
