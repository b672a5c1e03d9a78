"""The GRPO core: small pure torch functions for advantages, KL, the clipped loss and its aggregation.

Shared by GRPO, Dr.GRPO and DAPO; the trainer picks the inputs (see losses.py for how they map to
the papers and where they deviate).
"""

from m2rl_trainer.grpo.advantages import group_advantages, zero_variance_groups
from m2rl_trainer.grpo.aggregation import AGGREGATIONS, aggregate, normalisers
from m2rl_trainer.grpo.kl import KL_ESTIMATORS, kl_penalty
from m2rl_trainer.grpo.losses import policy_loss, selective_log_softmax, token_entropy_from_logits
from m2rl_trainer.grpo.reward_shaping import overlong_penalty

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "aggregate",
    "group_advantages",
    "kl_penalty",
    "normalisers",
    "overlong_penalty",
    "policy_loss",
    "selective_log_softmax",
    "token_entropy_from_logits",
    "zero_variance_groups",
]
