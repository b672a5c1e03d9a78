"""MergeLM's merging code transcribed (Mosi-AI/M2RL MergeLM/model_merging_methods/merging_methods.py and
MergeLM's mask_weights_utils.py), on whole flattened models in memory: the independent computation the
study's merge variants (m2rl_trainer.merge.methods) are checked against. Shared by tests/unit/merge and
tests/integration/merge.

Only DARE's drop masks are shared with the code under test (they are random; the test draws them with
the same seeded generators, `drops`); everything after the drop is MergeLM's own arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from m2rl_trainer.merge.methods.common import drop_generator


def drops(
    base: dict[str, torch.Tensor], model: str, density: float, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The keep masks (1 = kept) DARE draws for `model`, tensor by tensor."""
    return {
        name: torch.bernoulli(
            torch.full(t.shape, density, dtype=torch.float32), generator=drop_generator(seed, name, model)
        )
        for name, t in base.items()
    }


def task_vectors(
    base: dict[str, torch.Tensor],
    experts: Sequence[dict[str, torch.Tensor]],
    names: Sequence[str],
    keeps: Sequence[dict[str, torch.Tensor] | None] = (),
    dare_density: float = 1.0,
) -> torch.Tensor:
    """[models, N]: MergeLM's TaskVector per model, DARE-masked (mask_input_with_mask_rate with
    use_weight_rescale: x * keep / (1 - mask_rate)), flattened in sorted name order
    (task_vector_param_dict_to_single_vector)."""
    rows = []
    for i, expert in enumerate(experts):
        parts = []
        for name in sorted(names):
            tau = expert[name].float() - base[name].float()
            keep = keeps[i] if i < len(keeps) else None
            if keep is not None:
                tau = tau * keep[name] / dare_density
            parts.append(tau.flatten())
        rows.append(torch.cat(parts))
    return torch.vstack(rows)


def ties_merging(flat: torch.Tensor, param_value_mask_rate: float) -> torch.Tensor:
    """MergingMethod.ties_merging on [models, N]: the merged flat task vector (before scaling)."""
    num_mask_params = int(flat.shape[1] * param_value_mask_rate)
    kth_values, _ = flat.abs().kthvalue(k=num_mask_params, dim=1, keepdim=True)
    flat = flat * (flat.abs() >= kth_values)
    param_signs = torch.sign(flat.sum(dim=0))
    majority_sign = torch.sign(param_signs.sum(dim=0))
    param_signs[param_signs == 0] = majority_sign
    preserve = ((param_signs.unsqueeze(dim=0) > 0) & (flat > 0)) | (
        (param_signs.unsqueeze(dim=0) < 0) & (flat < 0)
    )
    kept = flat * preserve
    count = (kept != 0).sum(dim=0).float()
    return torch.sum(kept, dim=0) / torch.clamp(count, min=1.0)


def unflatten(
    flat: torch.Tensor, base: dict[str, torch.Tensor], names: Sequence[str]
) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for name in sorted(names):
        n = base[name].numel()
        out[name] = flat[start : start + n].reshape(base[name].shape)
        start += n
    return out


def sce(base: torch.Tensor, experts: Sequence[torch.Tensor], select_topk: float = 1.0) -> torch.Tensor:
    """MergingMethod.sce for one parameter (get_sce_weight, get_sce_mask, get_erase_mask)."""
    deltas = torch.stack([e.float() - base.float() for e in experts], dim=0)
    selected = list(deltas)
    if select_topk < 1:
        variance = torch.var(deltas, dim=0, unbiased=False, keepdim=False)
        k = int(select_topk * torch.count_nonzero(variance))
        mask = torch.zeros_like(variance)
        if k > 0:
            mask.view(-1)[torch.topk(variance.abs().view(-1), k=k, largest=True).indices] = 1
        selected = [d * mask for d in deltas]
    weights = [torch.sum(d**2).item() / d.numel() for d in selected]
    total = sum(weights)
    weights = [1.0 / len(weights)] * len(weights) if total == 0 else [w / total for w in weights]
    w = torch.tensor(weights, dtype=deltas.dtype)
    while len(deltas.shape) > len(w.shape):
        w.unsqueeze_(-1)
    majority = (deltas.sum(dim=0) >= 0).float() * 2 - 1
    erased = w * (deltas.sign() == majority)
    mixed = (deltas * erased).sum(dim=0)
    divisor = erased.sum(dim=0)
    divisor[divisor == 0] = 1
    return base.float() + mixed / divisor
