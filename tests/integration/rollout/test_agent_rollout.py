"""Agent episodes over the real vLLM server (server rollout mode): token-id contexts, one completion
per episode and turn, budgets, seeds; the tiny untrained model rarely calls a tool, so the turn logic
itself is covered with scripted policies in tests/unit/agent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from m2rl_trainer.agent import (
    AgentTask,
    EpisodeConfig,
    WorkplaceEnvironment,
    parse_ground_truth,
    run_episodes,
)
from m2rl_trainer.agent.engines import engine_generate
from m2rl_trainer.agent.episode import HFCodec
from m2rl_trainer.agent.toy import toy_agent_rows
from m2rl_trainer.agent.workplace.tiny import tiny_workplace
from m2rl_trainer.rollout.base import Completion, SamplingParams
from m2rl_trainer.rollout.server import VLLMServerRollout
from m2rl_trainer.rollout.vllm_server import VLLMServer


class FakeEngine:
    """Answers every context with the same 5 tokens; records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[list[int]], SamplingParams]] = []

    def generate(self, prompts: list[Any], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((prompts, params))
        return [
            [Completion(i, p, [7, 8, 9, 10, 11], [-0.1] * 5, "x", "length")] for i, p in enumerate(prompts)
        ]

    def close(self) -> None:
        pass


def test_budgets_cut_each_continuation_and_seeds_vary_per_turn() -> None:
    engine = FakeEngine()
    generate = engine_generate(engine, SamplingParams(n=8, max_tokens=99, temperature=1.0, seed=5))
    first = generate([[1, 2], [3]], [3, 9])
    assert [c.token_ids for c in first] == [[7, 8, 9], [7, 8, 9, 10, 11]]
    assert [c.finish_reason for c in first] == ["length", "length"]
    generate([[1]], [4])
    (p1, params1), (_, params2) = engine.calls
    assert p1 == [[1, 2], [3]] and (params1.n, params1.max_tokens) == (
        1,
        9,
    )  # one per episode, the largest budget
    assert params1.seed != params2.seed and params2.max_tokens == 4


def test_episodes_over_the_vllm_server(vllm_server: VLLMServer, tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    codec, eot = HFCodec(tokenizer), tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = toy_agent_rows()[:4]
    users = [r["responses_create_params"]["input"][1:] for r in rows]  # the user turn (short context)
    prompts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in users]
    tasks = [
        AgentTask(codec.encode(p), parse_ground_truth(r["ground_truth"], "gt"))
        for p, r in zip(prompts, rows, strict=True)
    ]
    config = EpisodeConfig(end_of_turn_id=eot, max_tokens=24)
    params = SamplingParams(n=1, max_tokens=24, temperature=1.0, seed=11)
    with VLLMServerRollout([vllm_server.url], vllm_server.model_name, tokenizer, timeout_s=120) as engine:
        runs = [
            run_episodes(
                tasks, engine_generate(engine, params), codec, WorkplaceEnvironment(tiny_workplace()), config
            )
            for _ in range(2)
        ]
    first, second = ([(e.token_ids, e.logprobs, e.finish) for e in run] for run in runs)
    assert first == second  # seeded: the same episodes again
    for episode in runs[0]:
        assert episode.reward == 0.0 and episode.turns == 1  # an untrained model calls no tool
        assert 1 <= len(episode.token_ids) <= 24 and set(episode.loss_mask) == {1}
        ids = torch.tensor([episode.prompt_ids + episode.token_ids])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        n = len(episode.prompt_ids)
        expected = [logprobs[n - 1 + k, t].item() for k, t in enumerate(episode.token_ids)]
        assert episode.logprobs == pytest.approx(expected, abs=1e-3)
