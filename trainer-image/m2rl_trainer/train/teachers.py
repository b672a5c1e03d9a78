"""MT-OPD's teachers: each domain's expert scores the student's sampled tokens (grpo/opd.py).

A teacher is either a model the trainer loads (colocated mode, the local runner: a forward pass,
the same shared-prefix, chunked-head forward as the update's, at temperature 1), or vLLM servers
serving it (server mode, pods: prompt log-probs of prompt + response in one request per sample,
`VLLMServerRollout.prompt_logprobs`). Every rank scores its own groups, right after generation, so
a prefetched batch and a checkpoint carry the scores with it. Teachers never change: no weight
sync, loaded once.

A teacher's log-probs are of its own distribution (temperature 1), whatever the student's
sampling temperature: the advantage compares the student with the teacher as it is.

A teacher scores the student's token ids, so both must share one tokenizer (the study's experts
are fine-tunes of the student's base). A teacher with another tokenizer of the same size would
score other tokens than the student sampled without any error; it is refused when the teachers
are loaded (a model folder: same vocabulary; a server: same ids for a probe text, vLLM's `/tokenize`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from m2rl_trainer.config import ConfigError, TeacherConfig
from m2rl_trainer.grpo.opd import align_response_logprobs, route_by_domain
from m2rl_trainer.rollout.base import Completion
from m2rl_trainer.train.batching import micro_batches, shared_prefix_batch, shared_prefix_logprobs

Scored = tuple[str, list[int], list[Completion]]  # (domain, prompt ids, completions)
# Chat markers, digits, JSON and words: two different BPE tokenizers split it differently.
PROBE_TEXT = (
    '<|im_start|>user\nQ: max 3 8 1= A: \\boxed{8}<|im_end|>\n<tool_call>\n{"name": "calendar_delete_event", '
    '"arguments": {"event_id": "00000002"}}\n</tool_call> The final answer is 42, solve it in python.'
)


class Teachers:
    """The teachers of one MT-OPD run (config `algorithm.teachers`)."""

    def __init__(
        self,
        teachers: Sequence[TeacherConfig],
        *,
        tokenizer: Any,
        device: torch.device | str,
        dtype: torch.dtype,
        micro_batch_size: int,
        pad_id: int,
        timeout_s: float = 300.0,
        max_retries: int = 5,
    ) -> None:
        self.routes = {domain: str(i) for i, t in enumerate(teachers) for domain in t.domains}
        self.device, self.micro_batch_size, self.pad_id = torch.device(device), micro_batch_size, pad_id
        self.models: dict[str, Any] = {}
        self.servers: dict[str, Any] = {}
        try:
            for i, t in enumerate(teachers):
                if t.model is not None:
                    self.models[str(i)] = self._load(i, t.model, tokenizer, dtype)
                else:
                    self.servers[str(i)] = self._connect(i, t, tokenizer, timeout_s, max_retries)
        except BaseException:
            self.close()
            raise

    def _load(self, index: int, path: str, tokenizer: Any, dtype: torch.dtype) -> Any:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if AutoTokenizer.from_pretrained(path).get_vocab() != tokenizer.get_vocab():
            raise ConfigError(
                f"algorithm.teachers[{index}].model: the tokenizer of {path} differs from the student's; "
                "a teacher scores the student's token ids, so both need the same one"
            )
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        model.requires_grad_(False)
        return model.to(self.device)

    def _connect(
        self, index: int, t: TeacherConfig, tokenizer: Any, timeout_s: float, max_retries: int
    ) -> Any:
        from m2rl_trainer.rollout.server import VLLMServerRollout

        server = VLLMServerRollout(
            t.server_urls,
            model_name=t.served_model_name or "",
            tokenizer=tokenizer,
            timeout_s=timeout_s,
            max_retries=max_retries,
            policy_logprobs=False,
        )
        expected = list(tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"])
        for url, ids in server.tokenize(PROBE_TEXT).items():
            if ids != expected:
                server.close()
                raise ConfigError(
                    f"algorithm.teachers[{index}].server_urls: {url} ({t.served_model_name}) tokenizes "
                    "differently from the student; a teacher scores the student's token ids, so both "
                    "need the same tokenizer"
                )
        return server

    def score(self, groups: Sequence[Scored]) -> list[list[list[float]]]:
        """Per group, per completion: its teacher's log-probs of the completion's tokens."""
        out: list[list[list[float]]] = [[] for _ in groups]
        routes = route_by_domain([domain for domain, _ids, _c in groups], self.routes)
        for teacher, indices in routes.items():
            mine = [groups[i] for i in indices]
            found = self._local(teacher, mine) if teacher in self.models else self._server(teacher, mine)
            for i, scores in zip(indices, found, strict=True):
                out[i] = scores
        return out

    @torch.no_grad()
    def _local(self, teacher: str, groups: Sequence[Scored]) -> list[list[list[float]]]:
        model = self.models[teacher]
        dicts = []
        for g, (_domain, prompt, completions) in enumerate(groups):
            entries = [
                {
                    "ids": list(c.token_ids),
                    "old_logprobs": [0.0] * len(c.token_ids),
                    "advantage": 0.0,
                    "at": (g, j),
                }
                for j, c in enumerate(completions)
                if c.token_ids
            ]
            if entries:
                dicts.append({"prompt": list(prompt), "completions": entries})
        out: list[list[list[float]]] = [[[] for _ in completions] for _d, _p, completions in groups]
        for chunk in micro_batches(dicts, self.micro_batch_size):
            batch = shared_prefix_batch(chunk, self.pad_id, self.device)
            logprobs, _entropy = shared_prefix_logprobs(model, batch, 1.0)
            for row, entry in enumerate(c for piece in chunk for c in piece["completions"]):
                g, j = entry["at"]
                out[g][j] = logprobs[row, : len(entry["ids"])].float().tolist()
        return out

    def _server(self, teacher: str, groups: Sequence[Scored]) -> list[list[list[float]]]:
        server = self.servers[teacher]
        flat = [(prompt, c) for _d, prompt, completions in groups for c in completions]
        scores = server.prompt_logprobs([list(prompt) + list(c.token_ids) for prompt, c in flat])
        aligned = iter(
            align_response_logprobs(s, len(c.token_ids)) for s, (_p, c) in zip(scores, flat, strict=True)
        )
        return [[next(aligned) for _ in completions] for _d, _p, completions in groups]

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.models.clear()
