"""Tiny models with closed-form next-token distributions, for the information analysis' tests.

A "unigram" model: every embedding row is the same vector e and every attention and MLP output
projection is zero, so the residual stream is e at every position whatever the context; the final norm
makes it h = norm(e), and the next-token distribution is p = softmax(lm_head h) at every step. The EOS
row of lm_head is set so its logit is -30: trajectories never stop early, so each has exactly
max_response_tokens tokens and KL(pi_A || pi_B) per trajectory is T * sum_v p_A(v) log(p_A(v) / p_B(v)).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def unigram_model(source: Path, out: Path, seed: int, spread: float = 1.5) -> tuple[Path, torch.Tensor]:
    """A copy of the tiny model at `source` made context-independent: (folder, p over the vocabulary)."""
    shutil.copytree(source, out)
    tensors = load_file(source / "model.safetensors")
    config = json.loads((source / "config.json").read_text())
    g = torch.Generator().manual_seed(seed)
    embed = tensors["model.embed_tokens.weight"]
    e = torch.randn(embed.shape[1], generator=torch.Generator().manual_seed(0))
    tensors["model.embed_tokens.weight"] = e.expand_as(embed).clone()
    for name in list(tensors):
        if name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight")):
            tensors[name] = torch.zeros_like(tensors[name])
    eps = config["rms_norm_eps"]
    h = (
        tensors["model.norm.weight"].double() * e.double() / torch.sqrt(e.double().pow(2).mean() + eps)
    ).float()
    # lm_head = z h^T / |h|^2 gives logits exactly z ~ N(0, spread^2); EOS gets -30.
    z = spread * torch.randn(tensors["lm_head.weight"].shape[0], generator=g)
    z[config["eos_token_id"]] = -30.0
    head = torch.outer(z, h) / (h @ h)
    tensors["lm_head.weight"] = head.contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    logits = head.double() @ h.double()
    return out, torch.softmax(logits, dim=0)
