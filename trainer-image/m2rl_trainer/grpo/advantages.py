"""Group-relative advantages (GRPO, DAPO, Dr.GRPO) and the zero-variance test of dynamic sampling.

Rewards arrive as one row per prompt: `rewards[g, i]` is the reward of completion `i` of prompt
`g`. Flattening with `.reshape(-1)` gives the group-major order the trainer's batch uses.
"""

from __future__ import annotations

from torch import Tensor


def group_advantages(rewards: Tensor, scale_by_std: bool, eps: float = 1e-6) -> Tensor:
    """Advantages of each completion relative to its group: `(r - mean) / (std + eps)`, or `r - mean`.

    rewards: [num_groups, group_size] -> advantages: [num_groups, group_size].

    `scale_by_std=True` is GRPO and DAPO; `False` is Dr.GRPO, which drops the std because it
    up-weights prompts that are nearly always solved or nearly always failed. The std is the
    unbiased one (Bessel's correction, `torch.std`'s default), as verl's
    `compute_grpo_outcome_advantage` and TRL's `nanstd` use; `eps` is verl's 1e-6 (TRL adds 1e-4).
    A group whose rewards are all equal gets advantage 0 in both forms (0 / eps).
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [num_groups, group_size >= 2], got shape {tuple(rewards.shape)}")
    if not rewards.is_floating_point():
        rewards = rewards.float()  # 0/1 integer rewards: a mean needs floats
    mean = rewards.mean(dim=1, keepdim=True)  # [G, 1]
    centred = rewards - mean  # [G, n]
    if not scale_by_std:
        return centred
    std = rewards.std(dim=1, keepdim=True, correction=1)  # [G, 1], unbiased
    return centred / (std + eps)


def zero_variance_groups(rewards: Tensor) -> Tensor:
    """Which groups have all rewards equal: they carry no learning signal (advantage 0 for all).

    rewards: [num_groups, group_size] -> bool [num_groups]. DAPO's dynamic sampling drops these
    groups and refills the batch. Equality is exact: rewards of the same verdict are the same float.
    """
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be [num_groups, group_size], got shape {tuple(rewards.shape)}")
    return (rewards == rewards[:, :1]).all(dim=1)
