"""DeepSpeed set-up: the config dict (pure) and the engine around a Hugging Face causal LM.

Gradient accumulation is caller-owned (`managed_gradient_accumulation: false`): the loop calls
`backward` once per micro-batch and `step` once per optimiser update, so the number of
micro-batches may vary (dynamic sampling) and the loss normalisation stays ours (global token
counts), not DeepSpeed's `1 / gradient_accumulation_steps`.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from typing import Any

import torch

from m2rl_trainer.config import AlgorithmConfig, DeepSpeedConfig


def resolve_dtype(config: DeepSpeedConfig, on_gpu: bool) -> torch.dtype:
    """bf16 on GPUs, fp32 on CPU (bf16 matmuls are slow or missing on many CPUs)."""
    if config.dtype == "auto":
        return torch.bfloat16 if on_gpu else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.dtype]


def deepspeed_config(
    ds: DeepSpeedConfig, algo: AlgorithmConfig, *, world_size: int, on_gpu: bool
) -> dict[str, Any]:
    """The DeepSpeed JSON config for a run (pure; tested against whole expected dicts)."""
    dtype = resolve_dtype(ds, on_gpu)
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.zero_stage >= 2:
        zero["overlap_comm"] = False  # caller-owned accumulation supports overlap only on stage 2
        zero["contiguous_gradients"] = True
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    if ds.offload_params:
        if ds.zero_stage != 3:
            raise ValueError("deepspeed.offload_params: parameter offload needs zero_stage 3")
        zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    if ds.zero_stage == 3:
        # Rank 0 needs the full weights for weight sync and Hugging Face checkpoints.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    config: dict[str, Any] = {
        # Batch sizes are bookkeeping only here: the loop owns accumulation.
        "train_micro_batch_size_per_gpu": algo.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": algo.micro_batch_size * world_size,
        "managed_gradient_accumulation": False,
        "gradient_clipping": algo.max_grad_norm,
        "optimizer": {
            "type": "AdamW",
            # torch's AdamW on CPU: DeepSpeed's fused CPU Adam needs a compiled op we do not build here.
            "params": {
                "lr": algo.learning_rate,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": algo.weight_decay,
                "torch_adam": not on_gpu,
            },
        },
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,  # our own metrics log every step
        "wall_clock_breakdown": False,
    }
    return config


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_group_backend(on_gpu: bool) -> str:
    """The torch.distributed backend string of the trainer's process group.

    On GPUs, NCCL serves CUDA tensors and gloo CPU tensors ("cpu:gloo,cuda:nccl"): the loop
    all-reduces small CPU tensors (loss normalisers, statistics, the non-finite flag) and exchanges
    Python objects (dynamic-sampling rebalancing), and a NCCL-only group has no backend for the
    CPU device ("No backend type associated with device type cpu"). torch parses the string in
    `distributed_c10d.BackendConfig` (one backend per device type); DeepSpeed's
    `TorchBackend.init_process_group` hands it to `torch.distributed.init_process_group` as is.
    """
    return "cpu:gloo,cuda:nccl" if on_gpu else "gloo"


def init_distributed(on_gpu: bool) -> DistInfo:
    """Join the process group the launcher (torchrun/deepspeed) set up; a lone process is rank 0 of 1."""
    import deepspeed

    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        from m2rl_trainer.utils.processes import free_port

        os.environ["MASTER_PORT"] = str(free_port())
    deepspeed.init_distributed(dist_backend=process_group_backend(on_gpu))
    return DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ["LOCAL_RANK"]),
    )


def lr_multiplier(
    step: int, schedule: str, warmup_steps: int, total_steps: int, min_ratio: float = 0.0
) -> float:
    """Learning-rate factor of training step `step` (0-based): linear warm-up over `warmup_steps`
    steps ((step + 1) / warmup_steps, so the first step already learns), then the schedule, whose
    decay ends at `min_ratio` (the API's schedule.minRatio)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(max(step - warmup_steps, 0) / max(total_steps - warmup_steps, 1), 1.0)
    if schedule == "linear":
        decay = 1.0 - progress
    elif schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"algorithm.lr_schedule: unknown schedule {schedule!r}")
    return min_ratio + (1.0 - min_ratio) * decay


def step_learning_rate(algo: AlgorithmConfig, step: int) -> float:
    """The learning rate of every optimizer update of training step `step` (0-based).

    A pure function of the step, as the API's warmupSteps counts steps: a step's
    update_epochs x mini_batches updates share it, and a resumed run needs no scheduler state.
    """
    return algo.learning_rate * lr_multiplier(
        step, algo.lr_schedule, algo.warmup_steps, algo.steps, algo.lr_min_ratio
    )


def set_learning_rate(engine: Any, lr: float) -> None:
    """Set `lr` on every parameter group of the engine's optimizer (ZeRO wrappers share the torch
    optimizer's param_groups, as DeepSpeed's own schedulers in runtime/lr_schedules.py rely on)."""
    for group in engine.optimizer.param_groups:
        group["lr"] = lr


def build_engine(model: torch.nn.Module, ds_config: dict[str, Any]) -> Any:
    """Wrap `model` in a DeepSpeed engine with its optimiser. The learning rate is set by the loop
    before each step (`set_learning_rate`), so there is no scheduler to save."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
    )
    return engine


def reference_config(ds_config: dict[str, Any]) -> dict[str, Any]:
    """DeepSpeed config of the frozen reference model under ZeRO-3: the policy's, without optimizer
    or optimizer offload, so its parameters are partitioned over the ranks like the policy's instead
    of replicated on every GPU (TRL's `prepare_deepspeed` in trl/models/utils.py, OpenRLHF's
    eval-model init). Under ZeRO 0-2 the loop keeps a plain copy on each device instead."""
    config = copy.deepcopy(ds_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    config["zero_optimization"].pop("offload_optimizer", None)
    config.pop("gradient_clipping", None)
    return config


def build_reference(model: torch.nn.Module, ds_config: dict[str, Any]) -> Any:
    """The reference model wrapped in a ZeRO-3 inference engine (call on every rank)."""
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, config=reference_config(ds_config))
    engine.eval()
    return engine


def full_state_dict(engine: Any, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """The full weights on rank 0 (None elsewhere). Collective under ZeRO-3: call on every rank."""
    import torch.distributed as dist

    if zero_stage == 3:
        state = engine._zero3_consolidated_16bit_state_dict()  # gathers partitions to rank 0
        return state if dist.get_rank() == 0 else None
    if dist.get_rank() != 0:
        return None
    return {name: tensor.detach().clone() for name, tensor in engine.module.state_dict().items()}
