"""Memory of the policy update: gradient checkpointing set-up, the per-rank estimate that refuses a
config that cannot fit before any model is loaded, and a peak-memory counter that works on CPU.

The estimate (`estimate`) adds, per rank, with P parameters, w bytes per weight (2 in bf16), L
layers, hidden H, MLP width I, KV width K, vocabulary V, and a micro-batch of T padded tokens in
`rows` sequences of at most P_t prompt + R response tokens:

- weights P w (ZeRO-3: P w / ranks + two layers gathered), gradients P w (ZeRO-2/3: / ranks),
  optimiser 12 P bytes in bf16 (fp32 master + Adam m, v; 8 P in fp32), / ranks from ZeRO-1, 0 when
  offloaded; a reference model P w when kl_coef > 0; the loop's fp32 copy of the head gradient V H 4.
- activations, read off transformers' Qwen2 decoder layer (what each op saves for its backward):
  per token and layer w (10 H + 2 K + 4 I) + 4 (2 H) (RMSNorm keeps fp32), L times; with gradient
  checkpointing only each layer's input (w H) L times plus one layer's activations during its
  recompute. The attention mask: one bool per (query, key) pair, and its additive float copy per
  layer (one layer under checkpointing): rows R (P_t + R) (1 + w L).
- the chunked LM head (train/logprobs.py): three fp32 tiles of `logits_chunk_mib` (fewer rows if T
  is smaller), its fp32 weight
  gradient V H 4, and two copies of the selected hidden states T H w.

Checked against measured peaks: on CPU in tests/unit/train/test_memory.py (the estimate bounds the
peak of one micro-batch, and not by more than 2x), on a GPU by scripts/gpu-check.sh.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from m2rl_trainer.config import ConfigError, TrainerConfig
from m2rl_trainer.train.logprobs import chunk_rows


def prepare_policy(model: torch.nn.Module, *, gradient_checkpointing: bool) -> None:
    """Turn on gradient checkpointing (non-reentrant, transformers' default) before DeepSpeed wraps
    the model. Checkpointed layers recompute only in training mode (`GradientCheckpointingLayer`),
    so the model is put in training mode, with dropout off: log-probabilities must be those of the
    policy that generated, as TRL's `disable_dropout` does for the same reason."""
    if not gradient_checkpointing:
        return
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()


class PeakMemory(TorchDispatchMode):
    """Peak bytes of live tensor storage while active, on any device (CPU included), counted per
    storage as PyTorch's own `torch.distributed._tools.mem_tracker.MemTracker` counts (a weak
    reference per storage, freed when its last tensor dies). MemTracker itself refuses a module
    called twice in one pass, which the shared-prefix forward does. `track(tensors)` adds tensors
    made before entry (weights); views and in-place results share their storage and count once."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._refs: dict[int, weakref.ref[Any]] = {}

    def track(self, tensors: Iterable[torch.Tensor]) -> None:
        for tensor in tensors:
            self._add(tensor)
        self.peak = max(self.peak, self.current)

    def _add(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._refs and self._refs[key]() is storage:
            return
        size = storage.nbytes()

        def freed(_: Any, key: int = key, size: int = size) -> None:
            self.current -= size
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(storage, freed)
        self.current += size

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self._add(value)
        self.peak = max(self.peak, self.current)
        return out


GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    hidden: int
    intermediate: int
    kv_width: int
    vocab: int


def model_shape(model_dir: str | Path) -> ModelShape:
    """The shape of a Hugging Face model folder from its config alone: the parameter count comes
    from an instance on the meta device (no weights read, no memory allocated)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    text = cfg.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(
        params=sum(p.numel() for p in model.parameters()),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=getattr(text, "intermediate_size", 4 * text.hidden_size),
        kv_width=getattr(text, "num_key_value_heads", heads) * head_dim,
        vocab=text.vocab_size,
    )


def estimate(
    shape: ModelShape, config: TrainerConfig, *, world_size: int, weight_bytes: int
) -> dict[str, int]:
    """Bytes per rank at the peak of one micro-batch's forward + backward, by part (see the module doc)."""
    a, ds, mem = config.algorithm, config.deepspeed, config.memory
    p, w, world = shape.params, weight_bytes, world_size
    prompt, response = a.max_prompt_tokens, a.max_response_tokens
    # The largest micro-batch the batching can build: micro_batch_size sequences of the longest
    # kind, each with its own prompt row, capped by the token budget.
    rows = a.micro_batch_size
    tokens = rows * (prompt + response)
    if mem.max_tokens_per_micro_batch is not None:
        rows = max(1, min(rows, mem.max_tokens_per_micro_batch // (prompt + response)))
        tokens = min(tokens, mem.max_tokens_per_micro_batch)
    layer_bytes = w * (10 * shape.hidden + 2 * shape.kv_width + 4 * shape.intermediate) + 4 * 2 * shape.hidden
    if mem.gradient_checkpointing:
        activations = tokens * shape.layers * w * shape.hidden + tokens * layer_bytes
        mask_layers = 1
    else:
        activations = tokens * shape.layers * layer_bytes
        mask_layers = shape.layers
    zero3 = ds.zero_stage == 3
    layer_params = (p - 2 * shape.vocab * shape.hidden) // max(shape.layers, 1)
    parts = {
        "weights": p * w // world + 2 * layer_params * w if zero3 else p * w,
        "gradients": p * w // world if ds.zero_stage >= 2 else p * w,
        "optimizer": 0
        if ds.offload_optimizer
        else (12 if w == 2 else 8) * p // (world if ds.zero_stage >= 1 else 1),
        "reference model": p * w if a.kl_coef > 0 else 0,
        "head gradient copy": 0 if zero3 else shape.vocab * shape.hidden * 4,
        "activations": activations,
        # one sequence alone runs without a mask (batching.py: `_whole_sequences`)
        "attention mask": 0 if rows == 1 else rows * response * (prompt + response) * (1 + w * mask_layers),
        "LM head": 3 * min(chunk_rows(shape.vocab, mem.logits_chunk_mib), tokens) * shape.vocab * 4
        + shape.vocab * shape.hidden * 4
        + 2 * tokens * shape.hidden * w,
    }
    return parts


def describe(parts: dict[str, int]) -> str:
    return ", ".join(f"{name} {value / GIB:.2f}" for name, value in parts.items() if value) + " GiB"


def check_fits(
    config: TrainerConfig, *, world_size: int, weight_bytes: int, device_bytes: int | None
) -> dict[str, int] | None:
    """Refuse (ConfigError naming the fields to change) a config whose estimate exceeds
    `memory.usable_fraction` of the device memory; None when there is nothing to check against."""
    mem = config.memory
    limit_bytes = int(mem.device_memory_gib * GIB) if mem.device_memory_gib is not None else device_bytes
    if limit_bytes is None:
        return None
    shape = model_shape(config.model)
    parts = estimate(shape, config, world_size=world_size, weight_bytes=weight_bytes)
    total, usable = sum(parts.values()), int(limit_bytes * mem.usable_fraction)
    if total <= usable:
        return parts
    advice = []
    if not mem.gradient_checkpointing:
        advice.append("turn on memory.gradient_checkpointing (API: spec.trainer.gradientCheckpointing)")
    fitting = _largest_fitting_budget(shape, config, world_size, weight_bytes, usable)
    if fitting is not None:
        advice.append(f"set memory.max_tokens_per_micro_batch to {fitting} or less")
    elif config.algorithm.micro_batch_size > 1:
        advice.append("lower algorithm.micro_batch_size (API: spec.trainer.microBatchSize)")
    if config.deepspeed.zero_stage < 3 and world_size > 1:
        advice.append("use deepspeed.zero_stage 3 (partitions the weights over the ranks)")
    if not config.deepspeed.offload_optimizer:
        advice.append("set deepspeed.offload_optimizer")
    advice.append("lower algorithm.max_response_tokens, or use more GPUs")
    raise ConfigError(
        f"memory: the update needs about {total / GIB:.1f} GiB per rank ({describe(parts)}), more than "
        f"{mem.usable_fraction:.0%} of {limit_bytes / GIB:.1f} GiB; to fit: " + "; ".join(advice)
    )


def _largest_fitting_budget(
    shape: ModelShape, config: TrainerConfig, world_size: int, weight_bytes: int, usable: int
) -> int | None:
    """The largest token budget (a multiple of one sequence) whose estimate fits, if one sequence does."""
    sequence = config.algorithm.max_prompt_tokens + config.algorithm.max_response_tokens
    best = None
    for multiple in (1, 2, 4, 8, 16, 32, 64):
        trial = dataclasses.replace(
            config, memory=dataclasses.replace(config.memory, max_tokens_per_micro_batch=multiple * sequence)
        )
        if sum(estimate(shape, trial, world_size=world_size, weight_bytes=weight_bytes).values()) > usable:
            break
        best = multiple * sequence
    return best
