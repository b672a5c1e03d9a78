"""`mergelm_ties`: TIES, optionally after DARE, as the M2RL study's MergeLM merges.

MergeLM (Mosi-AI/M2RL MergeLM/model_merging_methods/merging_methods.py, MergingMethod.ties_merging,
with merging_models(apply_weight_mask=True) for DARE first; run.sh runs both):

1. DARE (when dare_density < 1): each task-vector entry is kept with probability dare_density and
   the kept ones are divided by dare_density (use_weight_rescale; `dare_rescale: false` skips it).
2. Trim: keep the entries whose magnitude is at least the k-th smallest magnitude, k = int(N * (1 -
   density)), N counted over the whole model (`trim_scope: model`, MergeLM's flattened vector) or
   over each tensor (`trim_scope: tensor`, what mergekit's ties does). MergeLM's default trims 80%:
   density 0.2.
3. Elect signs by the sum of the trimmed values (a zero sum takes the majority sign) and average the
   values that agree (disjoint mean); then base + lambda * that (scaling_coefficient, default 1).

Differences from mergekit's `ties` and `dare_ties`: those trim per tensor only, keep the top
int(density * N) by argsort (MergeLM keeps ties at the threshold and one more entry), elect + on a
zero sum, take the weighted mean only when `normalize`, and rescale DARE by an L1-norm match. Per-model
weights do not exist in MergeLM's TIES and are not read here.

With `trim_scope: model` the thresholds (and the majority sign) need a pass over all the experts
before the merge: `m2rl-merge` computes them (`merge.trim`) and passes `trim_threshold` per model and
`majority_sign`; a config run by plain mergekit must use `trim_scope: tensor`.
"""

from __future__ import annotations

from typing import Any, Literal

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

from m2rl_trainer.merge.methods.common import (
    DARE_PARAMETERS,
    Fraction,
    elect_and_average,
    entry_task_vector,
    kth_smallest_magnitude,
    trim_count,
)

NAME = "mergelm_ties"


class MergeLMTies(GroupMergeMethod):
    spec = MergeMethodSpec(
        name=NAME,
        pretty_name="TIES (+DARE) as MergeLM",
        reference_url="https://github.com/Mosi-AI/M2RL/tree/main/M2RL/MergeLM",
        contract=InputContract(base=BasePolicy.REQUIRED),
        parameters=(
            ParameterSpec("lambda", float, ParameterScope.SHARED, default=1.0),
            ParameterSpec("trim_scope", Literal["model", "tensor"], ParameterScope.SHARED, default="model"),
            ParameterSpec("majority_sign", Literal[-1, 0, 1] | None, ParameterScope.SHARED, default=None),
            ParameterSpec("density", Fraction, ParameterScope.NON_BASE, default=0.2),
            ParameterSpec("trim_threshold", float | None, ParameterScope.NON_BASE, default=None),
            *DARE_PARAMETERS,
        ),
    )

    def merge_group(self, group: TensorGroup, /, **p: Any) -> torch.Tensor:
        base = group.base.tensor
        if not group.non_base:
            return base
        whole_model = p["trim_scope"] == "model"
        trimmed = []
        for entry in group.non_base:
            delta = entry_task_vector(group, entry, p)
            if whole_model:
                threshold = p["trim_threshold"][entry.id]
                if threshold is None:
                    raise ValueError(
                        f"{NAME}: trim_scope model needs trim_threshold for {entry.id}, which m2rl-merge "
                        "computes over the whole model before merging; run the config with m2rl-merge, "
                        "or set trim_scope: tensor"
                    )
            else:
                threshold = kth_smallest_magnitude(delta, trim_count(delta.numel(), p["density"][entry.id]))
            trimmed.append(delta * (delta.abs() >= threshold))
        merged = elect_and_average(torch.stack(trimmed), p["majority_sign"] if whole_model else None)
        return (base.to(torch.float32) + p["lambda"] * merged).to(base.dtype)


mergelm_ties = MergeLMTies()
