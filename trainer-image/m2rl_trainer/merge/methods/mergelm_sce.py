"""`mergelm_sce`: SCE (select, calculate, erase) as the M2RL study's MergeLM merges.

MergeLM (Mosi-AI/M2RL MergeLM/model_merging_methods/merging_methods.py: MergingMethod.sce,
get_sce_weight, get_sce_mask, get_erase_mask), per tensor, in float32:

- calculate: model i's weight is mean(delta_i^2), normalised to sum 1; equal weights only when all are
  exactly 0. mergekit's `sce` (sce.py, sce_weight) falls back to equal weights whenever the sum is
  below 1e-6, which RL task vectors trained at learning rates near 1e-6 fall under (mean squares of
  1e-8 are usual): there every expert gets 1/n whatever its update.
- select (select_topk < 1): the weights are computed from the entries of the top-k variance
  positions only; the merged deltas are not masked (mergekit masks them). The study ran SCE with
  select_topk 1.0 (run.sh passes none), where the two agree.
- erase: an entry counts where its sign equals the sign of the sum over models (+ for a zero sum).
- the result is sum(w_i * kept delta_i) / sum(w_i over kept): a zero divisor becomes 1 (mergekit
  clamps the divisor at 1e-6, changing positions whose agreeing weights sum below it).
MergeLM's SCE ignores its scaling coefficient; so does this.
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

from m2rl_trainer.merge.methods.common import Fraction, task_vector

NAME = "mergelm_sce"


def sce_weights(deltas: torch.Tensor, select_topk: float) -> torch.Tensor:
    """Per-model weights [n] (MergeLM's get_sce_weight): mean squares of the selected entries, normalised."""
    if select_topk < 1:
        variance = torch.var(deltas, dim=0, unbiased=False)
        k = int(select_topk * int(torch.count_nonzero(variance)))
        mask = torch.zeros_like(variance)
        if k > 0:
            mask.view(-1)[torch.topk(variance.abs().view(-1), k=k, largest=True).indices] = 1
        deltas = deltas * mask
    # MergeLM sums in the tensor's dtype and divides as Python floats.
    means = [float(torch.sum(d**2)) / d.numel() for d in deltas]
    total = sum(means)
    weights = [1.0 / len(means)] * len(means) if total == 0 else [m / total for m in means]
    return torch.tensor(weights, dtype=deltas.dtype)


class MergeLMSCE(GroupMergeMethod):
    spec = MergeMethodSpec(
        name=NAME,
        pretty_name="SCE as MergeLM",
        reference_url="https://arxiv.org/abs/2408.07990",
        contract=InputContract(base=BasePolicy.REQUIRED),
        parameters=(ParameterSpec("select_topk", Fraction, ParameterScope.SHARED, default=1.0),),
    )

    def merge_group(self, group: TensorGroup, /, **p: Any) -> torch.Tensor:
        base = group.base.tensor
        if not group.non_base:
            return base
        deltas = torch.stack([task_vector(e.tensor, base) for e in group.non_base])  # [n, ...]
        weights = sce_weights(deltas, p["select_topk"]).to(deltas.device)
        weights = weights.reshape(-1, *([1] * (deltas.dim() - 1)))
        majority = (deltas.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
        erased = weights * (deltas.sign() == majority)
        divisor = erased.sum(dim=0)
        divisor[divisor == 0] = 1
        mixed = (deltas * erased).sum(dim=0) / divisor
        return (base.to(torch.float32) + mixed).to(base.dtype)


mergelm_sce = MergeLMSCE()
