"""Multi-turn episodes: the model calls tools, the environment answers, the end state is verified.

The driver is independent of the generation engine: it only needs `generate(contexts, max_new_tokens)`
returning, per context, the sampled token ids, their log-probabilities and why generation stopped
(the trainer adapts its colocated and server engines to it). Episodes advance in lockstep, one turn
at a time, so each turn is one batched generation call; the tool calls of different episodes run in
parallel threads (each episode's calls run in order, in its own session).

An episode (the M2RL study's `trainable_agents.asolve`, with the differences listed below):

  prompt = chat template(messages, tools) + the study's one-call instruction
  repeat up to max_turns (6, the study's max_num_steps and NeMo Gym's max_steps):
      the model generates a turn (up to the tokens left of max_tokens)      loss mask 1
      no tool call in it            -> finished ("answered")
      cut by the token limit        -> finished ("max_tokens")
      each call runs in the session (a malformed one gets an error message instead)
      last turn                     -> finished ("max_turns"), the calls count, no observation
      the results, as Qwen's chat template renders them                      loss mask 0
      (if they do not fit in the tokens left -> finished ("max_tokens"))
  reward = environment.verify(the episode's calls, the task's ground truth)

Tokens are never re-tokenised: the sequence is the prompt's ids, then exactly the ids the model
sampled and the ids of each observation, so the trainer scores the tokens that were generated. The
loss mask is 1 on model tokens and 0 on observation tokens; `logprobs` holds the sampler's value on
model tokens and 0.0 on observation tokens (as slime's agent rollout does).

Differences from the study's agent: a malformed tool call is an observation, not an aborted
episode; a turn cut by the token limit ends the episode without running its calls; the last turn's
results are not appended (no model turn follows them, and their tokens would carry no signal).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from m2rl_trainer.agent.environment import Environment, Verdict
from m2rl_trainer.agent.toolcall import MalformedCall, ToolCall, observation_text, parse_turn, result_text

FinishReason = Literal["answered", "max_turns", "max_tokens"]

# The study's replacement of Qwen's "call one or more functions" line (trainable_agents.TOOL_INSTRUCTION).
QWEN_TOOLS_LINE = "You may call one or more functions to assist with the user query."
STUDY_TOOL_INSTRUCTION = (
    " At each turn, you are allowed to call one or no function to assist "
    "with task execution using <tools></tools> XML tags.\n"
    "YOU MUST EXECUTE TOOLS TO MAKE ANY MODIFICATIONS OR CANCELLATIONS. "
    "Each tool call leads to a message returned by the system.\n"
    "NEVER confirm execution to the user without seeing confirmation "
    "from the tool system.\n"
)


@dataclass(frozen=True)
class Continuation:
    """What the engine sampled for one context: token ids, one log-probability each, and why it stopped
    ("stop": an end-of-turn or EOS token, included in token_ids; "length": max_new_tokens reached)."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]


class Generate(Protocol):
    def __call__(
        self, contexts: Sequence[Sequence[int]], max_new_tokens: Sequence[int]
    ) -> list[Continuation]:
        """One continuation per context (same order); sampling settings are the engine's."""
        ...


class Codec(Protocol):
    """Text <-> token ids without added special tokens (a Hugging Face tokenizer, adapted by `hf_codec`)."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class HFCodec:
    tokenizer: Any

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(token_ids), skip_special_tokens=False))


def render_prompt(
    tokenizer: Any,
    messages: list[dict[str, str]],
    tools: list[dict[str, Any]],
    *,
    study_instruction: bool = True,
) -> list[int]:
    """The first context: the chat template with the tools (Qwen's templates list them in the system
    turn), with the study's one-call-per-turn instruction in place of Qwen's line when present."""
    text = tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    if study_instruction:
        text = text.replace(QWEN_TOOLS_LINE, STUDY_TOOL_INSTRUCTION)
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass(frozen=True)
class EpisodeConfig:
    """max_turns: model turns per episode (the study's 6). max_tokens: model and observation tokens
    after the prompt, all turns together (the study's agent shares its max_new_tokens budget this way).
    end_of_turn_id: the token that closes a model turn (Qwen's <|im_end|>). parallel: episodes whose
    tool calls run at once (threads; each waits on the environment, not the CPU)."""

    end_of_turn_id: int
    max_turns: int = 6
    max_tokens: int = 16384
    parallel: int = 16

    def __post_init__(self) -> None:
        if self.max_turns < 1 or self.max_tokens < 1 or self.parallel < 1:
            raise ValueError("EpisodeConfig: max_turns, max_tokens and parallel must be at least 1")


@dataclass(frozen=True)
class AgentTask:
    prompt_ids: list[int]
    ground_truth: list[ToolCall]


@dataclass
class Episode:
    """One finished episode. token_ids, loss_mask and logprobs have one entry per token after the prompt."""

    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    turns: int = 0
    calls: list[ToolCall] = field(default_factory=list)  # well-formed calls, in order (what is verified)
    malformed_calls: int = 0
    transcript: list[dict[str, str]] = field(default_factory=list)  # assistant and tool messages
    finish: FinishReason | None = None
    verdict: Verdict | None = None

    @property
    def reward(self) -> float:
        if self.verdict is None:
            raise RuntimeError("the episode was not verified")
        return self.verdict.reward

    def _append(self, ids: Sequence[int], mask: int, logprobs: Sequence[float] | None = None) -> None:
        self.token_ids += ids
        self.loss_mask += [mask] * len(ids)
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)


def _run_calls(
    environment: Environment, session: str, calls: Sequence[ToolCall | MalformedCall], episode: Episode
) -> list[str]:
    results = []
    for call in calls:
        if isinstance(call, MalformedCall):
            episode.malformed_calls += 1
            results.append(call.error)
            continue
        episode.calls.append(call)
        results.append(result_text(environment.call(session, call.name, call.arguments)))
    return results


def run_episodes(
    tasks: Sequence[AgentTask],
    generate: Generate,
    codec: Codec,
    environment: Environment,
    config: EpisodeConfig,
) -> list[Episode]:
    """Run one episode per task (each in its own session) and verify it; same order as `tasks`."""
    episodes = [Episode(prompt_ids=list(t.prompt_ids)) for t in tasks]
    sessions: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=config.parallel) as pool:
        try:
            sessions = list(pool.map(lambda _t: environment.seed_session(), tasks))
            active = list(range(len(tasks)))
            for turn in range(1, config.max_turns + 1):
                if not active:
                    break
                contexts = [episodes[i].prompt_ids + episodes[i].token_ids for i in active]
                budgets = [config.max_tokens - len(episodes[i].token_ids) for i in active]
                continuations = generate(contexts, budgets)
                if len(continuations) != len(active):
                    raise RuntimeError(
                        f"generate returned {len(continuations)} continuations for {len(active)} contexts"
                    )
                calling: list[tuple[int, list[ToolCall | MalformedCall], bool]] = []
                for i, continuation in zip(active, continuations, strict=True):
                    episode = episodes[i]
                    ids = continuation.token_ids
                    if len(ids) != len(continuation.logprobs):
                        raise RuntimeError(
                            "generate returned a continuation with one log-probability per token missing"
                        )
                    episode.turns = turn
                    episode._append(ids, 1, continuation.logprobs)
                    closed = bool(ids) and ids[-1] == config.end_of_turn_id
                    parsed = parse_turn(codec.decode(ids[:-1] if closed else ids))
                    episode.transcript.append({"role": "assistant", "content": codec.decode(ids)})
                    if continuation.finish_reason == "length" and not closed:
                        episode.finish = "max_tokens"
                    elif not parsed.has_calls:
                        episode.finish = "answered"
                    else:
                        calling.append((i, parsed.calls, closed))
                results = list(
                    pool.map(
                        lambda item: _run_calls(environment, sessions[item[0]], item[1], episodes[item[0]]),
                        calling,
                    )
                )
                active = []
                for (i, _calls, closed), texts in zip(calling, results, strict=True):
                    episode = episodes[i]
                    episode.transcript += [{"role": "tool", "content": t} for t in texts]
                    if turn == config.max_turns:
                        episode.finish = "max_turns"
                        continue
                    observation = codec.encode(observation_text(texts, after_end_of_turn=closed))
                    if len(observation) >= config.max_tokens - len(episode.token_ids):
                        episode.finish = "max_tokens"
                        continue
                    episode._append(observation, 0)
                    active.append(i)
            verdicts = list(
                pool.map(
                    lambda pair: environment.verify(pair[0].calls, pair[1].ground_truth),
                    zip(episodes, tasks, strict=True),
                )
            )
        finally:
            for session in sessions:
                environment.end_session(session)
    for episode, verdict in zip(episodes, verdicts, strict=True):
        episode.verdict = verdict
    return episodes


def scripted_generate(codec: Codec, end_of_turn_id: int, script: Callable[[str], str]) -> Generate:
    """A `Generate` that answers each context with `script(decoded context)` and the end-of-turn token
    (log-probability 0 each): deterministic policies for tests and demonstrations."""

    def generate(contexts: Sequence[Sequence[int]], max_new_tokens: Sequence[int]) -> list[Continuation]:
        out = []
        for context, limit in zip(contexts, max_new_tokens, strict=True):
            ids = [*codec.encode(script(codec.decode(context))), end_of_turn_id]
            if len(ids) > limit:
                out.append(Continuation(ids[:limit], [0.0] * limit, "length"))
            else:
                out.append(Continuation(ids, [0.0] * len(ids), "stop"))
        return out

    return generate
