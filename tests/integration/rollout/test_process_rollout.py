"""The colocated generator in a child process (one-step off-policy runs): same samples as in-process
generation, weight updates that take, clear errors, and no process left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from m2rl_trainer.rollout.base import RolloutError, SamplingParams
from m2rl_trainer.rollout.colocated import HFGenerateRollout
from m2rl_trainer.rollout.process import ProcessRollout

PROMPTS = ["Q: 12+34= A:", "hello", "Q: max 3 8 1= A:"]
PARAMS = SamplingParams(n=4, max_tokens=12, temperature=1.0, top_p=1.0, stop=[], seed=7)


def _tokens(groups: list[list[Any]]) -> list[list[int]]:
    return [c.token_ids for group in groups for c in group]


def _assert_same_samples(a: list[list[Any]], b: list[list[Any]]) -> None:
    """Same tokens; logprobs equal up to float summation order (the child runs 1 torch thread)."""
    assert _tokens(a) == _tokens(b)
    for x, y in zip([c for g in a for c in g], [c for g in b for c in g], strict=True):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)


@pytest.fixture(scope="module")
def generator(tiny_model_dir: Path) -> Any:
    engine = ProcessRollout(str(tiny_model_dir))
    yield engine
    engine.close()


def test_same_samples_as_in_process_generation_before_and_after_a_weight_update(
    generator: ProcessRollout, tiny_model_dir: Path
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    local = HFGenerateRollout(model, AutoTokenizer.from_pretrained(tiny_model_dir))
    before = generator.generate(PROMPTS, PARAMS)
    _assert_same_samples(before, local.generate(PROMPTS, PARAMS))

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    generator.update_weights(model.state_dict())
    after = generator.generate(PROMPTS, PARAMS)
    _assert_same_samples(after, local.generate(PROMPTS, PARAMS))
    assert _tokens(after) != _tokens(before)  # the new weights really changed what is sampled


def test_errors_name_the_cause(generator: ProcessRollout, tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="update_weights: unknown parameter names"):
        generator.update_weights({"no.such.weight": torch.zeros(1)})
    assert len(generator.generate(PROMPTS[:1], PARAMS)[0]) == 4  # still serving
    with pytest.raises(RolloutError, match=f"could not load {tmp_path}"):
        ProcessRollout(str(tmp_path))


def test_a_dead_generator_is_an_error_and_closing_leaves_no_process(tiny_model_dir: Path) -> None:
    engine = ProcessRollout(str(tiny_model_dir))
    pid = engine._process.pid
    assert pid is not None and psutil.pid_exists(pid)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RolloutError, match="rollout process died during generate"):
        engine.generate(PROMPTS, PARAMS)
    engine.close()
    second = ProcessRollout(str(tiny_model_dir))
    child = second._process.pid
    second.close()
    assert child is not None and not psutil.pid_exists(child)
