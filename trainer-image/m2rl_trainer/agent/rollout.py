"""Agent prompts -> GRPO groups: n episodes per prompt, each one `Completion` with its loss mask and reward.

The trainer's rollout hands the prompts of a domain whose verifier is an environment (the blend's
workbench rows, `verifier: workplace_assistant`) here instead of to the verifiers: each prompt
becomes `n` independent episodes (own sessions, one completion per turn), and each episode one
completion of the prompt's group, whose tokens interleave model turns and tool results
(`Completion.loss_mask`), whose reward is the environment's verdict, and whose finish reason is
"length" when it ran out of tokens (else "stop"), so DAPO's overlong filtering and the truncation
figures treat it like any completion.

Each group also carries counts of what its episodes did (`episode_counts`): turns, well-formed and
malformed tool calls, tool-result tokens. The trainer sums them over ranks and logs per agent domain
(`episode_figures`): a policy that stops calling tools, or writes broken calls, shows there before
its reward moves; `response_length` counts the model's tokens only, `tool_result_length` the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from m2rl_trainer.agent.client import HttpEnvironment
from m2rl_trainer.agent.environment import ENVIRONMENTS, Environment, get_environment, parse_ground_truth
from m2rl_trainer.agent.episode import (
    AgentTask,
    Episode,
    EpisodeConfig,
    Generate,
    HFCodec,
    render_prompt,
    run_episodes,
)
from m2rl_trainer.data.datasets import Prompt
from m2rl_trainer.rollout.base import Completion


def is_environment(verifier: str) -> bool:
    """Whether a domain's `verifier` names a tool environment (multi-turn episodes), not a verifier."""
    return verifier in ENVIRONMENTS


def open_environment(
    name: str, *, service_url: str | None = None, data_dir: str | None = None
) -> Environment:
    """The environment service at `service_url` (pods: it runs sandboxed beside the verifier), else
    the environment in-process, from `data_dir` (None: its built-in data)."""
    get_environment(name)  # an unknown name is an error before anything connects
    if service_url:
        return HttpEnvironment(service_url)
    return get_environment(name).build(Path(data_dir) if data_dir else None)


def agent_task(prompt: Prompt, tokenizer: Any) -> AgentTask:
    """A prompt of an agent domain (reference {"ground_truth", "tools"}, data/nemotron.py) as a task."""
    if isinstance(prompt.prompt, str):
        raise ValueError(f"domain {prompt.domain!r} prompt {prompt.id}: an agent task needs chat messages")
    ids = render_prompt(tokenizer, list(prompt.prompt), list(prompt.reference["tools"]))
    truth = parse_ground_truth(prompt.reference["ground_truth"], f"prompt {prompt.id} ground_truth")
    return AgentTask(ids, truth)


def completion_of(index: int, episode: Episode, codec: HFCodec) -> Completion:
    return Completion(
        prompt_index=index,
        prompt_token_ids=list(episode.prompt_ids),
        token_ids=list(episode.token_ids),
        logprobs=list(episode.logprobs),
        text=codec.decode(episode.token_ids),
        finish_reason="length" if episode.finish == "max_tokens" else "stop",
        loss_mask=list(episode.loss_mask),
    )


# Summed per domain over a step's episodes (keys "<domain>/<name>"), all-reduced by the trainer.
EPISODE_COUNTS = ("episodes", "turns", "tool_calls", "malformed_calls", "tool_result_tokens")


def episode_counts(domain: str, episodes: Sequence[Episode]) -> Counter[str]:
    """Counts '<domain>/<name>' of EPISODE_COUNTS over `episodes` (tool results: loss-mask-0 tokens)."""
    counts: Counter[str] = Counter()
    for e in episodes:
        counts[f"{domain}/episodes"] += 1
        counts[f"{domain}/turns"] += e.turns
        counts[f"{domain}/tool_calls"] += len(e.calls)
        counts[f"{domain}/malformed_calls"] += e.malformed_calls
        counts[f"{domain}/tool_result_tokens"] += e.loss_mask.count(0)
    return counts


def episode_keys(domains: Sequence[str]) -> list[str]:
    """Every count key of these (agent) domains, in a fixed order (to sum them over ranks)."""
    return [f"{domain}/{name}" for domain in domains for name in EPISODE_COUNTS]


def episode_figures(totals: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """{domain: figures} for domains with episodes: per episode, `turns`, `tool_calls` (well-formed)
    and `tool_result_length` (tokens); `malformed_call_ratio`, malformed among all tool calls."""
    per_domain: dict[str, dict[str, float]] = {}
    for key, episodes in totals.items():
        domain, name = key.rsplit("/", 1)
        if name != "episodes" or episodes <= 0:
            continue
        calls, malformed = totals[f"{domain}/tool_calls"], totals[f"{domain}/malformed_calls"]
        per_domain[domain] = {
            "turns": totals[f"{domain}/turns"] / episodes,
            "tool_calls": calls / episodes,
            "malformed_call_ratio": malformed / max(calls + malformed, 1.0),
            "tool_result_length": totals[f"{domain}/tool_result_tokens"] / episodes,
        }
    return per_domain


def agent_groups(
    prompts: Sequence[Prompt],
    n: int,
    generate: Generate,
    tokenizer: Any,
    environment: Environment,
    config: EpisodeConfig,
) -> list[tuple[list[Completion], list[float], Counter[str]]]:
    """(completions, rewards, episode counts) of `n` episodes per prompt, in prompt order."""
    codec = HFCodec(tokenizer)
    tasks = [task for p in prompts for task in [agent_task(p, tokenizer)] * n]
    episodes = run_episodes(tasks, generate, codec, environment, config)
    groups = []
    for i, prompt in enumerate(prompts):
        mine = episodes[i * n : (i + 1) * n]
        completions = [completion_of(i, e, codec) for e in mine]
        groups.append((completions, [e.reward for e in mine], episode_counts(prompt.domain, mine)))
    return groups
