"""What the study's merge variants share: task vectors in float32, DARE's seeded drop, TIES' trim.

MergeLM (Mosi-AI/M2RL, MergeLM/model_merging_methods/merging_methods.py and MergeLM's
mask_weights_utils.py) loads every model in float32 and computes there; so do these helpers,
whatever dtype mergekit hands the method (its `dtype` setting casts the inputs first, and the
whole-model pre-pass in `merge.trim` casts the same way, so both see the same numbers).

DARE's drop mask is drawn from a generator seeded by (seed, tensor name, model), not from torch's
global generator as MergeLM does: mergekit may execute tensors in any order, and the whole-model
trim threshold is computed in a separate pass that must see exactly the drops the merge will make.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated, Any

import torch
from mergekit.merge_methods.base import ParameterScope, ParameterSpec, TensorEntry, TensorGroup
from pydantic import Field

Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
"""A share of the entries kept, in (0, 1]: DARE's and TIES' densities, SCE's select_topk."""

DARE_PARAMETERS = (
    ParameterSpec("dare_rescale", bool, ParameterScope.SHARED, default=True),
    ParameterSpec("seed", int, ParameterScope.SHARED, default=0),
    ParameterSpec("dare_density", Fraction, ParameterScope.NON_BASE, default=1.0),
)
"""The parameters of the optional DARE before a merge (mergelm_ties, mergelm_task_arithmetic), the ones
`entry_task_vector` reads."""


def task_vector(expert: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """expert - base in float32 (MergeLM's TaskVector: finetuned_param - pretrained_param)."""
    return expert.to(torch.float32) - base.to(torch.float32)


def drop_generator(seed: int, tensor: str, model: str) -> torch.Generator:
    """A CPU generator for one (tensor, model): the same drops in every pass and execution order."""
    digest = hashlib.sha256(f"{seed}\0{tensor}\0{model}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def dare(delta: torch.Tensor, density: float, *, rescale: bool, generator: torch.Generator) -> torch.Tensor:
    """DARE: keep each entry with probability `density`, and divide the kept ones by `density`.

    MergeLM's mask_input_with_mask_rate(strategy "random"): mask = bernoulli(mask_rate),
    input * (1 - mask), then / (1 - mask_rate) when use_weight_rescale; here density = 1 - mask_rate.
    (mergekit's `rescale` instead matches the L1 norm of the tensor before and after the drop.)
    """
    if density >= 1.0:
        return delta
    keep = torch.bernoulli(torch.full(delta.shape, density, dtype=torch.float32), generator=generator)
    dropped = delta * keep.to(delta.device)
    return dropped / density if rescale else dropped


def kth_smallest_magnitude(values: torch.Tensor, k: int) -> float:
    """The k-th smallest |value| (1-based); 0.0 when k is 0 (nothing is trimmed).

    MergeLM's mask_smallest_magnitude_param_values: kthvalue(|x|, k = int(N * mask_rate)), then
    keep |x| >= that value. (MergeLM fails on k = 0; keeping everything is what k = 0 means.)
    """
    if k <= 0:
        return 0.0
    return float(values.abs().reshape(-1).kthvalue(k).values)


def trim_count(numel: int, density: float) -> int:
    """How many entries TIES trims: int(N * mask_rate) with mask_rate = 1 - density, as MergeLM."""
    return int(numel * (1.0 - density))


def dare_task_vector(
    expert: torch.Tensor,
    base: torch.Tensor,
    *,
    tensor: str,
    model: str,
    dare_density: float,
    dare_rescale: bool,
    seed: int,
) -> torch.Tensor:
    """The task vector a TIES trim sees: expert - base (float32), after DARE when dare_density < 1."""
    delta = task_vector(expert, base)
    if dare_density >= 1.0:
        return delta
    return dare(delta, dare_density, rescale=dare_rescale, generator=drop_generator(seed, tensor, model))


def entry_task_vector(group: TensorGroup, entry: TensorEntry, p: Mapping[str, Any]) -> torch.Tensor:
    """`dare_task_vector` of one expert of a mergekit group, with the method's `DARE_PARAMETERS`."""
    return dare_task_vector(
        entry.tensor,
        group.base.tensor,
        tensor=group.metadata.name or "",
        model=str(entry.id),
        dare_density=p["dare_density"][entry.id],
        dare_rescale=p["dare_rescale"],
        seed=p["seed"],
    )


def elect_and_average(trimmed: torch.Tensor, majority_sign: int | None = None) -> torch.Tensor:
    """TIES' sign election and disjoint mean over the models' trimmed task vectors [n, ...].

    MergeLM's get_param_signs + disjoint_merge: the elected sign of a position is the sign of the
    sum of the trimmed values; where that sum is exactly 0 it is the majority sign, the sign of the
    sum of the elected signs (over the whole model in MergeLM; `majority_sign` passes that in, None
    takes it over this tensor). Each position averages the values that agree with its sign.
    (mergekit's TIES elects + for a zero sum and divides by the agreeing models' weights.)
    """
    signs = torch.sign(trimmed.sum(dim=0))
    if majority_sign is None:
        majority_sign = int(torch.sign((signs > 0).sum() - (signs < 0).sum()))
    signs[signs == 0] = float(majority_sign)
    keep = ((signs > 0) & (trimmed > 0)) | ((signs < 0) & (trimmed < 0))
    kept = trimmed * keep
    return kept.sum(dim=0) / keep.sum(dim=0).clamp(min=1)
