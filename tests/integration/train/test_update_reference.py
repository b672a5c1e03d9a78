"""The trainer's policy update (DeepSpeed, shared-prefix forward, micro-batches, PPO mini-batches,
pi_old recomputed, TIS/MIS weights, dual-clip, KL to a reference, entropy bonus) against an
independent reference written here from the formulas: one full-sequence forward per completion,
per-token Python arithmetic for the loss, each mini-batch's loss normalised by its own counts,
and torch's AdamW stepping once per mini-batch.

The rollout log-probabilities are the initial model's plus a per-token offset, so the importance
weights fall on both sides of the cap and floor; after the first update the PPO ratio moves away
from 1 and the reference's KL away from 0, so every term is exercised.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.train.conftest import run_script_json

SCRIPT = r"""
import json, math, sys
import torch
from transformers import AutoModelForCausalLM
from m2rl_trainer.config import AlgorithmConfig, DeepSpeedConfig
from m2rl_trainer.train.engine import build_engine, deepspeed_config, init_distributed
from m2rl_trainer.train.update import PolicyUpdate

torch.manual_seed(0)
init_distributed(False)
MODEL = sys.argv[1]
T = 0.8  # sampling temperature: logits / T throughout
# Adam's eps far above sqrt(v) makes each step ~ lr * gradient: a gradient within float noise of
# zero then moves its parameter by float noise, not by +-lr as Adam's sign-like steps would.
EPS = 1.0


def load():
    return AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)


def make_groups(vocab):
    g = torch.Generator().manual_seed(1)
    ids = lambda n: torch.randint(5, vocab, (n,), generator=g).tolist()
    shapes = [(5, [3, 1, 4]), (3, [2, 5]), (6, [4, 2, 3]), (4, [1, 3])]  # (prompt length, completions)
    advantages = [[1.2, -0.7, -0.5], [-1.0, 1.0], [0.3, 0.9, -1.2], [1.0, -1.0]]
    return [
        {"prompt": ids(p), "domain": "math",
         "completions": [{"ids": ids(n), "advantage": a} for n, a in zip(ns, adv)]}
        for (p, ns), adv in zip(shapes, advantages)
    ]


def sequence_logprobs(model, prompt, ids):
    # Independent of the shared-prefix forward: one unpadded full sequence per completion.
    logits = model(input_ids=torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1] / T
    logp = torch.log_softmax(logits, -1)
    entropy = -(logp.exp() * logp).sum(-1)
    return logp[torch.arange(len(ids)), torch.tensor(ids)], entropy


def weight(old, rollout, mode, cap, floor):
    rho = math.exp(old - rollout)
    if mode == "tis":
        return min(max(rho, floor), cap)
    return rho if floor <= rho <= cap else 0.0


def token_loss(lp, old, ref, ent, a, w, algo):
    r = torch.exp(lp - old)
    objective = torch.minimum(r * a, torch.clamp(r, 1 - algo.clip_low, 1 + algo.clip_high) * a)
    if a < 0:
        objective = torch.maximum(objective, torch.tensor(algo.clip_ratio_c * a))
    log_r = ref - lp  # k3 with r = p_ref / p, bounded at 10 as verl's kl_penalty (grpo/kl.py)
    k3 = torch.clamp(torch.exp(log_r) - 1 - log_r, max=10.0)
    return -objective * w + algo.kl_coef * k3 - algo.entropy_coef * ent


def reference_update(algo, groups):
    model, frozen = load(), load()
    optimizer = torch.optim.AdamW(model.parameters(), algo.learning_rate, (0.9, 0.999), EPS, weight_decay=0.0)
    with torch.no_grad():
        for g in groups:
            for c in g["completions"]:
                c["old"] = sequence_logprobs(model, g["prompt"], c["ids"])[0].tolist()
                c["ref"] = sequence_logprobs(frozen, g["prompt"], c["ids"])[0].tolist()
                c["w"] = [weight(o, r, algo.importance_sampling, algo.importance_sampling_cap,
                                 algo.importance_sampling_floor) for o, r in zip(c["old"], c["rollout"])]
    half = len(groups) // 2
    for _ in range(algo.update_epochs):
        for part in (groups[:half], groups[half:]):
            rows = []
            for g in part:
                for c in g["completions"]:
                    lp, ent = sequence_logprobs(model, g["prompt"], c["ids"])
                    a = c["advantage"]
                    rows.append([token_loss(lp[t], c["old"][t], c["ref"][t], ent[t], a, c["w"][t], algo)
                                 for t in range(len(c["ids"]))])
            tokens, sequences = sum(len(r) for r in rows), len(rows)
            if algo.loss_aggregation == "token-mean":
                loss = sum(sum(r) for r in rows) / tokens
            else:  # seq-mean-token-mean
                loss = sum(sum(r) / len(r) for r in rows) / sequences
            optimizer.zero_grad()
            loss.backward()
            norms = [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]
            last_norm = torch.linalg.vector_norm(torch.stack(norms)).item()
            optimizer.step()
    return model, last_norm


def ours(algo, groups, zero_stage):
    ds = deepspeed_config(DeepSpeedConfig(zero_stage=zero_stage), algo, world_size=1, on_gpu=False)
    ds["optimizer"]["params"]["eps"] = EPS
    engine = build_engine(load(), ds)
    for group in engine.optimizer.param_groups:
        group["lr"] = algo.learning_rate
    frozen = load().eval().requires_grad_(False)
    update = PolicyUpdate(engine, frozen, algo, ["math"], pad_id=0, world_size=1, zero_stage=zero_stage)
    stats = update.run(groups)
    return engine.module, stats


results = {}
# ZeRO-2 (DeepSpeed's optimizer keeps the gradient norm) and ZeRO-0 (a plain optimizer: PolicyUpdate
# measures it itself).
for mode, aggregation, zero_stage in (("tis", "token-mean", 2), ("mis", "seq-mean-token-mean", 0)):
    algo = AlgorithmConfig(
        learning_rate=0.3, update_epochs=2, mini_batches=2, micro_batch_size=3, clip_low=0.2,
        clip_high=0.28, clip_ratio_c=1.5, recompute_old_logprobs=True, importance_sampling=mode,
        importance_sampling_cap=1.5, importance_sampling_floor=0.7, kl_coef=0.05, entropy_coef=0.01,
        loss_aggregation=aggregation, temperature=T, max_grad_norm=1e6, max_response_tokens=8,
    )
    model = load()
    groups = make_groups(model.config.vocab_size)
    offsets = torch.Generator().manual_seed(2)
    with torch.no_grad():  # rollout log-probs: the initial model's, shifted by up to +-0.8 per token
        for g in groups:
            for c in g["completions"]:
                exact = sequence_logprobs(model, g["prompt"], c["ids"])[0]
                c["rollout"] = (exact + (torch.rand(len(c["ids"]), generator=offsets) - 0.5) * 1.6).tolist()
                c["old_logprobs"] = list(c["rollout"])  # what the rollout engine reports
    copies = [dict(g, completions=[dict(c) for c in g["completions"]]) for g in groups]
    want, want_norm = reference_update(algo, copies)
    got, stats = ours(algo, groups, zero_stage)
    start = dict(load().named_parameters())
    deltas = {}
    for (name, p), (_, q) in zip(got.named_parameters(), want.named_parameters()):
        moved = (q - start[name]).abs().max().item()
        deltas[name] = [(p - q).abs().max().item(), moved]
    flat_w = [w for g in groups for c in g["completions"] for w in c["is_weights"]]
    results[mode] = {"deltas": deltas, "stats": {k: v for k, v in stats.items() if k != "per_domain"},
                     "weights": flat_w, "grad_norm": [stats["grad_norm"], want_norm]}
print(json.dumps(results))
"""


def test_update_matches_an_independent_reference(tmp_path: Path, tiny_model_dir: Path) -> None:
    results = run_script_json(SCRIPT, str(tiny_model_dir))
    for mode, found in results.items():
        stats = found["stats"]
        assert stats["updates_applied"] == 4, (mode, stats)  # 2 epochs x 2 mini-batches
        # The last update's gradient norm (before clipping), whoever measures it.
        got_norm, want_norm = found["grad_norm"]
        assert want_norm > 0 and got_norm == pytest.approx(want_norm, rel=1e-4), (mode, got_norm, want_norm)
        # The weights fall on both sides of the bounds [0.7, 1.5], so the correction is exercised.
        weights = found["weights"]
        assert 0 < stats["importance_weight_clip_ratio"] < 1, stats
        if mode == "tis":
            assert min(weights) == pytest.approx(0.7) and max(weights) == pytest.approx(1.5)
        else:
            assert 0.0 in weights and any(0.7 < w < 1.5 for w in weights)
        # The policy moved far enough for the dual clip and the KL term to act.
        assert stats["dual_clip_ratio"] > 0 and stats["kl_ref"] > 0.1, stats
        moved = 0
        for name, (difference, delta) in found["deltas"].items():
            # Parameters moved by up to ~0.2 over the 4 updates; ours agree with the reference to 1e-6
            # (float32 noise; a wrong normaliser, slice or weight shows up as >= 1e-3).
            assert difference <= 1e-6, (mode, name, difference, delta)
            moved += delta > 1e-2
        assert moved >= 10, found["deltas"]  # the run trained (not two copies of the start)
