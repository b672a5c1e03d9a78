"""The policy update with MT-OPD's per-token advantages and multi-turn loss masks, against an
independent reference written from the formulas (one full-sequence forward per completion, Python
arithmetic per token, torch's AdamW), as test_update_reference.py does for GRPO.

Each completion interleaves model tokens and tool-result tokens (loss mask 0) and carries a
teacher's log-probs; the reference takes A_t = teacher_t - pi_old_t on model tokens only, where
pi_old is the model before the update (the study's on_policy_distillation estimator), and ignores
the tool-result tokens entirely except as context.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.train.conftest import run_script_json

SCRIPT = r"""
import json, sys
import torch
from transformers import AutoModelForCausalLM
from m2rl_trainer.config import AlgorithmConfig, DeepSpeedConfig, TeacherConfig
from m2rl_trainer.train.engine import build_engine, deepspeed_config, init_distributed
from m2rl_trainer.train.update import PolicyUpdate

torch.manual_seed(0)
init_distributed(False)
MODEL = sys.argv[1]
EPS = 1.0  # Adam's eps >> sqrt(v): each step ~ lr * gradient (see test_update_reference.py)


def load():
    return AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)


def make_groups(vocab, opd):
    g = torch.Generator().manual_seed(3)
    ids = lambda n: torch.randint(5, vocab, (n,), generator=g).tolist()
    # (prompt length, [(completion length, loss mask)]): tool results as runs of 0 inside
    shapes = [(4, [[1, 1, 0, 0, 0, 1, 1], [1, 1, 1]]), (5, [[1, 0, 0, 1], [1, 1, 0, 1, 1, 1]]),
              (3, [[1, 1, 1, 1], [1, 0, 1]])]
    groups = []
    for p, masks in shapes:
        completions = []
        for j, mask in enumerate(masks):
            advantage = 0.0 if opd else (1.0 if j % 2 else -1.0)
            c = {"ids": ids(len(mask)), "loss_mask": mask, "advantage": advantage}
            if opd:
                c["teacher_logprobs"] = (-torch.rand(len(mask), generator=g) * 4).tolist()
            completions.append(c)
        groups.append({"prompt": ids(p), "domain": "agent", "completions": completions})
    return groups


def sequence_logprobs(model, prompt, ids):
    logits = model(input_ids=torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
    logp = torch.log_softmax(logits, -1)
    return logp[torch.arange(len(ids)), torch.tensor(ids)]


def reference_update(algo, groups, opd):
    model = load()
    optimizer = torch.optim.AdamW(model.parameters(), algo.learning_rate, (0.9, 0.999), EPS, weight_decay=0.0)
    with torch.no_grad():
        for g in groups:
            for c in g["completions"]:
                c["old"] = sequence_logprobs(model, g["prompt"], c["ids"]).tolist()
    for _ in range(algo.update_epochs):
        rows = []
        for g in groups:
            for c in g["completions"]:
                lp = sequence_logprobs(model, g["prompt"], c["ids"])
                row = []
                for t, keep in enumerate(c["loss_mask"]):
                    if not keep:
                        continue  # a tool result: context only
                    a = c["teacher_logprobs"][t] - c["old"][t] if opd else c["advantage"]
                    r = torch.exp(lp[t] - c["old"][t])
                    clipped = torch.clamp(r, 1 - algo.clip_low, 1 + algo.clip_high)
                    row.append(-torch.minimum(r * a, clipped * a))
                rows.append(row)
        loss = sum(sum(r) / len(r) for r in rows) / len(rows)  # seq-mean-token-mean over model tokens
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def ours(algo, groups):
    ds = deepspeed_config(DeepSpeedConfig(zero_stage=2), algo, world_size=1, on_gpu=False)
    ds["optimizer"]["params"]["eps"] = EPS
    engine = build_engine(load(), ds)
    for group in engine.optimizer.param_groups:
        group["lr"] = algo.learning_rate
    update = PolicyUpdate(engine, None, algo, ["agent"], pad_id=0, world_size=1, zero_stage=2)
    return engine.module, update.run(groups)


results = {}
for name in ("mt-opd", "grpo"):
    opd = name == "mt-opd"
    algo = AlgorithmConfig(
        name=name, learning_rate=0.3, update_epochs=3, micro_batch_size=2, clip_low=0.2, clip_high=0.2,
        loss_aggregation="seq-mean-token-mean", max_grad_norm=1e6, max_response_tokens=8,
        teachers=[TeacherConfig(domains=["agent"], model="teacher")] if opd else [],
    )
    model = load()
    groups = make_groups(model.config.vocab_size, opd)
    with torch.no_grad():  # the rollout's log-probs: the model's, 0 on tool results (as episodes record them)
        for g in groups:
            for c in g["completions"]:
                exact = sequence_logprobs(model, g["prompt"], c["ids"]).tolist()
                c["old_logprobs"] = [x if m else 0.0 for x, m in zip(exact, c["loss_mask"])]
    copies = [dict(g, completions=[dict(c) for c in g["completions"]]) for g in groups]
    want = reference_update(algo, copies, opd)
    got, stats = ours(algo, groups)
    start = dict(load().named_parameters())
    deltas = {n: [(p - q).abs().max().item(), (q - start[n]).abs().max().item()]
              for (n, p), (_, q) in zip(got.named_parameters(), want.named_parameters())}
    advantages = [a for g in groups for c in g["completions"] for a in c.get("token_advantages", [])]
    masks = [m for g in groups for c in g["completions"] for m in c["loss_mask"]]
    results[name] = {"deltas": deltas, "stats": {k: v for k, v in stats.items() if k != "per_domain"},
                     "advantages": advantages, "masks": masks}
print(json.dumps(results))
"""


def test_opd_advantages_and_loss_masks_match_an_independent_reference(tiny_model_dir: Path) -> None:
    results = run_script_json(SCRIPT, str(tiny_model_dir))
    for name, found in results.items():
        stats = found["stats"]
        assert stats["updates_applied"] == 3, (name, stats)
        moved = 0
        for parameter, (difference, delta) in found["deltas"].items():
            assert difference <= 1e-6, (name, parameter, difference, delta)
            moved += delta > 1e-2
        assert moved >= 10, found["deltas"]
    opd = results["mt-opd"]
    # per-token advantages on model tokens (non-zero: teacher and student differ), 0 on tool results
    assert len(opd["advantages"]) == len(opd["masks"])
    assert all((a != 0.0) == bool(m) for a, m in zip(opd["advantages"], opd["masks"], strict=True))
    trained = [a for a, m in zip(opd["advantages"], opd["masks"], strict=True) if m]
    # the reported k1 estimate is the mean of log pi_old - log pi_teacher over model tokens
    assert opd["stats"]["opd_reverse_kl"] == pytest.approx(-sum(trained) / len(trained), rel=1e-5)
    assert results["grpo"]["advantages"] == []
