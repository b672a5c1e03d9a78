"""A prepared check of the trainer's GPU path, for a machine with one CUDA GPU, PyTorch and
transformers and no network (`scripts/gpu-check.sh`; DeepSpeed and this package may come as wheels).

One line per check, `PASS name: detail` or `FAIL name: reason`; exit status 1 if any failed. Checks:

1. model: a Qwen2-shaped model of ~0.5B parameters (Qwen2.5-0.5B's shape: hidden 896, 24 layers,
   14 heads, 2 KV heads, MLP 4864, vocabulary 151,936, tied embeddings) built from its config on the
   device in bf16, no download.
2. chunked head: log-probabilities and entropies of the chunked LM head (train/logprobs.py) against
   the full-logits computation at 1k response tokens (where the full logits fit), bf16.
3. train 8k (with and without gradient checkpointing): bf16 training steps (forward, backward,
   AdamW) on one 128-token prompt + 8,192-token response through the trainer's own
   `shared_prefix_logprobs`; the peak of the last step's forward + backward must stay under the
   trainer's estimate for that micro-batch (`train/memory.py: estimate`, the number the trainer
   refuses configs with) plus the optimizer states, and under the 2 R V fp32 bytes the full logits
   and their gradient alone would take.
4. loss on the device: `policy_loss` (with dual-clip and truncated importance weights when this
   build has them) on the GPU in fp32 against the CPU in fp64: loss and gradient.
5. process group: the trainer's `init_distributed` and a collective through the loop's
   `_all_reduce` on its real code path (as with several ranks), i.e. the tensors it reduces meet
   the backends the group has.
6. deepspeed zero-2: one optimizer step of a small model through the trainer's own DeepSpeed config
   (`deepspeed_config`, `build_engine`) on one rank.

`--cpu` runs the same checks, reduced (a small model, 512 response tokens, fp32, the memory peak
counted with `PeakMemory`), so the test suite keeps this file working (tests/integration/train/
test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

PROMPT = 128


@dataclass(frozen=True)
class Plan:
    device: str
    dtype: torch.dtype
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    response: int
    compare_response: int


GPU = Plan("cuda", torch.bfloat16, 896, 24, 14, 2, 4864, 151_936, 8192, 1024)
CPU = Plan("cpu", torch.float32, 64, 2, 4, 2, 176, 32_000, 2048, 256)


def _qwen2(plan: Plan) -> Any:
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        hidden_size=plan.hidden,
        intermediate_size=plan.intermediate,
        num_hidden_layers=plan.layers,
        num_attention_heads=plan.heads,
        num_key_value_heads=plan.kv_heads,
        vocab_size=plan.vocab,
        tie_word_embeddings=True,
        max_position_embeddings=32_768,
        rope_theta=1_000_000.0,
    )
    torch.manual_seed(0)
    with torch.device(plan.device):
        return AutoModelForCausalLM.from_config(config, dtype=plan.dtype)


def _batch(plan: Plan, response: int) -> dict[str, torch.Tensor]:
    from m2rl_trainer.train.batching import shared_prefix_batch

    g = torch.Generator().manual_seed(response)
    prompt = torch.randint(10, plan.vocab, (PROMPT,), generator=g).tolist()
    ids = torch.randint(10, plan.vocab, (response,), generator=g).tolist()
    old = [-math.log(plan.vocab)] * response  # about what an untrained model gives: ratios near 1
    group = {"prompt": prompt, "completions": [{"ids": ids, "old_logprobs": old, "advantage": 1.0}]}
    return shared_prefix_batch([group], 0, plan.device)


class Checks:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.failed = 0

    def run(self, name: str, check: Callable[[], str]) -> None:
        start = time.perf_counter()
        try:
            detail = check()
            line = f"PASS {name}: {detail}"
        except Exception as error:  # each check reports and the next one runs
            self.failed += 1
            where = traceback.extract_tb(error.__traceback__)[-1]
            line = (
                f"FAIL {name}: {type(error).__name__}: {error} ({Path(where.filename).name}:{where.lineno})"
            )
        print(f"{line} [{time.perf_counter() - start:.1f}s]", flush=True)


def _synchronize(plan: Plan) -> None:
    if plan.device == "cuda":
        torch.cuda.synchronize()


def check_model(plan: Plan, state: dict[str, Any]) -> str:
    model = _qwen2(plan)
    state["model"] = model
    params = sum(p.numel() for p in model.parameters())
    if plan.device == "cuda" and not 0.45e9 < params < 0.55e9:
        raise AssertionError(f"{params / 1e9:.3f}B parameters, expected ~0.5B")
    return f"Qwen2 shape, {params / 1e6:.0f}M parameters, {plan.dtype}, on {plan.device}"


def check_chunked_head(plan: Plan, state: dict[str, Any]) -> str:
    from m2rl_trainer.grpo import selective_log_softmax, token_entropy_from_logits
    from m2rl_trainer.train.batching import shared_prefix_logprobs

    model = state["model"]
    batch = _batch(plan, plan.compare_response)
    with torch.no_grad():
        logprobs, entropy = shared_prefix_logprobs(model, batch, 0.9)
        ids = torch.cat([batch["prompt_ids"], batch["ids"]], 1)
        logits = model(input_ids=ids).logits[:, PROMPT - 1 : -1].float() / 0.9
        want_lp, want_h = selective_log_softmax(logits, batch["ids"]), token_entropy_from_logits(logits)
    lp_err, h_err = (logprobs - want_lp).abs(), (entropy - want_h).abs()
    # bf16: the chunks' matmuls may round differently from one [R, V] matmul; fp32 on CPU: exact
    limit = 2e-2 if plan.dtype == torch.bfloat16 else 1e-4
    if lp_err.mean() > limit or h_err.mean() > limit:
        raise AssertionError(
            f"mean |diff| log-prob {lp_err.mean():.2e}, entropy {h_err.mean():.2e} > {limit}"
        )
    return (
        f"{plan.compare_response} tokens: mean |diff| log-prob {lp_err.mean():.1e} (max {lp_err.max():.1e}), "
        f"entropy {h_err.mean():.1e} (max {h_err.max():.1e}) against the full logits"
    )


def check_checkpointed_prefix(plan: Plan, state: dict[str, Any]) -> str:
    """The shared-prefix forward under gradient checkpointing (a group of 4 completions) against
    whole sequences without it: log-probabilities and the gradient of the head."""
    from m2rl_trainer.train import batching
    from m2rl_trainer.train.memory import prepare_policy

    plain, checkpointed = state["model"], _qwen2(plan)
    prepare_policy(checkpointed, gradient_checkpointing=True)
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(10, plan.vocab, (PROMPT,), generator=g).tolist()
    group = {
        "prompt": prompt,
        "completions": [
            {
                "ids": torch.randint(10, plan.vocab, (n,), generator=g).tolist(),
                "old_logprobs": [0.0] * n,
                "advantage": 1.0,
            }
            for n in (256, 200, 256, 31)
        ],
    }
    shared = batching.shared_prefix_batch([group], 0, plan.device)
    results = []
    for model, chunks in ((checkpointed, [[group]]), (plain, batching.micro_batches([group], 1))):
        model.zero_grad(set_to_none=True)
        rows = []
        for chunk in chunks:
            batch = batching.shared_prefix_batch(chunk, 0, plan.device)
            logprobs, _ = batching.shared_prefix_logprobs(model, batch, 1.0)
            (logprobs * batch["mask"]).sum().backward()
            rows += [row[: int(n)] for row, n in zip(logprobs.detach(), batch["mask"].sum(1), strict=True)]
        grad = model.get_output_embeddings().weight.grad.float()
        results.append((rows, grad))
    (ck_rows, ck_grad), (plain_rows, plain_grad) = results
    order = sorted(
        range(4), key=lambda i: len(group["completions"][i]["ids"])
    )  # micro_batches sorts by length
    diffs = torch.cat([(ck_rows[i] - plain_rows[order.index(i)]).abs() for i in range(4)])
    grad_err = float((ck_grad - plain_grad).norm() / plain_grad.norm())
    limit = 2e-2 if plan.dtype == torch.bfloat16 else 1e-4
    if float(diffs.mean()) > limit or grad_err > 10 * limit:
        raise AssertionError(
            f"mean |diff| {float(diffs.mean()):.2e}, head gradient relative error {grad_err:.2e}"
        )
    assert shared["owner"].tolist() == [0, 0, 0, 0]
    return (
        f"4 completions sharing one prompt: mean |diff| log-prob {float(diffs.mean()):.1e}, head gradient "
        f"relative error {grad_err:.1e} against whole sequences without checkpointing"
        + ("" if batching.CACHE_UNDER_CHECKPOINTING else " (this transformers runs whole sequences)")
    )


def _memory_config(plan: Plan, checkpointing: bool) -> Any:
    from m2rl_trainer.config import load_config

    return load_config(
        {
            "model": "/unused",
            "output_dir": "/unused",
            "data": {"domains": [{"name": "d", "dataset": "/unused.jsonl", "verifier": "math"}]},
            "algorithm": {
                "max_prompt_tokens": PROMPT,
                "max_response_tokens": plan.response,
                "micro_batch_size": 1,
            },
            "rollout": {"mode": "colocated"},
            "memory": {"gradient_checkpointing": checkpointing},
        }
    )


def check_train(plan: Plan, state: dict[str, Any], checkpointing: bool) -> str:
    from m2rl_trainer.grpo import policy_loss
    from m2rl_trainer.train.batching import shared_prefix_logprobs
    from m2rl_trainer.train.memory import ModelShape, PeakMemory, estimate, prepare_policy

    model = _qwen2(plan) if checkpointing else state["model"]  # a fresh copy: no checkpointing flags leak
    if checkpointing:
        prepare_policy(model, gradient_checkpointing=True)
    params = sum(p.numel() for p in model.parameters())
    w = plan.dtype.itemsize
    model.zero_grad(set_to_none=True)
    # Tensors of earlier checks still on the device (the other model) are outside the estimate.
    other = torch.cuda.memory_allocated() - params * w if plan.device == "cuda" else 0
    shape = ModelShape(
        params=params, layers=plan.layers, hidden=plan.hidden, intermediate=plan.intermediate,
        kv_width=plan.kv_heads * plan.hidden // plan.heads, vocab=plan.vocab,
    )  # fmt: skip
    parts = estimate(shape, _memory_config(plan, checkpointing), world_size=1, weight_bytes=w)
    adam_states = 2 * params * w  # torch AdamW keeps exp_avg and exp_avg_sq in the weights' dtype
    # cuBLAS workspaces come from the caching allocator on CUDA (4 MiB x 8 per handle: 2 handles)
    workspace = 64 * 2**20 if plan.device == "cuda" else 0
    micro_batch = sum(parts[k] for k in ("weights", "gradients", "activations", "attention mask", "LM head"))
    bound = micro_batch + adam_states + workspace + other
    full_logits = 2 * plan.response * plan.vocab * 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = _batch(plan, plan.response)
    losses, peak = [], 0
    for _step in range(2):
        counter = PeakMemory() if plan.device == "cpu" else None
        if counter is not None:
            counter.track(model.parameters())
            counter.track(
                g for group in optimizer.state.values() for g in group.values() if torch.is_tensor(g)
            )
            counter.track(p.grad for p in model.parameters() if p.grad is not None)
            counter.__enter__()
        else:
            torch.cuda.reset_peak_memory_stats()
        logprobs, entropy = shared_prefix_logprobs(model, batch, 1.0)
        loss, _ = policy_loss(
            logprobs, batch["old_logprobs"], batch["advantages"], batch["mask"], clip_low=0.2, clip_high=0.28,
            aggregation="token-mean", entropy=entropy.detach(),
        )  # fmt: skip
        loss.backward()
        _synchronize(plan)
        if counter is not None:
            counter.__exit__(None, None, None)
            peak = counter.peak
        else:
            peak = torch.cuda.max_memory_allocated()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradient buffers: the estimate counts them
        losses.append(float(loss))
    if not all(torch.isfinite(torch.tensor(losses))):
        raise AssertionError(f"non-finite loss {losses}")
    gib = 2**30
    if peak > bound or peak > full_logits:
        raise AssertionError(
            f"peak {peak / gib:.2f} GiB over the bound {bound / gib:.2f} GiB (estimate "
            + ", ".join(f"{k} {v / gib:.2f}" for k, v in parts.items() if v)
            + f", AdamW states {adam_states / gib:.2f}) or the full logits' {full_logits / gib:.2f} GiB"
        )
    return (
        f"{plan.response} response tokens, loss {losses[0]:+.3f} -> {losses[1]:+.3f}; peak fwd+bwd "
        f"{peak / gib:.2f} GiB <= bound {bound / gib:.2f} GiB (the trainer's estimate + AdamW states"
        f"{' + cuBLAS workspaces' if workspace else ''} + {other / gib:.2f} GiB of other resident tensors; "
        f"full logits + gradient alone: {full_logits / gib:.1f} GiB)"
    )


def check_loss(plan: Plan, state: dict[str, Any]) -> str:
    from m2rl_trainer.grpo import policy_loss

    g = torch.Generator().manual_seed(0)
    shape = (6, 40)
    logprobs = -torch.rand(shape, generator=g, dtype=torch.float64) * 4
    old = logprobs + torch.randn(shape, generator=g, dtype=torch.float64) * 0.8  # ratios far from 1
    rollout = old + torch.randn(shape, generator=g, dtype=torch.float64) * 0.3
    advantages = torch.randn(shape[0], generator=g, dtype=torch.float64)
    mask = (torch.rand(shape, generator=g) > 0.2).double()
    options: dict[str, Any] = {}
    names = inspect.signature(policy_loss).parameters
    used = ["clip"]
    if "clip_ratio_c" in names:
        options["clip_ratio_c"] = 3.0
        used.append("dual-clip c=3")
    if "is_weights" in names:
        from m2rl_trainer.grpo.rollout_correction import importance_weights

        options["is_weights"] = importance_weights(old, rollout, "tis", cap=2.0)
        used.append("TIS cap=2")

    def run(device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        lp = logprobs.detach().to(device, dtype).requires_grad_()
        extra = {k: v.to(device, dtype) if torch.is_tensor(v) else v for k, v in options.items()}
        loss, _ = policy_loss(
            lp, old.to(device, dtype), advantages.to(device, dtype), mask.to(device, dtype), clip_low=0.2,
            clip_high=0.28, aggregation="seq-mean-token-mean", **extra,
        )  # fmt: skip
        loss.backward()
        return loss.detach().cpu().double(), lp.grad.cpu().double()

    want_loss, want_grad = run("cpu", torch.float64)
    got_loss, got_grad = run(plan.device, torch.float32)
    torch.testing.assert_close(got_loss, want_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-6, rtol=1e-4)
    missing = "" if len(used) == 3 else " (this build has no dual-clip/TIS options in policy_loss yet)"
    return f"{' + '.join(used)} on {plan.device} fp32 = CPU fp64: loss {float(want_loss):+.6f}{missing}"


def check_process_group(plan: Plan, state: dict[str, Any]) -> str:
    import torch.distributed as dist

    from m2rl_trainer.train import collectives
    from m2rl_trainer.train.engine import init_distributed

    info = init_distributed(plan.device == "cuda")
    backend = dist.get_backend()
    real = dist.get_world_size
    dist.get_world_size = lambda *a, **k: 2  # type: ignore[assignment]  # take the collective path
    try:
        reduced = collectives.all_reduce([1.0, 2.5])  # CPU float64: the loop's statistics
    finally:
        dist.get_world_size = real  # type: ignore[assignment]
    if reduced != [1.0, 2.5]:
        raise AssertionError(f"all-reduce over one rank changed the values: {reduced}")
    if plan.device == "cuda":  # device tensors go through NCCL in the same group
        on_device = torch.tensor([1.0, 2.5], device="cuda")
        dist.all_reduce(on_device)
        if on_device.tolist() != [1.0, 2.5]:
            raise AssertionError(f"all-reduce of a CUDA tensor changed the values: {on_device.tolist()}")
    return (
        f"rank {info.rank} of {info.world_size}, backend {backend!r}; "
        "the loop's CPU all-reduce ran on its collective path"
    )


def check_deepspeed(plan: Plan, state: dict[str, Any]) -> str:
    from m2rl_trainer.config import AlgorithmConfig, DeepSpeedConfig
    from m2rl_trainer.train.engine import build_engine, deepspeed_config

    small = Plan(plan.device, plan.dtype, 64, 2, 4, 2, 176, 1024, 64, 64)
    model = _qwen2(small)
    algo = AlgorithmConfig(micro_batch_size=1, learning_rate=1e-3, steps=1)
    ds = deepspeed_config(DeepSpeedConfig(zero_stage=2), algo, world_size=1, on_gpu=plan.device == "cuda")
    engine = build_engine(model, ds)
    before = {n: p.detach().float().clone() for n, p in engine.module.named_parameters()}
    ids = torch.randint(10, 1024, (2, 32), device=engine.device)
    loss = engine(input_ids=ids, labels=ids).loss
    engine.backward(loss, scale_wrt_gas=False)
    engine.step()
    moved = sum(not torch.equal(before[n], p.detach().float()) for n, p in engine.module.named_parameters())
    if moved == 0 or not torch.isfinite(loss):
        raise AssertionError(f"loss {float(loss)}, {moved} tensors changed")
    optimizer = type(engine.optimizer).__name__
    inner = type(getattr(engine.optimizer, "optimizer", engine.optimizer)).__name__
    stage = ds["zero_optimization"]["stage"]
    return f"ZeRO-{stage}, {optimizer} over {inner}, loss {float(loss):.3f}, {moved} tensors updated"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cpu", action="store_true", help="the reduced CPU form (what the test suite runs)")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("FAIL environment: no CUDA device (use --cpu for the reduced form)")
        return 1
    plan = CPU if args.cpu else GPU
    if args.cpu:
        torch.set_num_threads(1)
    import transformers

    device = torch.cuda.get_device_name(0) if plan.device == "cuda" else "cpu"
    print(
        f"PASS environment: torch {torch.__version__}, transformers {transformers.__version__}, {device}",
        flush=True,
    )
    os.environ.setdefault("MASTER_PORT", "29512")
    checks = Checks(plan)
    state: dict[str, Any] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory():
        checks.run("model", lambda: check_model(plan, state))
        if "model" in state:
            checks.run("chunked head", lambda: check_chunked_head(plan, state))
            checks.run("shared prefix, checkpointing", lambda: check_checkpointed_prefix(plan, state))
            checks.run("train, gradient checkpointing", lambda: check_train(plan, state, True))
            checks.run("train, no checkpointing", lambda: check_train(plan, state, False))
            state.clear()
        checks.run("loss on the device", lambda: check_loss(plan, state))
        checks.run("process group", lambda: check_process_group(plan, state))
        checks.run("deepspeed zero-2", lambda: check_deepspeed(plan, state))
    total = time.perf_counter() - start
    print(f"{'FAIL' if checks.failed else 'PASS'} all: {checks.failed} failed, {total:.0f}s", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
