"""Colocated rollout (Hugging Face generate) on the tiny model: logprobs, EOS, stops, seeds, weights."""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from m2rl_trainer.rollout.base import Completion, RolloutEngine, SamplingParams
from m2rl_trainer.rollout.colocated import HFGenerateRollout
from tests.integration.rollout.logprobs import max_error

# Prompts of different token lengths, so one batch needs left padding.
PROMPTS = ["Q: 12+34= A:", "hello", "Q: 1+1= A: \\boxed{", "write your final answer in a box"]


@pytest.fixture
def engine(model: Any, tokenizer: Any) -> HFGenerateRollout:
    return HFGenerateRollout(model, tokenizer)


def test_is_a_rollout_engine(engine: HFGenerateRollout) -> None:
    assert isinstance(engine, RolloutEngine)


@pytest.mark.parametrize(
    ("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8)], ids=["T1", "T0.7", "top-p"]
)
def test_logprobs_are_those_of_a_direct_forward_pass(
    engine: HFGenerateRollout, model: Any, tokenizer: Any, temperature: float, top_p: float
) -> None:
    params = SamplingParams(n=3, max_tokens=12, temperature=temperature, top_p=top_p, seed=1)
    groups = engine.generate(PROMPTS, params)
    assert [len(g) for g in groups] == [3, 3, 3, 3]
    for index, group in enumerate(groups):
        for c in group:
            assert c.prompt_index == index
            assert c.prompt_token_ids == tokenizer(PROMPTS[index])["input_ids"]  # no padding leaked in
            assert len(c.logprobs) == len(c.token_ids)
    # Untruncated softmax(logits / T) even under top-p (the convention in rollout.base).
    assert max_error(model, groups, temperature) < 1e-4


def test_greedy_takes_the_argmax_and_reports_temperature_one(engine: HFGenerateRollout, model: Any) -> None:
    groups = engine.generate(PROMPTS, SamplingParams(n=1, max_tokens=10, temperature=0.0))
    assert max_error(model, groups, 1.0) < 1e-4
    for (c,) in groups:
        ids = torch.tensor([c.prompt_token_ids + c.token_ids])
        with torch.no_grad():
            logits = model(ids).logits[0]
        argmax = logits[len(c.prompt_token_ids) - 1 : -1].argmax(-1).tolist()
        assert c.token_ids == argmax[: len(c.token_ids)]


def test_completions_stop_at_eos_with_variable_lengths_and_no_padding(
    engine: HFGenerateRollout, tokenizer: Any
) -> None:
    # The untrained model emits EOS with probability ~1/432 per token: with 64 rows of up to 64
    # tokens about 9 rows end on EOS (none at all would happen with probability ~1e-4).
    prompts = [f"Q: {i}+{i}= A:" for i in range(8)]
    groups = engine.generate(prompts, SamplingParams(n=8, max_tokens=64, temperature=1.0, seed=3))
    completions = [c for group in groups for c in group]
    eos = tokenizer.eos_token_id
    stopped = [c for c in completions if c.finish_reason == "stop"]
    assert stopped, "no completion ended on EOS"
    for c in completions:
        assert eos not in c.token_ids[:-1]  # nothing after the first EOS (no pad tokens)
        if c.finish_reason == "stop":
            assert c.token_ids[-1] == eos and len(c.token_ids) <= 64
        else:
            assert len(c.token_ids) == 64
        assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True).rstrip("\ufffd")
        assert all(math.isfinite(lp) and lp <= 0 for lp in c.logprobs)
    assert any(len(c.token_ids) < 64 for c in stopped)  # variable lengths, not all at the cap


def pick_stop(c: Completion, tokenizer: Any) -> tuple[str, int]:
    """A printable two-token piece of `c` whose first occurrence starts at a token boundary."""
    for k in range(2, len(c.token_ids) - 2):
        piece = tokenizer.decode(c.token_ids[k : k + 2])
        prefix = tokenizer.decode(c.token_ids[:k])
        if (
            piece.isascii()
            and piece.isprintable()
            and len(piece.strip()) >= 2
            and c.text.find(piece) == len(prefix)
        ):
            return piece, k
    raise AssertionError(f"no usable stop string in {c.text!r}")


def test_stop_strings_end_the_completion_like_vllm(engine: HFGenerateRollout, tokenizer: Any) -> None:
    params = SamplingParams(n=1, max_tokens=24, temperature=1.0, seed=11)
    (original,) = engine.generate(["Q: 5+6= A:"], params)[0]
    stop, k = pick_stop(original, tokenizer)
    (stopped,) = engine.generate(["Q: 5+6= A:"], dataclasses.replace(params, stop=[stop]))[0]
    # Same seed, same tokens until the stop string completes (in the token after position k).
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == original.token_ids[: k + 2]
    assert stopped.logprobs == pytest.approx(original.logprobs[: k + 2], abs=1e-6)
    assert stopped.text == tokenizer.decode(original.token_ids[:k])  # cut before the stop string


def test_seeded_generation_is_reproducible_and_leaves_the_global_rng_alone(engine: HFGenerateRollout) -> None:
    params = SamplingParams(n=4, max_tokens=8, temperature=1.0, seed=5)
    torch.manual_seed(123)
    first = engine.generate(PROMPTS, params)
    after_first = torch.rand(1)
    torch.manual_seed(123)
    second = engine.generate(PROMPTS, params)
    assert torch.equal(torch.rand(1), after_first)  # generation did not consume the trainer's RNG
    tokens = [[c.token_ids for c in g] for g in first]
    assert tokens == [[c.token_ids for c in g] for g in second]
    other = engine.generate(PROMPTS, SamplingParams(n=4, max_tokens=8, temperature=1.0, seed=6))
    assert tokens != [[c.token_ids for c in g] for g in other]
    assert len({tuple(t) for t in tokens[0]}) == 4  # a group's samples differ from each other


def test_batches_of_limited_size_give_the_same_result(model: Any, tokenizer: Any) -> None:
    params = SamplingParams(n=2, max_tokens=6, temperature=1.0, seed=2)
    whole = HFGenerateRollout(model, tokenizer).generate(PROMPTS, params)
    chunked = HFGenerateRollout(model, tokenizer, max_batch_sequences=2).generate(PROMPTS, params)
    assert [g[0].prompt_index for g in chunked] == [0, 1, 2, 3]
    # Sampling noise is drawn per call, so only the structure and logprob convention must agree.
    assert max_error(model, chunked, 1.0) < 1e-4 and max_error(model, whole, 1.0) < 1e-4


def test_update_weights_changes_what_is_generated(model: Any, tokenizer: Any) -> None:
    copy_of_model = copy.deepcopy(model)
    engine = HFGenerateRollout(copy_of_model, tokenizer)
    new = {name: t * 3.0 if name == "model.norm.weight" else t for name, t in model.state_dict().items()}
    engine.update_weights(new)
    assert torch.equal(copy_of_model.model.norm.weight, model.model.norm.weight * 3.0)
    groups = engine.generate(PROMPTS[:2], SamplingParams(n=2, max_tokens=8, seed=0))
    assert max_error(copy_of_model, groups, 1.0) < 1e-4
    assert max_error(model, groups, 1.0) > 0.1  # the old weights would give other logprobs
    with pytest.raises(KeyError, match="unknown parameter names"):
        engine.update_weights({**new, "model.bogus.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="no values for"):
        engine.update_weights({k: v for k, v in new.items() if k != "model.norm.weight"})


def test_update_weights_accepts_a_tied_lm_head_without_its_own_key(model: Any, tokenizer: Any) -> None:
    config = copy.deepcopy(model.config)
    config.tie_word_embeddings = True
    tied = AutoModelForCausalLM.from_config(config)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    embeddings = model.model.embed_tokens.weight.detach() * 2.0
    state = {k: v for k, v in tied.state_dict().items() if k != "lm_head.weight"}
    HFGenerateRollout(tied, tokenizer).update_weights({**state, "model.embed_tokens.weight": embeddings})
    assert torch.equal(tied.lm_head.weight, embeddings)


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_shared_prefill_gives_the_same_tokens_and_logprobs(
    model: Any, tokenizer: Any, temperature: float
) -> None:
    """Each prompt prefilled once for its n samples (the default) = generate's own expansion."""
    params = SamplingParams(n=4, max_tokens=12, temperature=temperature, top_p=0.9, stop=[], seed=7)
    shared = HFGenerateRollout(model, tokenizer).generate(PROMPTS, params)
    plain = HFGenerateRollout(model, tokenizer, share_prefill=False).generate(PROMPTS, params)
    for group_a, group_b in zip(shared, plain, strict=True):
        for a, b in zip(group_a, group_b, strict=True):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason and a.text == b.text
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-5
    assert max_error(model, shared, temperature) < 1e-4  # still the model's own log-probabilities
