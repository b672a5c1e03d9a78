"""Benchmark metrics from per-sample rewards: avg@N, pass@N and maj@N (pure functions).

Input is one row per prompt holding the rewards of its k samples (k = the benchmark's `samples`);
every metric is a mean over prompts of a per-prompt value in [0, 1]. A metric name is written
`avg@N`, `pass@N` or `maj@N` with N a number <= k or the letter k itself (the API's
METRIC_PATTERN, `^(avg|pass|maj)@(k|[1-9][0-9]*)$`).

- avg@N: the mean reward. Its expectation over N samples is the same for any N, so all k samples
  are used (the lowest-variance estimate); fractional rewards (code with `scoring: fraction`)
  count as they are.
- pass@N: the probability that at least one of N samples is correct, by the unbiased estimator of
  Chen et al. 2021 (https://arxiv.org/abs/2107.03374, eq. 1) over all k samples:
  1 - C(k - c, N) / C(k, N) with c correct samples. A sample is correct when its reward is full
  marks (>= 1); partial credit is not a pass.
- maj@N: majority vote over the *first* N samples' extracted answers (an unbiased estimator over
  all N-subsets would need every subset's vote). The prompt scores the reward of the most frequent
  answer; a tie scores the mean reward of the tied answers (the expectation of a random tie-break).
  Samples without an answer do not vote; a prompt where none has one scores 0. Answers are compared
  as strings after stripping whitespace, so "1/2" and "0.5" are different votes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

MetricKind = Literal["avg", "pass", "maj"]
METRIC_PATTERN = re.compile(r"^(avg|pass|maj)@(k|[1-9][0-9]*)$")  # = the operator API's
CORRECT_REWARD = 1.0  # full marks: what pass@ and maj@ count as a correct sample
# Verifiers whose Result.details carry the answer they extracted ("extracted"): maj@ needs one.
ANSWER_VERIFIERS = ("math", "multiple_choice")


@dataclass(frozen=True)
class Metric:
    """A parsed metric name; n None means k (the benchmark's samples)."""

    kind: MetricKind
    n: int | None

    def samples(self, k: int) -> int:
        return k if self.n is None else self.n


def parse_metric(name: str) -> Metric:
    """`pass@8` -> Metric("pass", 8); `avg@k` -> Metric("avg", None). ValueError repeats the name."""
    match = METRIC_PATTERN.match(name)
    if match is None:
        raise ValueError(f"unknown metric {name!r}; expected avg@N, pass@N or maj@N (N a number or k)")
    kind, n = match.group(1), match.group(2)
    return Metric(kind, None if n == "k" else int(n))  # type: ignore[arg-type]  # the regex allows only the three


def _check_rows(rewards: Sequence[Sequence[float]]) -> int:
    """k, the samples per prompt; every prompt must have the same number."""
    if not rewards:
        raise ValueError("no prompts")
    k = len(rewards[0])
    if k == 0 or any(len(row) != k for row in rewards):
        counts = sorted({len(row) for row in rewards})
        raise ValueError(f"every prompt needs the same, non-zero number of samples; got {counts}")
    return k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al.'s unbiased pass@k for one prompt: n samples, c of them correct.

    1 - C(n - c, k) / C(n, k), computed as a product (no huge binomials):
    C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def avg_at(rewards: Sequence[Sequence[float]]) -> float:
    """Mean reward over all samples of all prompts (each prompt has the same k, so equal weight)."""
    k = _check_rows(rewards)
    return sum(sum(row) for row in rewards) / (k * len(rewards))


def pass_at(rewards: Sequence[Sequence[float]], n: int) -> float:
    """Mean over prompts of the unbiased pass@n from each prompt's k samples (n <= k)."""
    k = _check_rows(rewards)
    return sum(pass_at_k(k, sum(r >= CORRECT_REWARD for r in row), n) for row in rewards) / len(rewards)


def majority_reward(rewards: Sequence[float], answers: Sequence[str | None]) -> float:
    """One prompt's majority-vote score (see the module docstring for ties and missing answers)."""
    votes: dict[str, list[float]] = {}  # answer -> rewards of the samples that gave it
    for reward, answer in zip(rewards, answers, strict=True):
        if answer is not None and answer.strip():
            votes.setdefault(answer.strip(), []).append(reward)
    if not votes:
        return 0.0
    top = max(len(group) for group in votes.values())
    tied = [group for group in votes.values() if len(group) == top]
    # Samples with one answer share one reward (the verifier saw the same answer); the mean over
    # the group only guards against a verifier whose reward depends on more than the answer.
    return sum(sum(group) / len(group) for group in tied) / len(tied)


def maj_at(rewards: Sequence[Sequence[float]], answers: Sequence[Sequence[str | None]], n: int) -> float:
    """Mean over prompts of the majority-vote score of each prompt's first n samples (n <= k)."""
    k = _check_rows(rewards)
    if len(answers) != len(rewards) or any(len(a) != k for a in answers):
        raise ValueError("maj@: answers must have the shape of rewards (prompts x samples)")
    if not 1 <= n <= k:
        raise ValueError(f"maj@{n} needs 1 <= {n} <= k = {k}")
    return sum(majority_reward(row[:n], ans[:n]) for row, ans in zip(rewards, answers, strict=True)) / len(
        rewards
    )


def compute_metric(
    name: str, rewards: Sequence[Sequence[float]], answers: Sequence[Sequence[str | None]] | None = None
) -> float:
    """The value of metric `name` (e.g. "pass@8", "avg@k") for prompts x samples rewards."""
    metric = parse_metric(name)
    k = _check_rows(rewards)
    n = metric.samples(k)
    if n > k:
        raise ValueError(f"{name} needs at least {n} samples per prompt, got {k}")
    if metric.kind == "avg":
        return avg_at(rewards)
    if metric.kind == "pass":
        return pass_at(rewards, n)
    if answers is None:
        raise ValueError(f"{name} needs each sample's extracted answer")
    return maj_at(rewards, answers, n)


def compute_metrics(
    names: Sequence[str],
    rewards: Sequence[Sequence[float]],
    answers: Sequence[Sequence[str | None]] | None = None,
) -> dict[str, float]:
    """Every metric in `names`, keyed by the name exactly as written."""
    return {name: compute_metric(name, rewards, answers) for name in names}
