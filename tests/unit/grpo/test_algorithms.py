"""GRPO, Dr.GRPO and DAPO end to end through the core, as the trainer's config selects them.

Rewards -> (DAPO) overlong shaping and dynamic sampling -> group advantages -> policy loss, once
with m2rl_trainer.grpo and once with the plain-Python reference.
"""

import typing

import pytest
import torch

from m2rl_trainer.config import AlgorithmConfig, KLEstimator, LossAggregation
from m2rl_trainer.grpo import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    group_advantages,
    overlong_penalty,
    policy_loss,
    zero_variance_groups,
)
from tests.unit.grpo import data, reference

# 3 prompts x 3 completions: the hand-made 6 plus a copy of the first 3 as a third, all-correct group.
RAW_REWARDS = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
CONFIGS = {
    "grpo": AlgorithmConfig(name="grpo", kl_coef=0.04, kl_estimator="k3", max_response_tokens=8),
    "dr_grpo": AlgorithmConfig(name="dr_grpo", max_response_tokens=8),
    "dapo": AlgorithmConfig(
        name="dapo", clip_high=0.28, dynamic_sampling=True, overlong_buffer_tokens=4, max_response_tokens=8
    ),
}


def sequences():
    seqs = data.sequences([0.0] * 6)
    return seqs + data.sequences([0.0] * 6)[:3]


def core(cfg: AlgorithmConfig):
    seqs = sequences()
    raw = torch.tensor(RAW_REWARDS, dtype=torch.float64)  # [G, n]
    lengths = torch.tensor([len(s.logprobs) for s in seqs]).view(3, 3)
    shaped = raw + overlong_penalty(
        lengths, cfg.max_response_tokens, cfg.overlong_buffer_tokens, cfg.overlong_penalty
    )
    # Dynamic sampling filters on the verifier's verdicts (verl's DAPO recipe uses metric "acc").
    keep = ~zero_variance_groups(raw) if cfg.dynamic_sampling else torch.ones(3, dtype=torch.bool)
    advantages = group_advantages(shaped[keep], cfg.scale_rewards()).reshape(-1)  # [kept G * n]
    kept = [s for g in range(3) if keep[g] for s in seqs[3 * g : 3 * g + 3]]
    for s, a in zip(kept, advantages.tolist(), strict=True):
        s.advantage = a
    batch = data.padded(kept)
    loss, stats = policy_loss(
        batch["logprobs"], batch["old_logprobs"], batch["advantages"], batch["mask"],
        clip_low=cfg.clip_low, clip_high=cfg.clip_high, aggregation=cfg.resolved_aggregation(),
        max_response_tokens=cfg.max_response_tokens, ref_logprobs=batch["ref_logprobs"],
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator,
    )  # fmt: skip
    return loss.item(), stats, advantages.tolist()


def by_reference(cfg: AlgorithmConfig):
    seqs = sequences()
    lengths = [len(s.logprobs) for s in seqs]
    limit, buffer, penalty = cfg.max_response_tokens, cfg.overlong_buffer_tokens, cfg.overlong_penalty
    shaped = [
        [r + reference.overlong(lengths[3 * g + i], limit, buffer, penalty) for i, r in enumerate(group)]
        for g, group in enumerate(RAW_REWARDS)
    ]
    zero = reference.zero_variance(RAW_REWARDS)
    keep = [g for g in range(3) if not (cfg.dynamic_sampling and zero[g])]
    advantages = reference.advantages([shaped[g] for g in keep], cfg.name != "dr_grpo")
    kept = []
    for g, row in zip(keep, advantages, strict=True):
        for i, a in enumerate(row):
            seqs[3 * g + i].advantage = a
            kept.append(seqs[3 * g + i])
    mode = {"grpo": "seq-mean-token-mean", "dr_grpo": "seq-mean-token-sum-norm", "dapo": "token-mean"}[
        cfg.name
    ]
    loss = reference.policy_loss(
        kept, clip_low=cfg.clip_low, clip_high=cfg.clip_high, mode=mode, max_len=cfg.max_response_tokens,
        kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator,
    )  # fmt: skip
    return loss, [a for row in advantages for a in row]


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_algorithm_matches_reference(cfg):
    loss, _, advantages = core(cfg)
    want_loss, want_advantages = by_reference(cfg)
    assert advantages == pytest.approx(want_advantages, abs=1e-12)
    assert loss == pytest.approx(want_loss, abs=1e-12)
    assert loss != 0.0


def test_dapo_drops_the_all_correct_group_and_shapes_long_responses():
    _, stats, advantages = core(CONFIGS["dapo"])
    assert stats["num_tokens"] == 20  # the third group's 11 tokens are gone
    assert len(advantages) == 6
    # Group 1 [1, 0, 0] with lengths 4, 2, 5: the 5-token response loses 0.25 (buffer 5..8).
    assert advantages[:3] == pytest.approx(reference.advantages([[1.0, 0.0, -0.25]], True)[0])


def test_grpo_keeps_zero_variance_groups_at_zero_advantage():
    _, stats, advantages = core(CONFIGS["grpo"])
    assert stats["num_tokens"] == 31
    assert advantages[6:] == [0.0, 0.0, 0.0]


def test_dr_grpo_advantages_are_not_scaled():
    _, _, advantages = core(CONFIGS["dr_grpo"])
    assert advantages[:3] == pytest.approx([2 / 3, -1 / 3, -1 / 3])


def test_config_names_match_the_core_tables():
    assert set(typing.get_args(LossAggregation)) == set(AGGREGATIONS)
    assert set(typing.get_args(KLEstimator)) == set(KL_ESTIMATORS)
    for cfg in CONFIGS.values():
        assert cfg.resolved_aggregation() in AGGREGATIONS
