"""Information constraints: how far apart the models' policies are on each domain's trajectories.

For models A and B and a domain d, trajectories y ~ pi_A(. | x) are sampled for the domain's prompts x
at temperature 1 with top-p 1 (the policy itself, not a truncated one), and scored by teacher forcing
under both models. The Monte Carlo estimate of the sequence-level KL divergence is

    KL_d(A || B) = E_{x ~ d, y ~ pi_A} [log pi_A(y | x) - log pi_B(y | x)]     (nats per trajectory)

which is 0 for B = A. The policy-neighbourhood test of the M2RL study puts B in A's neighbourhood on d
when KL_d(A || B) < epsilon. Reported beside each estimate: its standard error over trajectories and
the same sum divided by the number of response tokens (nats per token).

`kl_matrix` is pure (log-probabilities in, numbers out); `SequenceScorer` computes log pi(y | x) with a
Hugging Face model, in chunks of positions so a 32k-token response never holds 32k x vocabulary logits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Trajectory:
    """One sampled response: its tokens, and log pi_M(y | x) summed over them for each scoring model M."""

    domain: str
    sampler: str
    prompt_id: str
    sample: int
    prompt_ids: list[int]
    response_ids: list[int]
    logprob: dict[str, float]


def kl_matrix(trajectories: Sequence[Trajectory], models: Sequence[str], epsilon: float) -> dict[str, Any]:
    """Per domain: KL(A || B) for every ordered pair, its standard error, per token, and neighbours."""
    domains: dict[str, Any] = {}
    for domain in dict.fromkeys(t.domain for t in trajectories):
        kl, stderr, per_token, neighbours = {}, {}, {}, {}
        for a in models:
            own = [t for t in trajectories if t.domain == domain and t.sampler == a]
            tokens = sum(len(t.response_ids) for t in own)
            kl[a], stderr[a], per_token[a] = {}, {}, {}
            for b in models:
                diffs = [t.logprob[a] - t.logprob[b] for t in own]
                mean = sum(diffs) / len(diffs)
                var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) if len(diffs) > 1 else 0.0
                kl[a][b] = mean
                stderr[a][b] = math.sqrt(var / len(diffs))
                per_token[a][b] = sum(diffs) / tokens if tokens else 0.0
            neighbours[a] = [b for b in models if b != a and kl[a][b] < epsilon]
        domains[domain] = {
            "trajectories": {
                a: sum(1 for t in trajectories if t.domain == domain and t.sampler == a) for a in models
            },
            "kl": kl,
            "klStderr": stderr,
            "klPerToken": per_token,
            "neighbours": neighbours,
        }
    mean_kl = {a: {b: _mean([d["kl"][a][b] for d in domains.values()]) for b in models} for a in models}
    return {
        "models": list(models),
        "epsilon": epsilon,
        "domains": domains,
        "meanKl": mean_kl,
        "meanNeighbours": {a: [b for b in models if b != a and mean_kl[a][b] < epsilon] for a in models},
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


class SequenceScorer:
    """log pi(y | x) = sum_t log softmax(lm_head(h_t))[y_t] under one Hugging Face causal LM.

    The decoder runs once over prompt + response; the output head and the log-softmax run over
    `chunk` positions at a time. At load, the chunked computation is checked against the model's own
    logits on a short input: a model whose logits are not lm_head(decoder output) (soft-capping,
    scaling) is refused rather than scored wrongly.
    """

    def __init__(self, path: str, *, device: str | None = None, chunk: int = 1024) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype: Any = "auto" if self.device == "cuda" else torch.float32  # CPU: bf16 matmuls are slow
        self.model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        self.decoder = self.model.get_decoder()
        self.head = self.model.get_output_embeddings()
        self.chunk = chunk
        self.path = path
        self._check()

    def _check(self) -> None:
        import torch

        probe = torch.arange(1, 9, device=self.device).unsqueeze(0) % self.head.weight.shape[0]
        with torch.no_grad():
            full = self.model(input_ids=probe).logits[0].float()
            ours = self.head(self.decoder(input_ids=probe).last_hidden_state[0]).float()
        if not torch.allclose(full, ours, rtol=1e-3, atol=1e-3 * float(full.abs().max())):
            raise ValueError(
                f"{self.path}: the model's logits are not lm_head(decoder output); the information "
                "analysis cannot score it"
            )

    def logprob(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
        """sum over the response tokens of log pi(y_t | x, y_<t), in float64."""
        import torch

        if not response_ids:
            return 0.0
        ids = torch.tensor([[*prompt_ids, *response_ids]], device=self.device)
        start = len(prompt_ids) - 1  # the position whose output predicts the first response token
        targets = ids[0, start + 1 :]
        total = 0.0
        with torch.no_grad():
            hidden = self.decoder(input_ids=ids).last_hidden_state[0]
            for s in range(0, targets.numel(), self.chunk):
                logits = self.head(hidden[start + s : start + s + self.chunk]).float()
                picked = torch.log_softmax(logits, dim=-1).gather(1, targets[s : s + self.chunk, None])
                total += float(picked.double().sum())
        return total

    def close(self) -> None:
        import torch

        del self.model, self.decoder, self.head
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def same_tokenizer(tokenizers: Mapping[str, Any]) -> list[str]:
    """Models whose vocabulary differs from the first one's (the KL needs one token space)."""
    items = list(tokenizers.items())
    if not items:
        return []
    first = items[0][1].get_vocab()
    return [name for name, tok in items[1:] if tok.get_vocab() != first]
