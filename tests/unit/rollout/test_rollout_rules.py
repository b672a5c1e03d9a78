"""Pure rollout rules: sampling-parameter checks, per-prompt seeds, which vLLM logprobs mode fits."""

from __future__ import annotations

import pytest

from m2rl_trainer.rollout.base import SamplingParams
from m2rl_trainer.rollout.server import derive_seed, required_logprobs_mode


@pytest.mark.parametrize(
    ("params", "problems"),
    [
        (SamplingParams(n=8, max_tokens=16, temperature=0.7, top_p=0.9, stop=["\n"], seed=1), []),
        (SamplingParams(n=0), ["n must be at least 1, got 0"]),
        (SamplingParams(max_tokens=0), ["max_tokens must be at least 1, got 0"]),
        (SamplingParams(temperature=-1), ["temperature must be >= 0, got -1"]),
        (
            SamplingParams(n=2, temperature=0),
            ["greedy decoding (temperature 0) gives one completion, got n=2"],
        ),
        (SamplingParams(top_p=0), ["top_p must be in (0, 1], got 0"]),
        (SamplingParams(stop=[""]), ["stop strings must be non-empty"]),
    ],
    ids=["valid", "n", "max-tokens", "temperature", "greedy-n", "top-p", "empty-stop"],
)
def test_sampling_params_problems(params: SamplingParams, problems: list[str]) -> None:
    assert params.problems() == problems


@pytest.mark.parametrize(
    ("temperature", "top_p", "mode"),
    [
        (0.0, 0.5, None),  # greedy: both modes report T=1 logprobs
        (1.0, 1.0, None),  # nothing applied: both modes agree
        (1.0, 0.9, "raw_logprobs"),  # raw ignores the top-p truncation, which the convention excludes
        (0.7, 1.0, "processed_logprobs"),  # processed includes the temperature, which it needs
    ],
    ids=["greedy", "plain", "top-p", "temperature"],
)
def test_required_logprobs_mode(temperature: float, top_p: float, mode: str | None) -> None:
    assert required_logprobs_mode(SamplingParams(temperature=temperature, top_p=top_p)) == mode


def test_no_vllm_mode_gives_temperature_logprobs_under_top_p() -> None:
    with pytest.raises(ValueError, match="use temperature 1 or top_p 1"):
        required_logprobs_mode(SamplingParams(temperature=0.7, top_p=0.9))


def test_derived_seeds_are_distinct_stable_and_in_range() -> None:
    seeds = [derive_seed(seed, index) for seed in range(20) for index in range(500)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds)
    assert derive_seed(3, 7) == derive_seed(3, 7) != derive_seed(7, 3)
