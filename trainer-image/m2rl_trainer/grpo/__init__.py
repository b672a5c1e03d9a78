"""The GRPO core: small pure torch functions for advantages, KL, the clipped loss and its aggregation.

Shared by GRPO, Dr.GRPO and DAPO; the trainer picks the inputs (see losses.py for how they map to
the papers and where they deviate).
"""

from m2rl_trainer.grpo.advantages import group_advantages, zero_variance_groups
from m2rl_trainer.grpo.aggregation import AGGREGATIONS, aggregate, normalisers
from m2rl_trainer.grpo.kl import KL_ESTIMATORS, kl_penalty
from m2rl_trainer.grpo.losses import (
    clip_regions,
    policy_loss,
    selective_log_softmax,
    token_entropy_from_logits,
)
from m2rl_trainer.grpo.reward_shaping import overlong_penalty
from m2rl_trainer.grpo.rollout_correction import importance_weights, mismatch_sums

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "aggregate",
    "clip_regions",
    "group_advantages",
    "importance_weights",
    "kl_penalty",
    "mismatch_sums",
    "normalisers",
    "overlong_penalty",
    "policy_loss",
    "selective_log_softmax",
    "token_entropy_from_logits",
    "zero_variance_groups",
]
