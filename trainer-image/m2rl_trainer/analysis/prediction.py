"""Prediction behaviour: which prompts each model gained over the SFT model, and whether the mixed and
merged models gain where the experts do (the M2RL study's union-gain consistency).

Per prompt x of a benchmark, a_m(x) is model m's accuracy (its mean reward over the evaluation's k
samples). The gain over the SFT model is g_m(x) = max(a_m(x) - a_sft(x), 0); the experts' union gain is
u(x) = max over experts e of g_e(x) (for 0/1 accuracies, the prompts some expert newly solves). The
consistency of model m with the experts is cos(g_m, u) over the prompts of a domain (and of all
domains); 0 when either vector is zero. Pure functions over the evaluation's per-sample records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def accuracies(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """prompt id -> mean reward over its samples, from samples.jsonl records (prompt_id, reward)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for r in records:
        key = str(r["prompt_id"])
        sums[key] = sums.get(key, 0.0) + float(r["reward"])
        counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


def gains(model: Mapping[str, float], sft: Mapping[str, float], prompts: Sequence[str]) -> list[float]:
    """g(x) = max(a_model(x) - a_sft(x), 0) for each prompt id, in `prompts` order."""
    return [max(model[p] - sft[p], 0.0) for p in prompts]


def union(vectors: Sequence[Sequence[float]]) -> list[float]:
    """Elementwise maximum: the experts' union gain."""
    return [max(values) for values in zip(*vectors, strict=True)] if vectors else []


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """cos(a, b); 0 when either vector is zero (undefined)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return 0.0 if na == 0 or nb == 0 else max(-1.0, min(1.0, dot / (na * nb)))


def prediction_behaviour(
    accuracy: Mapping[str, Mapping[str, Mapping[str, float]]],
    *,
    sft: str,
    experts: Sequence[str],
    domains: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    """The gains and cosines per domain and overall.

    accuracy: model -> benchmark -> prompt id -> accuracy (every model over the same prompts);
    domains: domain -> its benchmarks. Every model but the SFT one gets a cosine with the union gain.
    """
    models = [m for m in accuracy if m != sft]
    result: dict[str, Any] = {"sft": sft, "experts": list(experts), "domains": {}}
    overall: dict[str, list[float]] = {m: [] for m in models}
    overall_union: list[float] = []
    for domain, benchmarks in domains.items():
        per_model: dict[str, list[float]] = {m: [] for m in models}
        for benchmark in benchmarks:
            prompts = sorted(accuracy[sft][benchmark], key=_natural)
            for m in models:
                per_model[m] += gains(accuracy[m][benchmark], accuracy[sft][benchmark], prompts)
        u = union([per_model[e] for e in experts])
        result["domains"][domain] = _summary(per_model, u)
        for m in models:
            overall[m] += per_model[m]
        overall_union += u
    result["overall"] = _summary(overall, overall_union)
    return result


def _summary(per_model: Mapping[str, Sequence[float]], u: Sequence[float]) -> dict[str, Any]:
    n = len(u)
    return {
        "prompts": n,
        "unionGain": sum(u) / n if n else 0.0,
        "unionGainPrompts": sum(1 for x in u if x > 0),
        "meanGain": {m: (sum(g) / n if n else 0.0) for m, g in per_model.items()},
        "gainCosine": {m: cosine(g, u) for m, g in per_model.items()},
    }


def _natural(prompt_id: str) -> tuple[int, int | str]:
    """Row numbers sort as numbers, other ids as text (the same order for every model)."""
    return (0, int(prompt_id)) if prompt_id.isdigit() else (1, prompt_id)
