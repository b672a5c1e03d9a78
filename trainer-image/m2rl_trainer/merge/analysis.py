"""Weight-space analysis of task vectors as the M2RL study defines it, streamed tensor by tensor.

For each model i (the experts, then the merged model when given) against the base (the SFT model):
tau_i = w_i - w_base, over every floating-point tensor the base and all models share with one shape.
The definitions (arXiv:2602.12566, "To Mix or To Merge", the weight-space geometry analysis; the
study's repository publishes no analysis code, so these follow the paper's formulas):

  change mask M_i[p]     |tau_i[p]| > eta * max(|w_i[p]|, |w_base[p]|), eta = 1e-3 by default
                         (eta = 0 gives "any change", tau != 0)
  updateFraction[i]      p_i = |M_i| / N; updateSparsity[i] = 1 - p_i
  jaccard(i, j)          |M_i and M_j| / |M_i or M_j| (0 when both masks are empty)
  jaccardRandom(i, j)    p_i p_j / (p_i + p_j - p_i p_j): the expected Jaccard of independent random
                         masks with the same update fractions (the study's random-overlap reference)
  cosine(i, j)           <tau_i, tau_j> / (||tau_i|| ||tau_j||), exact; 0 when either norm is 0
  projectedCosine(i, j)  the cosine of P tau_i and P tau_j, P a seeded random projection to 256
                         dimensions with orthonormal rows (merge.projection: its construction and error)
  signConflictFraction   #{p : some expert changed p upwards and another downwards (in their masks)} / N
  overlapFraction        #{p : at least two experts' masks hold p} / N
  taskVectorNorms[i]     ||tau_i||_2
Each number is given for the whole model (`summary`), per module type (`moduleTypes`: the layer index
removed, e.g. `self_attn.q_proj.weight` over all layers), per layer (`layers`) and per tensor. The
merged model's own task vector (merged - base) gets its norm, mask and cosines with each expert.
A merge without a base of its own (linear, karcher) is analysed against the base given separately.

Memory: every model is read through safetensors' lazy slices (mmap), a block of at most
`block_elements` entries per model at a time, so the peak is about (models + 4) x 8 bytes x
block_elements (float64 blocks: 8 MiB each at the default 2^20), whatever the model's size.
Differences and sums are taken in float64: exact for bf16/fp16/fp32 checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from m2rl_trainer.merge.projection import rows_and_signs, tensor_key

LOG = logging.getLogger(__name__)
REPORT_VERSION = 2
_LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


class AnalysisError(RuntimeError):
    """The analysis cannot give meaningful numbers (non-finite weights, unreadable checkpoint)."""


@dataclass(frozen=True)
class AnalysisOptions:
    """How the analysis reads the checkpoints and which thresholds it uses."""

    eta: float = 1e-3
    """Relative change threshold of the change masks: |tau| > eta * max(|w|, |w_base|). The study's
    1e-3; 0 counts every change."""
    projection_dims: int = 256
    """Dimensions of the random projection of the projected cosine (the study's 256)."""
    projection_seed: int = 0
    """Seed of the random projection: the same seed gives the same projection for every run."""
    block_elements: int = 1 << 20
    """Entries read per model and block (whole rows; at least one row). 2^20 keeps the peak near
    (models + 4) x 8 MiB; larger blocks only save per-slice overhead."""
    progress_every: float = 0.1
    """Log progress each time this fraction of the base's parameters has been analysed."""

    def problems(self) -> list[str]:
        problems = []
        if not (self.eta >= 0 and math.isfinite(self.eta)):
            problems.append(f"eta must be a finite number >= 0, got {self.eta}")
        if self.projection_dims < 1:
            problems.append(f"projection_dims must be at least 1, got {self.projection_dims}")
        if self.block_elements < 1:
            problems.append(f"block_elements must be at least 1, got {self.block_elements}")
        return problems


class Checkpoint:
    """The tensors of one model folder, readable a block of leading-dimension rows at a time.

    Safetensors shards are opened lazily with `safe_open` (memory-mapped, one handle per shard);
    PyTorch .bin shards are loaded with `torch.load(mmap=True)`, which maps them instead of reading.
    (mergekit's lazy unpickler fails on 0-d tensors, hence not that.)
    """

    def __init__(self, path: str | os.PathLike[str], stack: ExitStack) -> None:
        from mergekit.io import ShardedTensorIndex

        self.path = str(path)
        try:
            self._index = ShardedTensorIndex.from_disk(self.path)
        except (RuntimeError, OSError) as error:
            raise AnalysisError(f"{self.path}: {error}") from None
        self._stack = stack
        self._handles: dict[str, Any] = {}  # shard file -> safe_open handle, or a .bin's mapped dict

    def names(self) -> list[str]:
        return list(self._index.tensor_paths)

    def __contains__(self, name: str) -> bool:
        return name in self._index.tensor_paths

    def _handle(self, name: str) -> Any:
        from safetensors import safe_open

        shard = self._index.tensor_paths[name]
        if shard not in self._handles:
            file = os.path.join(self._index.base_path, shard)
            if self._index.is_safetensors:
                self._handles[shard] = self._stack.enter_context(safe_open(file, framework="pt"))
            else:
                state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
                self._handles[shard] = state.get("state_dict", state)
        return self._handles[shard]

    def _tensor(self, name: str) -> torch.Tensor:
        return self._handle(name)[name]

    def tensor(self, name: str) -> torch.Tensor:
        """The whole tensor in its stored dtype (memory-mapped where the format allows)."""
        if self._index.is_safetensors:
            return self._handle(name).get_tensor(name)
        return self._tensor(name)

    def info(self, name: str) -> tuple[tuple[int, ...], bool]:
        """(shape, is floating point) of a tensor, without reading it."""
        if self._index.is_safetensors:
            piece = self._handle(name).get_slice(name)
            return tuple(piece.get_shape()), piece.get_dtype() in _FLOAT_DTYPES
        tensor = self._tensor(name)
        return tuple(tensor.shape), tensor.is_floating_point()

    def rows(self, name: str, start: int, stop: int, ndim: int) -> torch.Tensor:
        """Rows [start, stop) of the tensor's first dimension as float64 (the whole of a 0-d tensor)."""
        if self._index.is_safetensors:
            handle = self._handle(name)
            block = handle.get_tensor(name) if ndim == 0 else handle.get_slice(name)[start:stop]
        else:
            tensor = self._tensor(name)
            block = tensor if ndim == 0 else tensor[start:stop]
        return block.to(torch.float64)


@dataclass
class _Stats:
    """Additive sums over a set of parameter positions; the `k` rows are the experts (+ the merged model)."""

    experts: int
    k: int
    dims: int
    parameters: int = 0
    gram: torch.Tensor = field(init=False)  # [k, k] sums of tau_i * tau_j
    changed: torch.Tensor = field(init=False)  # [k] |M_i|
    both: torch.Tensor = field(init=False)  # [k, k] |M_i and M_j| (float64: exact below 2^53)
    sketch: torch.Tensor = field(init=False)  # [k, dims] sums of s(p) tau_i[p] per projection row
    hashed: torch.Tensor = field(init=False)  # [dims] entries per projection row
    conflicts: int = 0
    overlap: int = 0

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.k, self.k, dtype=torch.float64)
        self.changed = torch.zeros(self.k, dtype=torch.int64)
        self.both = torch.zeros(self.k, self.k, dtype=torch.float64)
        self.sketch = torch.zeros(self.k, self.dims, dtype=torch.float64)
        self.hashed = torch.zeros(self.dims, dtype=torch.int64)

    def add(self, tau: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, signs: torch.Tensor) -> None:
        """tau: [k, m] float64 task vectors; mask: [k, m] bool change masks; rows, signs: [m] projection."""
        self.parameters += tau.shape[1]
        self.gram += tau @ tau.T  # [k, k]; float64 sums of float64 products
        counts = mask.to(torch.float64)
        self.changed += mask.sum(dim=1)
        self.both += counts @ counts.T
        self.sketch.index_add_(1, rows, tau * signs)
        self.hashed += torch.bincount(rows, minlength=self.dims)
        n = self.experts
        moved = mask[:n]
        self.overlap += int((moved.sum(dim=0) >= 2).sum())
        up = ((tau[:n] > 0) & moved).any(dim=0)
        down = ((tau[:n] < 0) & moved).any(dim=0)
        self.conflicts += int((up & down).sum())

    def merge(self, other: _Stats) -> None:
        self.parameters += other.parameters
        for name in ("gram", "changed", "both", "sketch", "hashed"):
            getattr(self, name).add_(getattr(other, name))
        self.conflicts += other.conflicts
        self.overlap += other.overlap

    def norms(self) -> list[float]:
        return [math.sqrt(max(float(v), 0.0)) for v in self.gram.diagonal()]

    def projected(self) -> torch.Tensor:
        """[k, dims]: P tau_i (rows no entry hashed to are 0)."""
        return self.sketch / self.hashed.clamp(min=1).to(torch.float64).sqrt()

    def cosine(self, i: int, j: int) -> float:
        return _cosine(self.gram, i, j)

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        n, total = self.experts, max(self.parameters, 1)
        norms = self.norms()
        z = self.projected()
        zgram = z @ z.T
        fraction = [int(c) / total for c in self.changed]
        rows = range(n)
        out: dict[str, Any] = {
            "parameters": self.parameters,
            "taskVectorNorms": dict(zip(names, norms[:n], strict=True)),
            "cosineMatrix": [[self.cosine(i, j) for j in rows] for i in rows],
            "projectedCosineMatrix": [[_cosine(zgram, i, j) for j in rows] for i in rows],
            "updateFraction": dict(zip(names, fraction[:n], strict=True)),
            "updateSparsity": {name: 1.0 - f for name, f in zip(names, fraction, strict=False)},
            "jaccardMatrix": [[self.jaccard(i, j) for j in rows] for i in rows],
            "jaccardRandomMatrix": [[jaccard_random(fraction[i], fraction[j]) for j in rows] for i in rows],
            "signConflictFraction": self.conflicts / total,
            "signConflictFractionOfOverlap": self.conflicts / self.overlap if self.overlap else 0.0,
            "overlapFraction": self.overlap / total,
        }
        if self.k > n:
            out["merged"] = {
                "taskVectorNorm": norms[n],
                "updateFraction": fraction[n],
                "cosineWithExperts": {name: self.cosine(n, i) for i, name in enumerate(names)},
                "projectedCosineWithExperts": {name: _cosine(zgram, n, i) for i, name in enumerate(names)},
                "jaccardWithExperts": {name: self.jaccard(n, i) for i, name in enumerate(names)},
                "jaccardRandomWithExperts": {
                    name: jaccard_random(fraction[n], fraction[i]) for i, name in enumerate(names)
                },
            }
        return out

    def jaccard(self, i: int, j: int) -> float:
        union = float(self.changed[i] + self.changed[j]) - float(self.both[i, j])
        return float(self.both[i, j]) / union if union > 0 else 0.0


def _cosine(gram: torch.Tensor, i: int, j: int) -> float:
    a, b = float(gram[i, i]), float(gram[j, j])
    if a <= 0.0 or b <= 0.0:
        return 0.0  # a zero vector: undefined
    if i == j:
        return 1.0  # exactly, not g_ii / sqrt(g_ii)^2 rounded
    return max(-1.0, min(1.0, float(gram[i, j]) / (math.sqrt(a) * math.sqrt(b))))


def jaccard_random(p: float, q: float) -> float:
    """The Jaccard index of independent random masks with update fractions p and q:
    E|A and B| / E|A or B| = pq / (p + q - pq) (0 when both are empty)."""
    union = p + q - p * q
    return p * q / union if union > 0 else 0.0


def change_mask(tau: torch.Tensor, weights: torch.Tensor, base: torch.Tensor, eta: float) -> torch.Tensor:
    """M[p] = |tau[p]| > eta * max(|w[p]|, |w_base[p]|): the study's definition of a changed weight.

    tau, weights: [k, m]; base: [m]."""
    return tau.abs() > eta * torch.maximum(weights.abs(), base.abs())


def group_of(tensor: str) -> str:
    """The layer a tensor belongs to (`model.layers.3`), else its module (`model.embed_tokens`)."""
    if match := _LAYER.match(tensor):
        return match.group(1)
    return tensor.rsplit(".", 1)[0] if "." in tensor else tensor


def module_type(tensor: str) -> str:
    """The tensor's name without its layer (`self_attn.q_proj.weight`); other tensors keep their name."""
    if match := _LAYER.match(tensor):
        return tensor[match.end() :]
    return tensor


def analyse_task_vectors(
    base: str | os.PathLike[str],
    experts: Sequence[tuple[str, str | os.PathLike[str]]],
    *,
    merged: str | os.PathLike[str] | None = None,
    options: AnalysisOptions = AnalysisOptions(),
) -> dict[str, Any]:
    """The full report for `experts` ([(name, folder)], in order) against `base` (a model folder).

    `merged`, when given, is the merge's output folder; its task vector is compared with each
    expert's. Tensors some expert lacks or holds with another shape, and non-float tensors, are
    skipped and listed under "skipped". Non-finite task-vector entries are an AnalysisError.
    """
    names = [name for name, _ in experts]
    if len(set(names)) != len(names):
        raise AnalysisError(f"expert names must be unique, got {names}")
    if not names:
        raise AnalysisError("no experts to analyse")
    if problems := options.problems():
        raise AnalysisError("analysis options: " + "; ".join(problems))
    n = len(names)
    k = n + (merged is not None)
    dims = options.projection_dims

    def stats() -> _Stats:
        return _Stats(n, k, dims)

    total = stats()
    layers: dict[str, _Stats] = {}
    types: dict[str, _Stats] = {}
    tensors: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with ExitStack() as stack:
        base_ckpt = Checkpoint(base, stack)
        expert_ckpts = [Checkpoint(path, stack) for _, path in experts]
        merged_ckpt = Checkpoint(merged, stack) if merged is not None else None
        models = [*expert_ckpts, *([merged_ckpt] if merged_ckpt else [])]
        plan = comparable_tensors(base_ckpt, expert_ckpts, merged_ckpt, names, skipped)
        budget = sum(math.prod(shape) for _, shape in plan) or 1
        done, next_log = 0, options.progress_every
        LOG.info("analysis: %d tensors, %s parameters, %d experts", len(plan), f"{budget:,}", n)
        for name, shape in plan:
            one = stats()
            rows = shape[0] if shape else 1
            per_row = math.prod(shape[1:]) if shape else 1
            step = max(1, options.block_elements // max(per_row, 1))
            key = tensor_key(options.projection_seed, name)
            for start in range(0, rows, step):
                stop = min(rows, start + step)
                b = base_ckpt.rows(name, start, stop, len(shape)).reshape(-1)
                w = torch.empty(k, b.numel(), dtype=torch.float64)  # [k, block], filled row by row
                for i, ckpt in enumerate(models):
                    w[i] = ckpt.rows(name, start, stop, len(shape)).reshape(-1)
                tau = w - b
                if not bool(torch.isfinite(tau).all()):
                    finite = torch.isfinite(tau).all(dim=1)
                    bad = [label for label, ok in zip([*names, "merged"], finite, strict=False) if not ok]
                    raise AnalysisError(f"{name}: non-finite task-vector entries in {', '.join(bad)}")
                mask = change_mask(tau, w, b, options.eta)
                projection = rows_and_signs(key, start * per_row, b.numel(), dims)
                one.add(tau, mask, *projection)
                del tau, w, b, mask
            total.merge(one)
            layers.setdefault(group_of(name), stats()).merge(one)
            types.setdefault(module_type(name), stats()).merge(one)
            tensors.append({"name": name, "shape": list(shape), **one.to_dict(names)})
            done += one.parameters
            if done / budget >= next_log or done == budget:
                LOG.info("analysis: %3.0f%% (%s parameters, at %s)", 100 * done / budget, f"{done:,}", name)
                while next_log <= done / budget:
                    next_log += options.progress_every
    if total.parameters == 0:
        raise AnalysisError("no tensor could be compared: every tensor was skipped (see the log)")
    return {
        "version": REPORT_VERSION,
        "base": str(base),
        "experts": [{"name": name, "model": str(path)} for name, path in experts],
        "mergedModel": str(merged) if merged is not None else None,
        "options": {
            "eta": options.eta,
            "projectionDims": dims,
            "projectionSeed": options.projection_seed,
        },
        "definitions": DEFINITIONS,
        "summary": total.to_dict(names),
        "moduleTypes": [{"name": t, **s.to_dict(names)} for t, s in types.items()],
        "layers": [{"name": group, **s.to_dict(names)} for group, s in layers.items()],
        "tensors": tensors,
        "skipped": skipped,
    }


def comparable_tensors(
    base: Checkpoint,
    experts: Sequence[Checkpoint],
    merged: Checkpoint | None,
    names: Sequence[str],
    skipped: list[dict[str, str]],
) -> list[tuple[str, tuple[int, ...]]]:
    """The base's tensors that every expert holds with the same shape, in the base's order."""
    plan = []
    for tensor in base.names():
        shape, is_float = base.info(tensor)
        if not is_float:
            skipped.append({"tensor": tensor, "reason": "not floating point"})
            continue
        reason = None
        others = [*zip(names, experts, strict=True), *([("merged model", merged)] if merged else [])]
        for name, ckpt in others:
            if tensor not in ckpt:
                reason = f"missing from {name}"
            elif (other := ckpt.info(tensor)[0]) != shape:
                reason = f"{name} has shape {list(other)}, the base {list(shape)}"
            if reason:
                break
        if reason:
            LOG.warning("analysis: skipping %s: %s", tensor, reason)
            skipped.append({"tensor": tensor, "reason": reason})
            continue
        plan.append((tensor, shape))
    return plan


DEFINITIONS = {
    "taskVector": "model minus base (the SFT model), flattened over every compared tensor",
    "changeMask": "M_i[p] = |tau_i[p]| > eta * max(|w_i[p]|, |w_base[p]|) (options.eta)",
    "updateFraction": "|M_i| / N, the fraction of parameters the model changed",
    "updateSparsity": "1 - updateFraction",
    "jaccardMatrix": "|M_i and M_j| / |M_i or M_j| (0 when both masks are empty)",
    "jaccardRandomMatrix": "p_i p_j / (p_i + p_j - p_i p_j): the Jaccard index of independent random masks "
    "with update fractions p_i, p_j",
    "taskVectorNorms": "L2 norm of each expert's task vector",
    "cosineMatrix": "exact cosine similarity of two task vectors (0 when either is zero)",
    "projectedCosineMatrix": "cosine similarity after a seeded random projection with orthonormal rows to "
    "options.projectionDims dimensions (hashed rows and signs, each row normalised)",
    "signConflictFraction": "fraction of parameters that one expert changed upwards and another downwards "
    "(both in their change masks)",
    "signConflictFractionOfOverlap": "the same conflicts, as a fraction of overlapFraction's parameters",
    "overlapFraction": "fraction of parameters in at least two experts' change masks",
    "moduleTypes": "the same numbers over all tensors of one module type (the layer index removed)",
    "merged": "the merged model's task vector (merged minus base): norm, update fraction, exact and "
    "projected cosine and Jaccard with each expert",
}


def summary_of(report: dict[str, Any], report_file: str, *, digits: int = 6) -> dict[str, Any]:
    """The status summary (MergeJob status.analysis) of a report, numbers rounded to `digits`
    significant digits; `report_file` is the report's path relative to the merge output."""
    summary = report["summary"]
    names = [e["name"] for e in report["experts"]]
    pairs = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            pairs.append(
                {
                    "first": names[i],
                    "second": names[j],
                    "cosine": _round(summary["cosineMatrix"][i][j], digits),
                    "projectedCosine": _round(summary["projectedCosineMatrix"][i][j], digits),
                    "jaccard": _round(summary["jaccardMatrix"][i][j], digits),
                    "jaccardRandom": _round(summary["jaccardRandomMatrix"][i][j], digits),
                }
            )
    return {
        "taskVectorNorms": {k: _round(v, digits) for k, v in summary["taskVectorNorms"].items()},
        "updateFraction": {k: _round(v, digits) for k, v in summary["updateFraction"].items()},
        "pairwiseCosine": pairs,
        "signConflictFraction": _round(summary["signConflictFraction"], digits),
        "eta": report["options"]["eta"],
        "reportFile": report_file,
    }


def _round(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def write_report(report: dict[str, Any], folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write report.json, cosine-heatmap.svg and jaccard-heatmap.svg into `folder`; return the
    report's and the cosine heatmap's paths."""
    import json

    from m2rl_trainer.merge.heatmap import cosine_heatmap_svg

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report_path = folder / "report.json"
    # Compact: a 7B model's per-tensor matrices would be tens of thousands of indented lines; use jq.
    report_path.write_text(
        json.dumps(report, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8"
    )
    summary = report["summary"]
    experts = [e["name"] for e in report["experts"]]
    merged = summary.get("merged")
    pictures = (
        ("cosine-heatmap.svg", "cosineMatrix", "cosineWithExperts", "Cosine similarity of task vectors"),
        ("jaccard-heatmap.svg", "jaccardMatrix", "jaccardWithExperts", "Jaccard index of change masks"),
    )
    for file, key, merged_key, title in pictures:
        names, matrix = list(experts), [list(row) for row in summary[key]]
        if merged is not None:  # one more row and column: where the merge landed relative to each expert
            with_experts = [merged[merged_key][name] for name in experts]
            itself = 1.0 if merged["taskVectorNorm"] > 0 else 0.0
            matrix = [[*row, c] for row, c in zip(matrix, with_experts, strict=True)] + [
                [*with_experts, itself]
            ]
            names.append("(merged)")
        (folder / file).write_text(cosine_heatmap_svg(names, matrix, title=title), encoding="utf-8")
    return report_path, folder / "cosine-heatmap.svg"
