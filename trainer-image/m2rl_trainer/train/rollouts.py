"""One step's rollouts: scored groups, and the per-domain figures the step reports about them.

Two views of a step, kept apart so dynamic sampling cannot bias what is reported:
- generated: every group sampled in the step, over all refill rounds (reward, accuracy, length,
  truncation and zero-variance shares: the policy's behaviour on the data as drawn);
- kept: the groups the update trained on (with dynamic sampling, only groups with reward variance:
  their accuracy is pulled toward 0.5 by construction).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from m2rl_trainer.data.datasets import Prompt
from m2rl_trainer.grpo import zero_variance_groups
from m2rl_trainer.rollout.base import Completion


@dataclass
class ScoredGroup:
    """One prompt with its group of completions and their rewards.

    rewards: shaped (what advantages see); correct: the verifier's reward alone (accuracy).
    key: (round, index of the prompt in that round's global batch), the order dynamic sampling uses.
    hygiene: counts of reward-hacking signs among the group's rewarded code samples.
    teacher_logprobs: MT-OPD: per completion, its domain teacher's log-probs of its tokens (None
        otherwise); scored right after generation, so a prefetched batch carries them.
    episodes: agent domains: counts of what the group's episodes did (agent.rollout.episode_counts).
    """

    prompt: Prompt
    prompt_ids: list[int]
    completions: list[Completion]
    rewards: list[float]
    correct: list[float]
    key: tuple[int, int]
    hygiene: Counter[str] = field(default_factory=Counter)
    teacher_logprobs: list[list[float]] | None = None
    episodes: Counter[str] = field(default_factory=Counter)


def model_tokens(completion: Completion) -> int:
    """Tokens the model generated: all of a completion's, or a multi-turn episode's masked-in ones
    (tool results between turns are context, not response length)."""
    mask = completion.loss_mask
    return len(completion.token_ids) if mask is None else sum(mask)


def zero_variance(groups: list[ScoredGroup]) -> list[bool]:
    """Which groups have all verifier outcomes equal (no learning signal). Filtering on outcomes,
    not shaped rewards, as verl's DAPO recipe: groups that differ only in length penalties carry no
    task signal."""
    if not groups:
        return []
    return zero_variance_groups(torch.tensor([g.correct for g in groups])).tolist()


GENERATED = ("groups", "zero_variance_groups", "completions", "reward", "correct", "length", "truncated")
KEPT = ("groups", "completions", "reward", "correct")


def local_sums(generated: list[ScoredGroup], kept: list[ScoredGroup], domains: list[str]) -> list[float]:
    """This rank's sums, GENERATED then KEPT fields per domain, flat: all-reduce it, then `figures`."""
    out: list[float] = []
    flags = dict(zip((id(g) for g in generated), zero_variance(generated), strict=True))
    for name in domains:
        mine = [g for g in generated if g.prompt.domain == name]
        completions = [c for g in mine for c in g.completions]
        out += [
            float(len(mine)),
            float(sum(flags[id(g)] for g in mine)),
            float(len(completions)),
            float(sum(r for g in mine for r in g.rewards)),
            float(sum(r for g in mine for r in g.correct)),
            float(sum(model_tokens(c) for c in completions)),
            float(sum(c.finish_reason == "length" for c in completions)),
        ]
        trained = [g for g in kept if g.prompt.domain == name]
        out += [
            float(len(trained)),
            float(sum(len(g.completions) for g in trained)),
            float(sum(r for g in trained for r in g.rewards)),
            float(sum(r for g in trained for r in g.correct)),
        ]
    return out


def figures(totals: list[float], domains: list[str]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(step figures, per-domain figures) from the all-reduced `local_sums`.

    Per domain (only domains with generated groups): reward, accuracy, response_length,
    truncated_ratio (finish reason "length"), zero_variance_ratio and dropped_group_ratio (groups
    not trained on: zero variance, or left over once the step was full), kept_accuracy.
    """
    width = len(GENERATED) + len(KEPT)
    overall = dict.fromkeys(GENERATED, 0.0) | {f"kept_{f}": 0.0 for f in KEPT}
    per_domain: dict[str, dict[str, float]] = {}

    def ratios(g: dict[str, float], k: dict[str, float]) -> dict[str, float]:
        n, kn = max(g["completions"], 1.0), max(k["completions"], 1.0)
        return {
            "reward": g["reward"] / n,
            "accuracy": g["correct"] / n,
            "response_length": g["length"] / n,
            "truncated_ratio": g["truncated"] / n,
            "zero_variance_ratio": g["zero_variance_groups"] / max(g["groups"], 1.0),
            "dropped_group_ratio": (g["groups"] - k["groups"]) / max(g["groups"], 1.0),
            "kept_reward": k["reward"] / kn,
            "kept_accuracy": k["correct"] / kn,
        }

    for i, name in enumerate(domains):
        row = totals[i * width : (i + 1) * width]
        generated = dict(zip(GENERATED, row[: len(GENERATED)], strict=True))
        kept = dict(zip(KEPT, row[len(GENERATED) :], strict=True))
        for key, value in generated.items():
            overall[key] += value
        for key, value in kept.items():
            overall[f"kept_{key}"] += value
        if generated["groups"]:
            per_domain[name] = ratios(generated, kept)
    generated_all = {f: overall[f] for f in GENERATED}
    kept_all = {f: overall[f"kept_{f}"] for f in KEPT}
    step: dict[str, Any] = ratios(generated_all, kept_all)
    step["completions"] = kept_all["completions"]  # trained on
    step["generated_completions"] = generated_all["completions"]
    step["zero_variance_fraction"] = step.pop("zero_variance_ratio")  # the step's name since the first record
    return step, per_domain
