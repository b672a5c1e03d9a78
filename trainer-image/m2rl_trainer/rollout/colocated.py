"""Rollout inside the trainer process with Hugging Face `generate` (single-machine runs, benchmarks).

On 2 CPU cores a tiny model generates about twice as fast this way as through the vLLM CPU server
(no HTTP, no scheduler), and weights are updated by copying tensors instead of writing files.

How it matches the server engine (see `rollout.base` for the logprob convention):
- logprobs are log softmax(logits / T) of the *raw* logits, recorded by a logits processor that
  runs before the temperature and top-p warpers; only one step's [rows, vocab] tensor is kept,
  not the whole [rows, steps, vocab] history `output_logits` would hold.
- `generate` runs with a fresh GenerationConfig holding only EOS/pad ids, so a checkpoint's
  sampling defaults (top_k, min_p, repetition penalty) never apply; transformers' own global
  default top_k=50 is switched off explicitly.
- prompts are tokenised with special tokens, as vLLM's completions endpoint does; token ids keep
  the EOS token; stop strings end a completion as in vLLM (text cut before the stop string, the
  token that completed it kept); a trailing incomplete UTF-8 character is dropped from the text.
- prompts are left-padded into batches; the returned ids have no padding.

Under ZeRO-3 with several ranks (`synced_gpus=True`) every forward gathers the partitioned weights
collectively, so the ranks must run the same forwards: transformers' `synced_gpus` keeps a rank that
finished stepping until all have (`GenerationMixin._has_unfinished_sequences`), and this class runs
the same number of `generate` calls on every rank, a rank with fewer prompts (or none) running
one-token dummy calls. transformers switches `synced_gpus` on by itself only under an
`HfDeepSpeedConfig`, which the trainer does not create.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any, cast

import torch
from transformers import GenerationConfig, LogitsProcessor, StoppingCriteria

from m2rl_trainer.rollout.base import Completion, FinishReason, Prompt, SamplingParams


class _LogprobRecorder(LogitsProcessor):
    """Records log softmax(raw logits / T)[sampled token] for every step.

    A processor sees the logits before the token is sampled, so each call stores this step's
    log-softmax and reads the previous step's sampled token (now the last input id).
    """

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.previous: torch.Tensor | None = None  # [rows, vocab] of the last step
        self.steps: list[torch.Tensor] = []  # per step: [rows]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(1, input_ids[:, -1:]).squeeze(1))
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[rows, new tokens] logprobs, once `generate` has returned `sequences`."""
        assert self.previous is not None
        self.steps.append(self.previous.gather(1, sequences[:, -1:]).squeeze(1))
        return torch.stack(self.steps, dim=1)


class _StopStrings(StoppingCriteria):
    """Stops a row once its generated text contains a stop string; remembers after how many tokens."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length
        # A stop string spans at most len(stop) tokens (+ slack for byte-level pieces); decoding
        # only that tail keeps the check O(1) per step instead of O(length).
        self.window = max(len(s) for s in stops) + 4
        self.stopped_at: dict[int, int] = {}

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        length = input_ids.shape[1]
        generated = length - self.prompt_length
        start = max(self.prompt_length, length - self.window)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        tails = input_ids[:, start:].tolist()
        for row, tail in enumerate(tails):
            if row in self.stopped_at:
                done[row] = True
                continue
            text = self.tokenizer.decode(tail, skip_special_tokens=True)
            if any(stop in text for stop in self.stops):
                self.stopped_at[row] = generated
                done[row] = True
        return cast(torch.BoolTensor, done)


def _cut_at_stop(text: str, stops: list[str]) -> str:
    """Text before the stop string that completes first (vLLM's rule; ties: list order)."""
    best: tuple[int, int] | None = None  # (end, start)
    for stop in stops:
        start = text.find(stop)
        if start >= 0 and (best is None or start + len(stop) < best[0]):
            best = (start + len(stop), start)
    return text if best is None else text[: best[1]]


class HFGenerateRollout:
    """`RolloutEngine` running `model.generate` in this process.

    model: a causal LM (the trainer's policy itself, or a copy kept current with update_weights).
    max_batch_sequences: rows (prompts x n) per `generate` call; bounds activation and KV memory.
    share_prefill: compute each prompt once for its n samples (`_shared_prefill`); False: plain
    `generate` with `num_return_sequences` (the same tokens and log-probabilities, tested). Off
    under `synced_gpus`.
    synced_gpus: the model is partitioned over ranks (ZeRO-3): every rank must call `generate`
        together, even with no prompts (collective; see the module docstring).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: str | torch.device = "cpu",
        max_batch_sequences: int = 256,
        share_prefill: bool = True,
        synced_gpus: bool = False,
    ) -> None:
        self.model = model
        self.share_prefill = share_prefill
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.max_batch_sequences = max_batch_sequences
        self.synced_gpus = synced_gpus
        eos = {tokenizer.eos_token_id}
        configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos |= set(configured) if isinstance(configured, list) else {configured}
        self.eos_ids = sorted(i for i in eos if i is not None)
        if not self.eos_ids:
            raise ValueError("HFGenerateRollout: the tokenizer and model define no EOS token")
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """One group of `params.n` completions per prompt, in order; seeded runs are reproducible.
        A prompt given as token ids is used as is."""
        params.check()
        encoded = [list(p) if not isinstance(p, str) else self.tokenizer(p)["input_ids"] for p in prompts]
        per_call = max(1, self.max_batch_sequences // params.n)
        groups: list[list[Completion]] = []
        # Seeding inside fork_rng leaves the trainer's own RNG stream untouched.
        devices = [self.device] if self.device.type == "cuda" else []
        rng = torch.random.fork_rng(devices=devices) if params.seed is not None else nullcontext()
        was_training = self.model.training
        saved_config = self.model.generation_config
        self.model.eval()
        stops = self._stop_ids(params)
        self.model.generation_config = GenerationConfig(eos_token_id=stops, pad_token_id=self.pad_id)
        try:
            with rng:
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                starts = range(0, len(prompts), per_call)
                most = self._calls_of_any_rank(len(starts))  # before any forward: all ranks agree first
                for start in starts:
                    groups += self._generate_batch(encoded[start : start + per_call], start, params)
                for _ in range(most - len(starts)):
                    self._dummy_batch()
        finally:
            self.model.generation_config = saved_config
            self.model.train(was_training)
        return groups

    def _stop_ids(self, params: SamplingParams) -> list[int]:
        """The model's EOS ids and the call's stop tokens: generation ends at the first of any."""
        return sorted({*self.eos_ids, *params.stop_token_ids})

    def _calls_of_any_rank(self, calls: int) -> int:
        """The most `generate` calls any rank makes in this round (synced mode), else `calls`."""
        if not self.synced_gpus:
            return calls
        import torch.distributed as dist

        most = torch.tensor([calls], dtype=torch.int64)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)  # a CPU tensor: gloo (see engine.process_group_backend)
        return int(most.item())

    def _dummy_batch(self) -> None:
        """A one-token generation whose forwards keep this rank in step with the others."""
        self.model.generate(
            input_ids=torch.tensor([[self.pad_id]], device=self.device),
            attention_mask=torch.ones((1, 1), dtype=torch.long, device=self.device),
            generation_config=GenerationConfig(
                do_sample=False, max_new_tokens=1, eos_token_id=self.eos_ids, pad_token_id=self.pad_id
            ),
            synced_gpus=True,
        )

    def _generate_batch(
        self, prompt_ids: list[list[int]], first_index: int, params: SamplingParams
    ) -> list[list[Completion]]:
        length = max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((len(prompt_ids), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompt_ids), length), dtype=torch.long)
        for row, ids in enumerate(prompt_ids):  # left padding: every prompt ends at column `length`
            input_ids[row, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, length - len(ids) :] = 1
        greedy = params.temperature == 0
        recorder = _LogprobRecorder(1.0 if greedy else params.temperature)
        stopper = _StopStrings(self.tokenizer, params.stop, length) if params.stop else None
        sampling = {} if greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        # Under synced_gpus the ranks must run identical forwards: the extra prefill forward of a rank
        # with prompts would wait for a rank without any, so it is plain `generate` there.
        shared = self.share_prefill and not self.synced_gpus
        cache = self._shared_prefill(input_ids, attention, params.n) if shared else None
        config = GenerationConfig(
            do_sample=not greedy,
            **sampling,
            max_new_tokens=params.max_tokens,
            # with the prefill shared, the rows come expanded already (same prompt-major order)
            num_return_sequences=1 if cache is not None else params.n,
            eos_token_id=self._stop_ids(params),
            pad_token_id=self.pad_id,
        )
        if cache is not None:
            input_ids = input_ids.repeat_interleave(params.n, 0)
            attention = attention.repeat_interleave(params.n, 0)
        sequences = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            past_key_values=cache,
            generation_config=config,
            logits_processor=[recorder],
            stopping_criteria=[stopper] if stopper else None,
            synced_gpus=self.synced_gpus,
        )
        logprobs = recorder.finish(sequences).tolist()  # [rows, steps]
        generated = sequences[:, length:].tolist()
        eos = set(self._stop_ids(params))
        groups: list[list[Completion]] = [[] for _ in prompt_ids]
        for row, tokens in enumerate(generated):  # rows are prompt-major: prompt i, samples 0..n-1
            end, finish = len(tokens), cast(FinishReason, "length")
            first_eos = next((k for k, token in enumerate(tokens) if token in eos), None)
            if first_eos is not None:
                end, finish = first_eos + 1, "stop"  # EOS is checked first, as vLLM does
            if stopper is not None and stopper.stopped_at.get(row, end + 1) <= end:
                end, finish = stopper.stopped_at[row], "stop"
            # vLLM's incremental detokeniser drops a trailing incomplete UTF-8 sequence; so do we.
            text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True).rstrip("\ufffd")
            if params.stop and finish == "stop":
                text = _cut_at_stop(text, params.stop)
            prompt = row // params.n
            groups[prompt].append(
                Completion(
                    prompt_index=first_index + prompt,
                    prompt_token_ids=prompt_ids[prompt],
                    token_ids=tokens[:end],
                    logprobs=logprobs[row][:end],
                    text=text,
                    finish_reason=finish,
                )
            )
        return groups

    @torch.no_grad()
    def _shared_prefill(self, input_ids: torch.Tensor, attention: torch.Tensor, n: int) -> Any:
        """Each prompt's keys/values computed once and copied to its n samples: `generate` with
        `num_return_sequences` expands the prompts first and so prefills every prompt n times,
        which is most of a step's generation when prompts are long and responses short (measured:
        ~90% at 128-token prompts, docs/performance.md). All prompt tokens but the last go in the
        cache; `generate` then feeds the rest. Positions follow `generate`'s own rule (count of
        real tokens, from the attention mask). None when there is nothing to share."""
        if n == 1 or input_ids.shape[1] < 2:
            return None
        positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 1)
        out = self.model(
            input_ids=input_ids[:, :-1],
            attention_mask=attention[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        cache.batch_repeat_interleave(n)
        return cache

    @torch.no_grad()
    def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy new weights into the model in place (dtype/device converted by `copy_`).

        Keys the model does not have are errors; a missing key is allowed only for a tied weight
        whose tensor is shared with a key that was given (lm_head = embeddings).
        """
        result = self.model.load_state_dict(dict(state_dict), strict=False)
        if result.unexpected_keys:
            raise KeyError(f"update_weights: unknown parameter names {result.unexpected_keys[:5]}")
        parameters = dict(self.model.named_parameters(remove_duplicate=False))
        given = {parameters[name].data_ptr() for name in state_dict if name in parameters}
        untied = [
            name
            for name in result.missing_keys
            if name not in parameters or parameters[name].data_ptr() not in given
        ]
        if untied:
            raise KeyError(f"update_weights: no values for {untied[:5]}")

    def close(self) -> None:
        """Drop references to the model and tokenizer (the caller may still hold them)."""
        self.model = None
        self.tokenizer = None
