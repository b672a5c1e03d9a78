"""`mergelm_task_arithmetic`: task arithmetic, optionally after DARE, as the M2RL study's MergeLM.

MergeLM (Mosi-AI/M2RL MergeLM/model_merging_methods/merging_methods.py, MergingMethod.task_arithmetic;
run.sh runs it plain and with --apply_weight_mask --use_weight_rescale): base + lambda * the sum of
the task vectors, each after DARE when dare_density < 1 (kept entries divided by dare_density).
Without DARE this is mergekit's task_arithmetic with weight 1 per model; with DARE it differs from
mergekit's dare_linear, whose `rescale` matches L1 norms instead of dividing by the density.
"""

from __future__ import annotations

from typing import Any

import torch
from mergekit.merge_methods.base import (
    BasePolicy,
    GroupMergeMethod,
    InputContract,
    MergeMethodSpec,
    ParameterScope,
    ParameterSpec,
    TensorGroup,
)

from m2rl_trainer.merge.methods.common import DARE_PARAMETERS, entry_task_vector

NAME = "mergelm_task_arithmetic"


class MergeLMTaskArithmetic(GroupMergeMethod):
    spec = MergeMethodSpec(
        name=NAME,
        pretty_name="Task arithmetic (+DARE) as MergeLM",
        reference_url="https://arxiv.org/abs/2311.03099",
        contract=InputContract(base=BasePolicy.REQUIRED),
        parameters=(
            ParameterSpec("lambda", float, ParameterScope.SHARED, default=1.0),
            *DARE_PARAMETERS,
        ),
    )

    def merge_group(self, group: TensorGroup, /, **p: Any) -> torch.Tensor:
        base = group.base.tensor
        total = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
        for entry in group.non_base:
            total += entry_task_vector(group, entry, p)
        return (base.to(torch.float32) + p["lambda"] * total).to(base.dtype)


mergelm_task_arithmetic = MergeLMTaskArithmetic()
