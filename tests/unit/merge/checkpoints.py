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


def direct_analysis(
    base: dict[str, torch.Tensor],
    experts: Sequence[dict[str, torch.Tensor]],
    merged: dict[str, torch.Tensor] | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The analysis' definitions computed the obvious way: concatenate whole task vectors, then
    torch's own norm, cosine_similarity and sign()."""
    names = [
        n
        for n in (only or base)
        if base[n].is_floating_point() and all(n in e and e[n].shape == base[n].shape for e in experts)
    ]
    taus = torch.stack(
        [torch.cat([(e[n].double() - base[n].double()).reshape(-1) for n in names]) for e in experts]
    )  # [experts, parameters]
    signs = torch.sign(taus)
    conflicts = (signs.max(dim=0).values > 0) & (signs.min(dim=0).values < 0)
    k = len(experts)
    cosine = [
        [float(torch.nn.functional.cosine_similarity(taus[i], taus[j], dim=0, eps=0.0)) for j in range(k)]
        for i in range(k)
    ]
    out: dict[str, Any] = {
        "tensors": names,
        "parameters": taus.shape[1],
        "norms": [float(torch.linalg.vector_norm(t)) for t in taus],
        "cosine": cosine,
        "signConflictFraction": float(conflicts.double().mean()),
        "overlapFraction": float(((taus != 0).sum(dim=0) >= 2).double().mean()),
        "nonZeroFraction": [float((t != 0).double().mean()) for t in taus],
    }
    if merged is not None:
        m = torch.cat([(merged[n].double() - base[n].double()).reshape(-1) for n in names])
        out["mergedNorm"] = float(torch.linalg.vector_norm(m))
        out["mergedCosine"] = [
            float(torch.nn.functional.cosine_similarity(m, t, dim=0, eps=0.0)) for t in taus
        ]
    return out
