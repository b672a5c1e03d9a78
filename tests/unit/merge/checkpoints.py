"""Small hand-made checkpoints and a direct, all-in-memory torch computation of the analysis numbers,
to check the streamed analysis against. Shared by tests/unit/merge and tests/integration/merge."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def write_checkpoint(
    folder: Path, tensors: dict[str, torch.Tensor], *, shards: int = 1, fmt: str = "safetensors"
) -> Path:
    """A model folder mergekit's index reads: model.safetensors (or N shards + index), or a .bin."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["Hand"], "model_type": "hand"}))
    if fmt == "bin":
        torch.save(dict(tensors), folder / "pytorch_model.bin")
        return folder
    if shards == 1:
        save_file(dict(tensors), folder / "model.safetensors", metadata={"format": "pt"})
        return folder
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        shard = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::shards]}
        save_file(part, folder / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors model folder, fully in memory (fine at test sizes)."""
    out: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def dense_projection(
    base: dict[str, torch.Tensor], names: Sequence[str], dims: int, seed: int
) -> torch.Tensor:
    """The analysis' projection as a dense [dims, N] matrix (N over `names` in order), from its
    definition: entry p of tensor t goes to row h(p) with sign s(p); each row divided by sqrt(n_r)."""
    from m2rl_trainer.merge.projection import rows_and_signs, tensor_key

    rows, signs = zip(
        *(rows_and_signs(tensor_key(seed, n), 0, base[n].numel(), dims) for n in names), strict=True
    )
    r, sg = torch.cat(rows), torch.cat(signs)
    p = torch.zeros(dims, r.numel(), dtype=torch.float64)
    p[r, torch.arange(r.numel())] = sg
    return p / p.abs().sum(dim=1, keepdim=True).clamp(min=1).sqrt()


def direct_analysis(
    base: dict[str, torch.Tensor],
    experts: Sequence[dict[str, torch.Tensor]],
    merged: dict[str, torch.Tensor] | None = None,
    only: Sequence[str] | None = None,
    eta: float = 1e-3,
    dims: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """The analysis' definitions computed the obvious way: concatenate whole task vectors and weights,
    then torch's own norm, cosine_similarity, sign(), boolean masks and a dense projection matrix."""
    names = [
        n
        for n in (only or base)
        if base[n].is_floating_point() and all(n in e and e[n].shape == base[n].shape for e in experts)
    ]
    models = [*experts, *([merged] if merged is not None else [])]
    b = torch.cat([base[n].double().reshape(-1) for n in names])
    w = torch.stack([torch.cat([m[n].double().reshape(-1) for n in names]) for m in models])
    taus = w - b  # [models, parameters]
    masks = taus.abs() > eta * torch.maximum(w.abs(), b.abs())
    k = len(experts)
    signs = torch.sign(taus[:k]) * masks[:k]
    conflicts = (signs.max(dim=0).values > 0) & (signs.min(dim=0).values < 0)
    z = taus @ dense_projection(base, names, dims, seed).T  # [models, dims]

    def cos(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(x, y, dim=0, eps=0.0).nan_to_num(0.0))

    def jaccard(i: int, j: int) -> float:
        union = int((masks[i] | masks[j]).sum())
        return int((masks[i] & masks[j]).sum()) / union if union else 0.0

    fractions = [float(m.double().mean()) for m in masks]
    out: dict[str, Any] = {
        "tensors": names,
        "parameters": taus.shape[1],
        "norms": [float(torch.linalg.vector_norm(t)) for t in taus[:k]],
        "cosine": [[cos(taus[i], taus[j]) for j in range(k)] for i in range(k)],
        "projectedCosine": [[cos(z[i], z[j]) for j in range(k)] for i in range(k)],
        "updateFraction": fractions[:k],
        "jaccard": [[jaccard(i, j) for j in range(k)] for i in range(k)],
        "signConflictFraction": float(conflicts.double().mean()),
        "overlapFraction": float((masks[:k].sum(dim=0) >= 2).double().mean()),
        "nonZeroFraction": [float((t != 0).double().mean()) for t in taus[:k]],
    }
    if merged is not None:
        out["mergedNorm"] = float(torch.linalg.vector_norm(taus[k]))
        out["mergedCosine"] = [cos(taus[k], t) for t in taus[:k]]
        out["mergedProjectedCosine"] = [cos(z[k], z[i]) for i in range(k)]
        out["mergedJaccard"] = [jaccard(k, i) for i in range(k)]
        out["mergedUpdateFraction"] = fractions[k]
    return out
