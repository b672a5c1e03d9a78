"""Whole-model TIES trimming for `mergelm_ties` (`trim_scope: model`): thresholds before the merge.

MergeLM trims each model's task vector over the whole model at once: it flattens every parameter
into one vector of N entries and keeps the entries whose magnitude is at least the k-th smallest,
k = int(N * (1 - density)) (merging_methods.py, mask_smallest_magnitude_param_values). mergekit merges
one tensor at a time, so the k-th smallest magnitude of each model is found here first, streaming
tensor by tensor, and handed to the method as a per-model `trim_threshold`:

  pass 1: a histogram of the upper 16 bits of |tau| as float32 (for non-negative floats the bit
          pattern orders like the value), 32,768 counters per model: the bucket holding the k-th;
  pass 2: a histogram of the lower 16 bits of the entries in that bucket: the exact k-th value;
  pass 3: the majority sign, sign(#{elected +} - #{elected -}) over the whole model, which MergeLM
          gives to positions whose trimmed values sum to exactly 0.

Each pass reads the base and every expert once (memory-mapped), one tensor at a time; memory is
about (experts + 3) x the largest tensor in float32. The task vectors are computed by the same code
as the merge (`methods.common.dare_task_vector`, same dtype cast, same seeded DARE drops), so the
thresholds are exact for what the merge trims.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch

from m2rl_trainer.merge.analysis import AnalysisError, Checkpoint, comparable_tensors
from m2rl_trainer.merge.methods.common import dare_task_vector, trim_count

LOG = logging.getLogger(__name__)
_HIGH = 1 << 15  # |x| as float32 is < 2^31, so its upper 16 bits are < 2^15
_LOW = 1 << 16


@dataclass(frozen=True)
class TrimExpert:
    """One model to trim: its config name (the DARE seed's key), folder and densities."""

    model: str
    path: str | os.PathLike[str]
    density: float
    dare_density: float = 1.0


@dataclass(frozen=True)
class WholeModelTrim:
    thresholds: dict[str, float]  # model -> the k-th smallest |tau| (0.0: nothing trimmed)
    majority_sign: int  # -1, 0 or 1
    parameters: int  # N, entries per model


def whole_model_trim(
    base: str | os.PathLike[str],
    experts: Sequence[TrimExpert],
    *,
    dtype: str | None,
    dare_rescale: bool = True,
    seed: int = 0,
) -> WholeModelTrim:
    """Each expert's whole-model trim threshold and the majority sign (see the module docstring).

    `dtype` is the merge config's `dtype` (the inputs are cast to it first, as mergekit does);
    None: each tensor's promoted stored dtype.
    """
    with ExitStack() as stack:
        base_ckpt = Checkpoint(base, stack)
        ckpts = [Checkpoint(e.path, stack) for e in experts]
        skipped: list[dict[str, str]] = []
        plan = comparable_tensors(base_ckpt, ckpts, None, [e.model for e in experts], skipped)
        cast = getattr(torch, dtype.removeprefix("torch.")) if dtype else None

        def task_vectors(name: str) -> Any:
            """(expert index, trim input) for every expert on one tensor, computed as the merge does."""
            b = base_ckpt.tensor(name)
            tensors = [c.tensor(name) for c in ckpts]
            work = cast or _promoted([b, *tensors])
            b = b.to(work)
            for i, (expert, tensor) in enumerate(zip(experts, tensors, strict=True)):
                v = dare_task_vector(
                    tensor.to(work),
                    b,
                    tensor=name,
                    model=expert.model,
                    dare_density=expert.dare_density,
                    dare_rescale=dare_rescale,
                    seed=seed,
                )
                if not bool(torch.isfinite(v).all()):
                    raise AnalysisError(f"{name}: non-finite task-vector entries in {expert.model}")
                yield i, v

        total = sum(_numel(shape) for _, shape in plan)
        if total == 0:
            raise AnalysisError("no tensor to trim: the base and the experts share no floating-point tensor")
        ks = [trim_count(total, e.density) for e in experts]
        high = torch.zeros(len(experts), _HIGH, dtype=torch.int64)
        for name, _ in plan:
            for i, v in task_vectors(name):
                high[i] += torch.bincount((_bits(v) >> 16).reshape(-1), minlength=_HIGH)
        buckets, ranks = [], []
        for i, k in enumerate(ks):
            cumulative = high[i].cumsum(0)
            bucket = int(torch.searchsorted(cumulative, max(k, 1)))
            buckets.append(bucket)
            ranks.append(max(k, 1) - (int(cumulative[bucket - 1]) if bucket else 0))
        low = torch.zeros(len(experts), _LOW, dtype=torch.int64)
        for name, _ in plan:
            for i, v in task_vectors(name):
                bits = _bits(v).reshape(-1)
                low[i] += torch.bincount(bits[(bits >> 16) == buckets[i]] & 0xFFFF, minlength=_LOW)
        thresholds = {}
        for i, (expert, k) in enumerate(zip(experts, ks, strict=True)):
            if k == 0:
                thresholds[expert.model] = 0.0
                continue
            lower = int(torch.searchsorted(low[i].cumsum(0), ranks[i]))
            pattern = torch.tensor([(buckets[i] << 16) | lower], dtype=torch.int32)
            thresholds[expert.model] = float(pattern.view(torch.float32)[0])
        positive = negative = 0
        for name, _ in plan:
            trimmed = [v * (v.abs() >= thresholds[experts[i].model]) for i, v in task_vectors(name)]
            sums = torch.stack(trimmed).sum(dim=0)  # as methods.common.elect_and_average sums
            positive += int((sums > 0).sum())
            negative += int((sums < 0).sum())
    majority = (positive > negative) - (positive < negative)
    LOG.info(
        "trim over the whole model (%s parameters per model): thresholds %s, majority sign %+d",
        f"{total:,}",
        {m: f"{t:.4g}" for m, t in thresholds.items()},
        majority,
    )
    return WholeModelTrim(thresholds=thresholds, majority_sign=majority, parameters=total)


def _bits(v: torch.Tensor) -> torch.Tensor:
    """|v| as float32 reinterpreted as int32: monotone in the value for non-negative floats."""
    return v.abs().to(torch.float32).contiguous().view(torch.int32).to(torch.int64)


def _promoted(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def study_config(loaded: Any, seed: int) -> tuple[Any, str]:
    """The mergekit config (and its YAML) to run for a `loaded` config of one of the study's methods.

    Adds the run's `seed` to the shared parameters (unless set), and for `mergelm_ties` with
    `trim_scope: model` each model's `trim_threshold` and the `majority_sign`, computed here. Other
    methods' configs are returned unchanged.
    """
    import yaml
    from mergekit.common import ModelReference
    from mergekit.config import MergeConfiguration
    from mergekit.merge_methods import registry

    from m2rl_trainer.merge.config import MergeConfigError
    from m2rl_trainer.merge.methods import STUDY_METHODS

    if loaded.method not in STUDY_METHODS:
        return loaded.config, loaded.source
    spec = registry.get(loaded.method).spec
    raw = yaml.safe_load(loaded.source)
    params = raw.setdefault("parameters", None) or {}
    raw["parameters"] = params
    if any(p.name == "seed" for p in spec.parameters):
        params.setdefault("seed", seed)
    scope = params.get("trim_scope", "model")
    if loaded.method != "mergelm_ties" or scope != "model":
        return MergeConfiguration.model_validate(raw), yaml.safe_dump(raw, sort_keys=False)
    if not raw.get("models"):
        raise MergeConfigError(f"config {loaded.path}: merge_method mergelm_ties trims over listed models")
    defaults = {p.name: p.default for p in spec.parameters}
    problems = []
    if "majority_sign" in params:
        problems.append("parameters.majority_sign: computed by m2rl-merge with trim_scope model; remove it")
    experts = []
    base = raw.get("base_model")
    for i, entry in enumerate(raw["models"]):
        if entry.get("model") == base:
            continue
        own = entry.get("parameters") or {}
        if "trim_threshold" in own or "trim_threshold" in params:
            problems.append(f"models[{i}].parameters.trim_threshold: computed by m2rl-merge; remove it")
        values = {}
        for name in ("density", "dare_density"):
            value = own.get(name, params.get(name, defaults[name]))
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(
                    f"models[{i}].parameters.{name}: trim_scope model needs one number per model "
                    f"(got {value!r}); use trim_scope: tensor for gradients or filters"
                )
            values[name] = value
        if not problems:
            path = ModelReference.parse(entry["model"]).local_path()
            experts.append(TrimExpert(str(ModelReference.parse(entry["model"])), path, **values))
    if problems:
        raise MergeConfigError(f"config {loaded.path}: " + "; ".join(problems))
    trim = whole_model_trim(
        ModelReference.parse(base).local_path(),
        experts,
        dtype=raw.get("dtype"),
        dare_rescale=bool(params.get("dare_rescale", defaults["dare_rescale"])),
        seed=int(params["seed"]),
    )
    params["majority_sign"] = trim.majority_sign
    for entry in raw["models"]:
        if entry.get("model") != base:
            model = str(ModelReference.parse(entry["model"]))
            entry["parameters"] = {
                **(entry.get("parameters") or {}),
                "trim_threshold": trim.thresholds[model],
            }
    return MergeConfiguration.model_validate(raw), yaml.safe_dump(raw, sort_keys=False)
