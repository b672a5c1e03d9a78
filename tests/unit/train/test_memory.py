"""The memory estimate bounds the measured peak of a micro-batch (and is not loose by more than 2x),
memory grows linearly in tokens with no vocabulary x length term, and a config that cannot fit is
refused before any weights are read, naming what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config

from m2rl_trainer.config import ConfigError, load_config
from m2rl_trainer.train.batching import micro_batches, shared_prefix_batch, shared_prefix_logprobs
from m2rl_trainer.train.memory import PeakMemory, check_fits, estimate, model_shape, prepare_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPT = 32


def _model_dir(tmp_path: Path, vocab: int = 32_000) -> Path:
    config = Qwen2Config(
        hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=vocab, tie_word_embeddings=True, max_position_embeddings=8192,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def _config(model: Path, response: int, micro: int, **memory: object):
    return load_config(
        {
            "model": str(model),
            "output_dir": "/unused",
            "data": {"domains": [{"name": "d", "dataset": "/unused.jsonl", "verifier": "math"}]},
            "algorithm": {
                "group_size": 2, "max_prompt_tokens": PROMPT, "max_response_tokens": response,
                "micro_batch_size": micro,
            },
            "rollout": {"mode": "colocated"},
            "deepspeed": {"dtype": "float32"},
            "memory": {"logits_chunk_mib": 8, **memory},
        }
    )  # fmt: skip


def _measure(model_dir: Path, response: int, micro: int, checkpointing: bool) -> int:
    """Peak bytes of one micro-batch's forward + backward (weights and gradients included)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    prepare_policy(model, gradient_checkpointing=checkpointing)
    groups = [
        {"prompt": list(range(5, 5 + PROMPT)),
         "completions": [{"ids": [7 + i] * response, "old_logprobs": [0.0] * response, "advantage": 1.0}
                         for i in range(micro)]}
    ]  # fmt: skip
    (chunk,) = micro_batches(groups, micro)
    batch = shared_prefix_batch(chunk, 0, "cpu")
    counter = PeakMemory()
    counter.track(model.parameters())
    with counter:
        logprobs, entropy = shared_prefix_logprobs(model, batch, 1.0, chunk_mib=8)
        ((logprobs + 0.01 * entropy) * batch["mask"]).sum().backward()
    return counter.peak


MICRO_BATCH_PARTS = ("weights", "gradients", "activations", "attention mask", "LM head")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_estimate_bounds_the_measured_peak(tmp_path: Path, checkpointing: bool) -> None:
    model_dir = _model_dir(tmp_path)
    shape = model_shape(model_dir)
    assert shape.vocab == 32_000 and shape.layers == 2 and shape.hidden == 64 and shape.kv_width == 32
    for response, micro in [(512, 2), (1536, 1)]:
        parts = estimate(
            shape, _config(model_dir, response, micro, gradient_checkpointing=checkpointing),
            world_size=1, weight_bytes=4,
        )  # fmt: skip
        predicted = sum(parts[k] for k in MICRO_BATCH_PARTS)
        measured = _measure(model_dir, response, micro, checkpointing)
        assert measured <= predicted <= 2 * measured, (response, micro, measured, parts)


def test_peak_grows_linearly_in_tokens_without_a_vocabulary_term(tmp_path: Path) -> None:
    """Doubling the vocabulary adds the head's weights/gradient and a fixed tile, not V x tokens."""
    small, large = _model_dir(tmp_path / "a", 16_000), _model_dir(tmp_path / "b", 32_000)
    short = {d: _measure(d, 256, 1, True) for d in (small, large)}
    long = {d: _measure(d, 1024, 1, True) for d in (small, large)}
    growth_small, growth_large = long[small] - short[small], long[large] - short[large]
    # 768 more tokens cost the same whatever the vocabulary (a [768, 16000] fp32 tile alone is 47 MiB)
    assert abs(growth_large - growth_small) < 2 * 2**20, (growth_small, growth_large)


def test_a_config_that_cannot_fit_is_refused_with_the_estimate_and_advice(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    config = _config(model_dir, 4096, 64, device_memory_gib=0.5)
    with pytest.raises(ConfigError) as error:
        check_fits(config, world_size=1, weight_bytes=4, device_bytes=None)
    message = str(error.value)
    assert message.startswith("memory: the update needs about")
    assert "activations" in message and "of 0.5 GiB" in message
    assert "memory.gradient_checkpointing" in message and "memory.max_tokens_per_micro_batch to" in message
    # the advice is sound: the suggested budget, with checkpointing, fits
    budget = int(message.split("max_tokens_per_micro_batch to ")[1].split()[0])
    fitted = _config(model_dir, 4096, 64, device_memory_gib=0.5, max_tokens_per_micro_batch=budget)
    assert check_fits(fitted, world_size=1, weight_bytes=4, device_bytes=None) is not None
    # nothing to check against on CPU without a stated size
    assert check_fits(_config(model_dir, 4096, 64), world_size=1, weight_bytes=4, device_bytes=None) is None


def test_memory_fields_are_validated(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"memory.max_tokens_per_micro_batch: 100 is less than one sequence"
    ):
        _config(tmp_path, 512, 1, max_tokens_per_micro_batch=100)
    with pytest.raises(ConfigError, match=r"memory\.logits_chunk_mib: must be > 0"):
        _config(tmp_path, 512, 1, logits_chunk_mib=0)
    with pytest.raises(ConfigError, match=r"memory.usable_fraction: must be in \(0, 1\]"):
        _config(tmp_path, 512, 1, usable_fraction=1.5)
