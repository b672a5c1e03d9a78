"""Multi-turn episodes on the tiny workplace: hand-written trajectories (right, wrong, malformed, too
many turns, out of tokens) verified by state replay, loss masks, determinism and session isolation."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from m2rl_trainer.agent import (
    AgentTask,
    EpisodeConfig,
    WorkplaceEnvironment,
    parse_ground_truth,
    run_episodes,
)
from m2rl_trainer.agent.episode import Continuation, HFCodec, render_prompt, scripted_generate
from m2rl_trainer.agent.toy import expert_turn, tool_call_text, toy_agent_rows
from m2rl_trainer.agent.workplace.tiny import tiny_workplace

EOT = 1  # <|im_end|> in the character codec


class CharCodec:
    """One token per character; Qwen's chat markers are single tokens (as in a real Qwen tokenizer)."""

    SPECIAL: ClassVar[dict[str, int]] = {"<|im_end|>": 1, "<|im_start|>": 2, "<|endoftext|>": 3}

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            special = next((s for s in self.SPECIAL if text.startswith(s, i)), None)
            if special:
                ids.append(self.SPECIAL[special])
                i += len(special)
            else:
                ids.append(ord(text[i]) + 10)
                i += 1
        return ids

    def decode(self, token_ids: Sequence[int]) -> str:
        names = {v: k for k, v in self.SPECIAL.items()}
        return "".join(names[t] if t in names else chr(t - 10) for t in token_ids)


CODEC = CharCodec()


def prompt_text(instruction: str) -> str:
    return f"<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"


def task(row: dict) -> AgentTask:
    return AgentTask(
        CODEC.encode(prompt_text(row["responses_create_params"]["input"][1]["content"])),
        parse_ground_truth(row["ground_truth"], "ground_truth"),
    )


ROWS = {r["responses_create_params"]["input"][1]["content"]: r for r in toy_agent_rows()}
MOVE_ANA = task(ROWS["Move my meeting with ana to Friday."])
CANCEL_ANA = task(ROWS["Cancel my meeting with ana."])
SEARCH_ANA = tool_call_text("calendar_search_events", query="ana")
MOVE_TO = "2023-12-08 10:00:00"  # Friday, same time as ana's Monday 10:00 meeting


def update_to(when: str) -> str:
    return tool_call_text("calendar_update_event", event_id="00000001", field="event_start", new_value=when)


def turns_policy(*turns: str) -> Callable[[str], str]:
    """A policy that says `turns[k]` at its k-th turn (counted from the context), then "Done."."""

    def script(context: str) -> str:
        k = context.count("<|im_start|>assistant") - 1
        return turns[k] if k < len(turns) else "Done."

    return script


def run(policy: Callable[[str], str], tasks: Sequence[AgentTask] = (MOVE_ANA,), **config) -> list:
    env = WorkplaceEnvironment(tiny_workplace())
    episodes = run_episodes(
        tasks, scripted_generate(CODEC, EOT, policy), CODEC, env, EpisodeConfig(end_of_turn_id=EOT, **config)
    )
    assert env.session_count() == 0  # every session ended: nothing carries over to the next episodes
    return episodes


def segments(episode) -> list[tuple[int, str]]:
    """(mask value, decoded text) of each run of equal mask values after the prompt."""
    runs: list[tuple[int, list[int]]] = []
    for token, mask in zip(episode.token_ids, episode.loss_mask, strict=True):
        if runs and runs[-1][0] == mask:
            runs[-1][1].append(token)
        else:
            runs.append((mask, [token]))
    return [(m, CODEC.decode(ids)) for m, ids in runs]


def observation(*results: str) -> str:
    blocks = "".join(f"\n<tool_response>\n{r}\n</tool_response>" for r in results)
    return f"\n<|im_start|>user{blocks}<|im_end|>\n<|im_start|>assistant\n"


EVENT_ANA = {
    "event_id": "00000001",
    "event_name": "sync",
    "participant_email": "ana@atlas.com",
    "event_start": "2023-12-04 10:00:00",
    "duration": "30",
}
SEARCH_RESULT = json.dumps(
    {"events": [EVENT_ANA], "pagination": {"total_events": 1, "page": 1, "page_size": 5, "total_pages": 1}}
)


def test_right_trajectory_gets_reward_1_with_model_tokens_masked_in():
    (episode,) = run(expert_turn)
    assert (episode.reward, episode.finish, episode.turns) == (1.0, "answered", 3)
    assert [c.name for c in episode.calls] == ["calendar_search_events", "calendar_update_event"]
    # the loss mask: 1 on exactly the model's three turns (with their end-of-turn token), 0 on the two
    # tool results between them, written out by hand
    assert segments(episode) == [
        (1, SEARCH_ANA + "<|im_end|>"),
        (0, observation(SEARCH_RESULT)),
        (1, update_to(MOVE_TO) + "<|im_end|>"),
        (0, observation("Event updated successfully.")),
        (1, "Done.<|im_end|>"),
    ]
    assert episode.logprobs == [0.0] * len(episode.token_ids)
    assert len(episode.loss_mask) == len(episode.token_ids) == len(episode.logprobs)


def test_wrong_final_state_gets_reward_0():
    (episode,) = run(turns_policy(SEARCH_ANA, update_to("2023-12-07 10:00:00")))  # Thursday, not Friday
    assert episode.reward == 0.0 and episode.finish == "answered"
    assert episode.verdict.details == [
        "calendar_events: expected row ('00000001', 'sync', 'ana@atlas.com', '2023-12-08 10:00:00', '30') "
        "is missing",
        "calendar_events: unexpected row ('00000001', 'sync', 'ana@atlas.com', '2023-12-07 10:00:00', '30')",
    ]


def test_the_same_end_state_by_another_route_gets_reward_1():
    # no search: the id is known; then a harmless look-up; the state is what the ground truth leaves
    (episode,) = run(turns_policy(update_to(MOVE_TO), SEARCH_ANA))
    assert episode.reward == 1.0 and episode.turns == 3


def test_malformed_call_is_an_observation_and_the_model_can_recover():
    bad = '<tool_call>{"name": "calendar_update_event", "arguments": {event_id: 1}}</tool_call>'
    (recovered,) = run(turns_policy(bad, update_to(MOVE_TO)))
    assert (recovered.reward, recovered.malformed_calls, recovered.turns) == (1.0, 1, 3)
    assert segments(recovered)[1] == (
        0,
        observation(
            "Error: the tool call is not valid JSON (Expecting property name enclosed in double quotes)."
        ),
    )
    (gave_up,) = run(turns_policy(bad))
    assert (gave_up.reward, gave_up.calls, gave_up.finish) == (0.0, [], "answered")


def test_invalid_calls_change_nothing_and_are_told_why():
    wrong_args = tool_call_text("calendar_update_event", event_id="00000001", when=MOVE_TO)
    (episode,) = run(turns_policy(wrong_args, tool_call_text("calendar_move_event", event_id="00000001")))
    assert episode.reward == 0.0 and len(episode.calls) == 2  # verified by replay: both fail again
    assert [t["content"] for t in episode.transcript if t["role"] == "tool"] == [
        "calendar_update_event() got an unexpected keyword argument 'when'",
        "Model attempted to call undefined function: calendar_move_event",
    ]


def test_too_many_turns_ends_after_six_and_the_last_calls_count():
    (searching,) = run(lambda context: SEARCH_ANA)
    assert (searching.turns, searching.finish, searching.reward, len(searching.calls)) == (
        6,
        "max_turns",
        0.0,
        6,
    )
    masks = [m for m, _text in segments(searching)]
    assert masks == [1, 0] * 5 + [1]  # no observation after the last turn
    (late,) = run(turns_policy(*[SEARCH_ANA] * 5, update_to(MOVE_TO)))
    assert (late.turns, late.finish, late.reward) == (6, "max_turns", 1.0)
    (short,) = run(lambda context: SEARCH_ANA, max_turns=2)
    assert (short.turns, short.finish, len(short.calls)) == (2, "max_turns", 2)


def test_running_out_of_tokens_ends_the_episode():
    first = len(CODEC.encode(SEARCH_ANA)) + 1
    # the search fits, its result does not: the episode ends without a second turn
    (episode,) = run(expert_turn, max_tokens=first + 20)
    assert (episode.finish, episode.turns, episode.reward) == ("max_tokens", 1, 0.0)
    assert len(episode.token_ids) == first and set(episode.loss_mask) == {1}
    # a turn cut by the limit: its (unclosed) call does not run
    (cut,) = run(turns_policy(update_to(MOVE_TO)), max_tokens=30)
    assert (cut.finish, cut.calls, cut.reward, len(cut.token_ids)) == ("max_tokens", [], 0.0, 30)


def sampled_policy(seed: int) -> Callable[[Sequence[Sequence[int]], Sequence[int]], list[Continuation]]:
    """A stochastic policy: a pseudo-random choice per (seed, context), with made-up log-probs."""

    def generate(contexts, max_new_tokens):
        out = []
        for context, limit in zip(contexts, max_new_tokens, strict=True):
            rng = random.Random(f"{seed}:{CODEC.decode(context)}")
            text = rng.choice(
                [expert_turn(CODEC.decode(context)), SEARCH_ANA, "Done.", "<tool_call>{</tool_call>"]
            )
            ids = [*CODEC.encode(text), EOT][:limit]
            out.append(
                Continuation(ids, [-rng.random() for _ in ids], "stop" if ids[-1] == EOT else "length")
            )
        return out

    return generate


def test_episodes_are_deterministic_given_the_policy_samples():
    tasks = [task(r) for r in toy_agent_rows()]

    def episodes(seed: int, parallel: int):
        env = WorkplaceEnvironment(tiny_workplace())
        config = EpisodeConfig(end_of_turn_id=EOT, parallel=parallel)
        found = run_episodes(tasks, sampled_policy(seed), CODEC, env, config)
        return [(e.token_ids, e.loss_mask, e.logprobs, e.finish, e.reward) for e in found]

    first = episodes(seed=1, parallel=8)
    assert first == episodes(seed=1, parallel=8) == episodes(seed=1, parallel=1)
    assert first != episodes(seed=2, parallel=8)
    rewards = [e[4] for e in first]
    assert 0 < sum(rewards) < len(rewards)  # a mix of solved and failed tasks
    for (
        _ids,
        mask,
        logprobs,
        _finish,
        _reward,
    ) in first:  # the sampler's log-probs on model tokens, 0 elsewhere
        assert all(lp < 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 1)
        assert all(lp == 0.0 for lp, m in zip(logprobs, mask, strict=True) if m == 0)


def test_episodes_in_one_batch_do_not_see_each_other():
    cancel_then_move = run(expert_turn, tasks=[CANCEL_ANA, MOVE_ANA])
    assert [e.reward for e in cancel_then_move] == [1.0, 1.0]  # the move still found ana's meeting


def test_real_tokenizer_episode(tiny_model_dir: Path):
    """With the tiny model's BPE tokenizer: the prompt from the chat template, and the token stream
    decodes to the conversation, model turns where the mask is 1 and tool results where it is 0."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    codec = HFCodec(tokenizer)
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    row = ROWS["Mark chen's task as completed."]
    messages = row["responses_create_params"]["input"]
    prompt = render_prompt(tokenizer, messages, row["responses_create_params"]["tools"])
    assert codec.decode(prompt).endswith("Mark chen's task as completed.<|im_end|>\n<|im_start|>assistant\n")
    env = WorkplaceEnvironment(tiny_workplace())
    (episode,) = run_episodes(
        [AgentTask(prompt, parse_ground_truth(row["ground_truth"], "gt"))],
        scripted_generate(codec, eot, expert_turn),
        codec,
        env,
        EpisodeConfig(end_of_turn_id=eot),
    )
    assert episode.reward == 1.0
    model = [t for t, m in zip(episode.token_ids, episode.loss_mask, strict=True) if m == 1]
    turns = [t["content"] for t in episode.transcript if t["role"] == "assistant"]
    assert codec.decode(model) == "".join(turns)
    assert turns[-1] == "Done.<|im_end|>" and turns[0].startswith("<tool_call>\n")
    full = codec.decode(episode.prompt_ids + episode.token_ids)
    assert full.count("<tool_response>") == 2 and full.endswith("Done.<|im_end|>")


def test_agent_prompts_become_groups_of_completions_with_masks_and_rewards(
    tmp_path: Path, tiny_model_dir: Path
):
    """The bridge the trainer's rollout uses: blend rows -> prompts -> n episodes each -> completions."""
    from transformers import AutoTokenizer

    from m2rl_trainer.agent.rollout import (
        agent_groups,
        episode_figures,
        episode_keys,
        is_environment,
        open_environment,
    )
    from m2rl_trainer.config import DomainConfig
    from m2rl_trainer.data import load_domain

    blend = tmp_path / "toy.jsonl"
    blend.write_text("".join(json.dumps(r) + "\n" for r in toy_agent_rows()[0:15:5]))  # ana, ben, chen
    domain = DomainConfig(name="agent", dataset=str(blend), verifier="workplace_assistant", format="nemotron")
    assert is_environment(domain.verifier) and not is_environment("math")
    prompts = load_domain(domain)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
    codec = HFCodec(tokenizer)
    replies = iter(["Done.", "Done."])  # the second prompt's first two episodes give up at once

    def script(context: str) -> str:
        if "with ben" in context and context.count("<|im_start|>assistant") == 1:
            return next(replies, expert_turn(context))
        return expert_turn(context)

    environment = open_environment("workplace_assistant")
    groups = agent_groups(prompts, 3, scripted_generate(codec, eot, script), tokenizer, environment,
                          EpisodeConfig(end_of_turn_id=eot))  # fmt: skip
    assert [rewards for _c, rewards, _n in groups] == [[1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    for index, (completions, _rewards, _counts) in enumerate(groups):
        for c in completions:
            assert c.prompt_index == index and c.finish_reason == "stop"
            assert len(c.loss_mask) == len(c.token_ids) == len(c.logprobs)
            assert codec.decode(c.prompt_token_ids).endswith("<|im_start|>assistant\n")
    solved = groups[0][0][0]
    assert solved.loss_mask.count(0) > 0 and solved.text.count("<tool_response>") == 2
    # What the episodes did, per group: ben's group has two one-turn episodes that gave up ("Done.").
    ana, ben, _chen = (counts for _c, _r, counts in groups)
    assert ana == {"agent/episodes": 3, "agent/turns": 9, "agent/tool_calls": 6, "agent/malformed_calls": 0,
                   "agent/tool_result_tokens": 3 * solved.loss_mask.count(0)}  # fmt: skip
    assert (ben["agent/turns"], ben["agent/tool_calls"]) == (1 + 1 + 3, 2)
    keys = episode_keys(["agent"])
    figures = episode_figures({k: float(sum(c[k] for _c, _r, c in groups)) for k in keys})
    results = sum(c.loss_mask.count(0) for g in groups for c in g[0])
    assert figures == {
        "agent": {
            "turns": 23 / 9,
            "tool_calls": 14 / 9,
            "malformed_call_ratio": 0.0,
            "tool_result_length": results / 9,
        }
    }
    with pytest.raises(ValueError, match="unknown environment 'gym'"):
        open_environment("gym")
