"""Peak memory of one training micro-batch (forward + backward) against response length (issue 10).

One sequence per micro-batch: a 128-token prompt and a response of 1k, 4k or 16k tokens, under a
Qwen2-shaped model with Qwen's vocabulary (151,936) and a small hidden size (64, 2 layers, so it runs
on CPU), fp32. Side by side, in one process, each row's peak counted the same way:

- ours: `shared_prefix_logprobs` (chunked LM head, train/logprobs.py) + `policy_loss`, backward; with
  and without gradient checkpointing (`memory.gradient_checkpointing`).
- ours before this change: the same forward with the whole logits (`model(...).logits.float()`,
  then `selective_log_softmax` and `token_entropy_from_logits`), as the trainer did.
- TRL 1.16 `GRPOTrainer.compute_loss` (its default path: TRL now always runs its own chunked head,
  `add_fused_lm_head`, tiles of 4096 tokens x 32768 vocabulary columns), then backward.
- Liger-Kernel 0.8.5 `LigerFusedLinearGRPOLoss` (`compiled=False`: torch.compile is not the point
  here) on the decoder's hidden states: what TRL's former `use_liger_loss=True` called. TRL 1.16 has
  no `use_liger_loss` any more (GRPOConfig has no such field).

The peak is the high-water mark of live tensor storage (`m2rl_trainer.train.memory.PeakMemory`,
counted per storage as PyTorch's MemTracker counts), weights and gradients included; the same
counter on every row. The full-logits row is skipped where it would need more than `--max-gib`
of this shared machine's memory (it is printed as the estimate: 3 fp32 [R, V] tensors).

    .venv/bin/python bench/bench_memory.py [--lengths 1024 4096 16384] [--hidden 64] [--max-gib 8]
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

PROMPT = 128
VOCAB = 151_936


def _model(hidden: int) -> Any:
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
        tie_word_embeddings=True,
        max_position_embeddings=32_768 + PROMPT,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _sequence(length: int) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(length)
    return torch.randint(10, VOCAB, (PROMPT,), generator=g).tolist(), torch.randint(
        10, VOCAB, (length,), generator=g
    ).tolist()


def _ours(model: Any, prompt: list[int], response: list[int], full_logits: bool) -> None:
    from m2rl_trainer.grpo import policy_loss, selective_log_softmax, token_entropy_from_logits
    from m2rl_trainer.train.batching import shared_prefix_batch, shared_prefix_logprobs

    group = {
        "prompt": prompt,
        "completions": [{"ids": response, "old_logprobs": [-1.0] * len(response), "advantage": 1.0}],
    }
    batch = shared_prefix_batch([group], 0, "cpu")
    if full_logits:  # the trainer's forward before this change (git show HEAD~3:.../batching.py)
        prefix = model(input_ids=batch["prompt_ids"], attention_mask=batch["prompt_mask"],
                       position_ids=batch["prompt_positions"], use_cache=True, logits_to_keep=1)  # fmt: skip
        rest = model(input_ids=batch["ids"], attention_mask=batch["attention"],
                     position_ids=batch["positions"], past_key_values=prefix.past_key_values,
                     use_cache=True)  # fmt: skip
        logits = torch.cat([prefix.logits[batch["owner"], -1:], rest.logits[:, :-1]], 1).float()
        logprobs, entropy = (
            selective_log_softmax(logits, batch["ids"]),
            token_entropy_from_logits(logits.detach()),
        )
    else:
        logprobs, entropy = shared_prefix_logprobs(model, batch, 1.0)
    loss, _ = policy_loss(logprobs, batch["old_logprobs"], batch["advantages"], batch["mask"], clip_low=0.2,
                          clip_high=0.28, aggregation="token-mean", entropy=entropy.detach())  # fmt: skip
    loss.backward()


def _trl_trainer(model: Any, work: Path) -> Any:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerFast
    from trl import GRPOConfig, GRPOTrainer

    from m2rl_trainer.models.tiny import build_tiny_model

    tokenizer_dir = build_tiny_model(work / "tok")  # any tokenizer: the loss path gets token ids
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    args = GRPOConfig(
        output_dir=str(work / "trl"), use_vllm=False, use_cpu=True, bf16=False, gradient_checkpointing=False,
        num_generations=2, per_device_train_batch_size=2, max_completion_length=32_768, beta=0.0,
        loss_type="dapo", report_to=[], disable_tqdm=True, save_strategy="no",
    )  # fmt: skip
    return GRPOTrainer(
        model=model, reward_funcs=[lambda completions, **_: [0.0] * len(completions)], args=args,
        train_dataset=Dataset.from_list([{"prompt": "x"}] * 4), processing_class=tokenizer,
    )  # fmt: skip


def _trl(trainer: Any, prompt: list[int], response: list[int]) -> None:
    inputs = {
        "prompt_ids": torch.tensor([prompt]),
        "prompt_mask": torch.ones(1, len(prompt), dtype=torch.long),
        "completion_ids": torch.tensor([response]),
        "completion_mask": torch.ones(1, len(response), dtype=torch.long),
        "advantages": torch.ones(1),
        "old_per_token_logps": torch.full((1, len(response)), -1.0),
        "num_items_in_batch": torch.tensor(float(len(response))),
    }
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() for each step
    trainer.compute_loss(trainer.model, inputs).backward()


def _liger(model: Any, prompt: list[int], response: list[int]) -> None:
    from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

    ids = torch.tensor([prompt + response])
    hidden = model.model(input_ids=ids).last_hidden_state[:, len(prompt) - 1 : -1]
    loss_fn = LigerFusedLinearGRPOLoss(beta=0.0, compiled=False, use_ref_model=False, loss_type="dapo",
                                       epsilon_low=0.2, epsilon_high=0.28)  # fmt: skip
    loss, _ = loss_fn(hidden, model.lm_head.weight, torch.tensor([response]), torch.ones(1, len(response)),
                      torch.ones(1), old_per_token_logps=torch.full((1, len(response)), -1.0))  # fmt: skip
    loss.backward()


def _peak(model: Any, run: Callable[[], None]) -> tuple[int, float]:
    from m2rl_trainer.train.memory import PeakMemory

    model.zero_grad(set_to_none=True)
    gc.collect()
    counter = PeakMemory()
    counter.track(model.parameters())
    start = time.perf_counter()
    with counter:
        run()
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return counter.peak, seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--max-gib", type=float, default=8.0, help="skip a row whose estimate exceeds this")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from m2rl_trainer.train.memory import prepare_policy

    plain, checkpointed = _model(args.hidden), _model(args.hidden)
    prepare_policy(checkpointed, gradient_checkpointing=True)
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    trl_model = _model(args.hidden)
    trainer = _trl_trainer(trl_model, work)
    liger_model = _model(args.hidden)
    params = sum(p.numel() for p in plain.parameters())
    print(f"model: Qwen2 shape, hidden {args.hidden}, 2 layers, vocabulary {VOCAB:,}, "
          f"{params / 1e6:.1f}M parameters (weights {params * 4 / 2**20:.0f} MiB fp32); prompt {PROMPT} "
          f"tokens; one sequence per micro-batch; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows: dict[str, Callable[[list[int], list[int]], None]] = {
        "ours (chunked head)": lambda p, r: _ours(plain, p, r, full_logits=False),
        "ours + gradient checkpointing": lambda p, r: _ours(checkpointed, p, r, full_logits=False),
        "ours before (full logits)": lambda p, r: _ours(plain, p, r, full_logits=True),
        "TRL 1.16 GRPOTrainer (default)": lambda p, r: _trl(trainer, p, r),
        "Liger GRPO loss (use_liger_loss)": lambda p, r: _liger(liger_model, p, r),
    }
    models = {"ours + gradient checkpointing": checkpointed, "TRL 1.16 GRPOTrainer (default)": trl_model,
              "Liger GRPO loss (use_liger_loss)": liger_model}  # fmt: skip
    results: dict[str, dict[int, int]] = {name: {} for name in rows}
    print(f"\n{'peak MiB (seconds)':34}" + "".join(f"{n:>20}" for n in args.lengths))
    for name, run in rows.items():
        cells = []
        for length in args.lengths:
            prompt, response = _sequence(length)
            if name.startswith("ours before") and 3 * length * VOCAB * 4 > args.max_gib * 2**30:
                cells.append(f"~{3 * length * VOCAB * 4 / 2**20:,.0f} (not run)")
                continue
            peak, seconds = _peak(models.get(name, plain), functools.partial(run, prompt, response))
            results[name][length] = peak
            cells.append(f"{peak / 2**20:,.0f} ({seconds:.1f}s)")
        print(f"{name:34}" + "".join(f"{c:>20}" for c in cells), flush=True)
    ours, trl = results["ours (chunked head)"], results["TRL 1.16 GRPOTrainer (default)"]
    lengths = sorted(ours)
    if len(lengths) >= 2:
        a, b = lengths[0], lengths[-1]
        per_token = (ours[b] - ours[a]) / (b - a)
        print(f"\nours: {per_token / 1024:.1f} KiB per extra response token between {a} and {b} "
              f"(a [1, V] fp32 logits row alone is {VOCAB * 4 / 1024:.0f} KiB)")  # fmt: skip
    for name in rows:
        if name in results and results[name] and name != "ours (chunked head)":
            common = [n for n in lengths if n in results[name]]
            ratios = ", ".join(f"{n}: {ours[n] / results[name][n]:.2f}" for n in common)
            print(f"ratio ours / {name}: {ratios}")
    top = max(lengths)
    print(f"memory ratio at {top // 1024}k: {ours[top] / trl[top]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
