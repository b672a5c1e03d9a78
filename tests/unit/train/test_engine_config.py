"""DeepSpeed config (pure) and the learning-rate schedule."""

import itertools

import pytest
import torch

from m2rl_trainer.config import AlgorithmConfig, DeepSpeedConfig
from m2rl_trainer.train.engine import (
    deepspeed_config,
    lr_multiplier,
    reference_config,
    resolve_dtype,
    step_learning_rate,
)


def test_zero3_cpu_config_whole() -> None:
    algo = AlgorithmConfig(learning_rate=2e-6, micro_batch_size=8, max_grad_norm=1.0)
    assert deepspeed_config(DeepSpeedConfig(zero_stage=3), algo, world_size=2, on_gpu=False) == {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 1,
        "train_batch_size": 16,
        "managed_gradient_accumulation": False,
        "gradient_clipping": 1.0,
        "optimizer": {
            "type": "AdamW",
            "params": {
                "lr": 2e-6,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
                "weight_decay": 0.0,
                "torch_adam": True,
            },
        },
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": False,
            "contiguous_gradients": True,
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def test_gpu_defaults_to_bf16_and_fused_adam_with_offload() -> None:
    config = deepspeed_config(
        DeepSpeedConfig(zero_stage=3, offload_optimizer=True, offload_params=True),
        AlgorithmConfig(),
        world_size=8,
        on_gpu=True,
    )
    assert config["bf16"] == {"enabled": True}
    assert config["optimizer"]["params"]["torch_adam"] is False
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert config["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert resolve_dtype(DeepSpeedConfig(), on_gpu=True) == torch.bfloat16
    assert resolve_dtype(DeepSpeedConfig(), on_gpu=False) == torch.float32


def test_param_offload_needs_zero3() -> None:
    with pytest.raises(ValueError, match="zero_stage 3"):
        deepspeed_config(
            DeepSpeedConfig(zero_stage=2, offload_params=True), AlgorithmConfig(), world_size=1, on_gpu=True
        )


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("constant", 0, 0.25),  # warm-up: (0+1)/4
        ("constant", 3, 1.0),
        ("constant", 50, 1.0),
        ("linear", 4, 1.0),
        ("linear", 54, 0.5),  # halfway through 100 post-warm-up steps
        ("linear", 104, 0.0),
        ("cosine", 54, 0.5),
        ("cosine", 104, 0.0),
    ],
)
def test_lr_multiplier(schedule: str, step: int, expected: float) -> None:
    assert lr_multiplier(step, schedule, warmup_steps=4, total_steps=104) == pytest.approx(expected, abs=1e-9)


def test_learning_rate_is_a_function_of_the_step_not_of_updates() -> None:
    """The API's warmupSteps counts training steps: with 2 epochs x 4 mini-batches (8 updates per
    step) a 4-step warm-up still ends at step 4, and the decay ends at minRatio."""
    algo = AlgorithmConfig(learning_rate=1e-3, lr_schedule="linear", warmup_steps=4, steps=14,
                           update_epochs=2, mini_batches=4, lr_min_ratio=0.1)  # fmt: skip
    lrs = [step_learning_rate(algo, step) for step in range(14)]
    assert lrs[:4] == pytest.approx([0.25e-3, 0.5e-3, 0.75e-3, 1e-3])
    assert lrs[4] == pytest.approx(1e-3)  # decay starts after warm-up
    assert lrs[9] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # halfway through the 10 decay steps
    assert all(a > b for a, b in itertools.pairwise(lrs[4:]))
    assert lrs[-1] > 0.1e-3  # the last step still learns; the schedule's end is step 14 (= steps)


def test_min_ratio_floors_cosine_decay() -> None:
    assert lr_multiplier(100, "cosine", 0, 100, min_ratio=0.2) == pytest.approx(0.2)
    assert lr_multiplier(50, "cosine", 0, 100, min_ratio=0.2) == pytest.approx(0.6)
    assert lr_multiplier(50, "constant", 0, 100, min_ratio=0.2) == 1.0


def test_weight_decay_reaches_adamw() -> None:
    config = deepspeed_config(
        DeepSpeedConfig(), AlgorithmConfig(weight_decay=0.01), world_size=1, on_gpu=False
    )
    assert config["optimizer"]["params"]["weight_decay"] == 0.01


def test_reference_engine_config_is_the_policys_without_training_blocks() -> None:
    """ZeRO-3's frozen reference: partitioned like the policy, no optimizer (TRL's prepare_deepspeed)."""
    policy = deepspeed_config(
        DeepSpeedConfig(zero_stage=3, offload_optimizer=True, offload_params=True),
        AlgorithmConfig(micro_batch_size=4),
        world_size=8,
        on_gpu=True,
    )
    assert reference_config(policy) == {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "train_batch_size": 32,
        "managed_gradient_accumulation": False,
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": False,
            "contiguous_gradients": True,
            "offload_param": {"device": "cpu", "pin_memory": True},
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "bf16": {"enabled": True},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    assert "optimizer" in policy  # the policy's own config is left as it was
