"""The rollout interface: prompts in, groups of sampled completions with log-probabilities out.

Two engines implement it: `server.VLLMServerRollout` (vLLM OpenAI servers, the cluster default)
and `colocated.HFGenerateRollout` (Hugging Face `generate` inside the trainer process).

Which log-probabilities (the same for both engines)
---------------------------------------------------
`Completion.logprobs[t]` is log softmax(logits_t / T)[token_t]: the policy at the sampling
temperature T, *before* top-p truncation, i.e. exactly what the trainer computes for its
importance ratio pi_theta / pi_old from its own forward pass (logits / T). Greedy decoding
(temperature 0) reports T = 1. With top_p < 1 the tokens are drawn from the truncated,
renormalised distribution, but the logprobs are still those of the untruncated one (the usual
convention of verl and TRL, whose training-side logprobs ignore top-p too).

vLLM reports one of two kinds, chosen per server by `--logprobs-mode`: "raw_logprobs" (the
default: log softmax(logits), before temperature and top-p) or "processed_logprobs" (after
temperature *and* top-p). So a vLLM server matches this convention when T == 1 (raw mode, any
top_p) or when top_p == 1 (processed mode, any T); the server client checks the replica's mode
and refuses other combinations instead of returning logprobs of the wrong distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


class RolloutError(RuntimeError):
    """Generation failed (server unreachable after retries, bad response); the message says where."""


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one group per prompt.

    n: completions per prompt (the GRPO group size).
    max_tokens: cap on new tokens per completion; the prompt does not count.
    temperature: 0 means greedy (n must be 1, as vLLM requires); logprobs are then those of T = 1.
    top_p: nucleus sampling mass (1.0: off). top-k, min-p and penalties are always off: the
        engines send neutral values explicitly so a checkpoint's generation_config cannot change
        the sampling distribution behind the trainer's back.
    stop: strings that end a completion; the text is cut before the stop string (vLLM's default),
        the token ids keep the token that completed it.
    stop_token_ids: tokens that end a completion besides the model's EOS, kept in its token ids
        (vLLM's `stop_token_ids`): e.g. Qwen's <|im_end|>, which ends an agent's turn.
    seed: None: unseeded. Otherwise the same prompts and params give the same completions on the
        same engine (vLLM: per-prompt seeds derived from (seed, prompt index)). A trainer passes a
        new seed each step (e.g. derived from the run seed and the step): a fixed one would give a
        prompt drawn again at the same batch position the same samples.
    """

    n: int = 1
    max_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Invalid values, as messages (empty: valid)."""
        problems = []
        if self.n < 1:
            problems.append(f"n must be at least 1, got {self.n}")
        if self.max_tokens < 1:
            problems.append(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.n > 1:
            problems.append(f"greedy decoding (temperature 0) gives one completion, got n={self.n}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            problems.append("stop strings must be non-empty")
        return problems

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("SamplingParams: " + "; ".join(problems))


@dataclass
class Completion:
    """One sampled completion.

    prompt_index: index of its prompt in the `generate` call.
    prompt_token_ids: the prompt as the engine tokenised it (shared by the group's completions):
        the trainer builds sequences from these ids, never by re-tokenising text.
    token_ids: generated tokens, no padding; includes the EOS token when generation stopped on
        it (the policy must learn to stop), and the token that completed a stop string.
    logprobs: one per token id; see the module docstring for which distribution.
    text: the decoded completion without special tokens, cut before a stop string.
    finish_reason: "stop" (EOS or a stop string) or "length" (max_tokens reached).
    loss_mask: None for a single-turn completion (every token is the model's). A multi-turn
        episode (m2rl_trainer.agent) is one completion whose token_ids interleave the model's turns
        (mask 1) and the tool results between them (mask 0, log-prob 0): one entry per token id.
    """

    prompt_index: int
    prompt_token_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason
    loss_mask: list[int] | None = None


Prompt = str | list[int]  # text (tokenised by the engine) or token ids (used as they are)


@runtime_checkable
class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """One group of `params.n` completions per prompt, in prompt order. A prompt is text, or
        token ids (multi-turn contexts, which are never re-tokenised)."""
        ...

    def close(self) -> None:
        """Release connections, threads or memory; the engine is unusable afterwards."""
        ...
