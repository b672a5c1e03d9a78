"""Weight-space analysis of task vectors: tau_i = expert_i - base, streamed a block of rows at a time.

Definitions (over every floating-point tensor the base and all experts share with one shape):
  taskVectorNorms[i]     ||tau_i||_2 of the flattened task vector
  cosine(i, j)           <tau_i, tau_j> / (||tau_i|| ||tau_j||); 0 when either norm is 0 (undefined)
  signConflictFraction   #{p : some tau_i[p] > 0 and some tau_j[p] < 0} / #parameters, i.e. the
                         positions where the non-zero entries disagree in sign (what TIES' sign
                         election resolves); 0 with a single expert
  overlapFraction        #{p : at least two tau_i[p] != 0} / #parameters (where a conflict can occur)
  nonZeroFraction[i]     #{p : tau_i[p] != 0} / #parameters (RL updates are often sparse)
The same numbers are given per tensor and per layer (`model.layers.N`; other tensors group by their
module). When the merged model is given, its own task vector (merged - base) is compared with each
expert's (`merged.cosineWithExperts`).

Memory: every model is read through safetensors' lazy slices (mmap), a block of at most
`block_elements` entries per model at a time, so the peak is about (experts + 3) x 8 bytes x
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

LOG = logging.getLogger(__name__)
REPORT_VERSION = 1
_LAYER = re.compile(r"^(.*?\.layers\.\d+)\.")
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}


class AnalysisError(RuntimeError):
    """The analysis cannot give meaningful numbers (non-finite weights, unreadable checkpoint)."""


@dataclass(frozen=True)
class AnalysisOptions:
    """How the analysis reads the checkpoints."""

    block_elements: int = 1 << 20
    """Entries read per model and block (whole rows; at least one row). 2^20 keeps the peak near
    (experts + 3) x 8 MiB; larger blocks only save per-slice overhead."""
    progress_every: float = 0.1
    """Log progress each time this fraction of the base's parameters has been analysed."""


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
    """Additive sums over a set of parameter positions; `k` rows are the experts (+ the merged model)."""

    experts: int
    k: int
    parameters: int = 0
    gram: torch.Tensor = field(init=False)
    nonzero: torch.Tensor = field(init=False)
    conflicts: int = 0
    overlap: int = 0

    def __post_init__(self) -> None:
        self.gram = torch.zeros(self.k, self.k, dtype=torch.float64)
        self.nonzero = torch.zeros(self.experts, dtype=torch.int64)

    def add(self, tau: torch.Tensor) -> None:
        """tau: [k, m] float64, one block of flattened task vectors."""
        self.parameters += tau.shape[1]
        self.gram += tau @ tau.T  # [k, k]; exact enough: float64 sums of float64 products
        experts = tau[: self.experts]
        nonzero = experts != 0  # [n, m]
        self.nonzero += nonzero.sum(dim=1)
        self.overlap += int((nonzero.sum(dim=0) >= 2).sum())
        self.conflicts += int(((experts > 0).any(dim=0) & (experts < 0).any(dim=0)).sum())

    def merge(self, other: _Stats) -> None:
        self.parameters += other.parameters
        self.gram += other.gram
        self.nonzero += other.nonzero
        self.conflicts += other.conflicts
        self.overlap += other.overlap

    def norms(self) -> list[float]:
        return [math.sqrt(max(float(v), 0.0)) for v in self.gram.diagonal()]

    def cosine(self, i: int, j: int) -> float:
        norms = self.norms()
        if norms[i] == 0.0 or norms[j] == 0.0:
            return 0.0
        if i == j:
            return 1.0  # exactly, not g_ii / sqrt(g_ii)^2 rounded
        return max(-1.0, min(1.0, float(self.gram[i, j]) / (norms[i] * norms[j])))

    def to_dict(self, names: Sequence[str]) -> dict[str, Any]:
        n, total = self.experts, max(self.parameters, 1)
        norms = self.norms()
        out: dict[str, Any] = {
            "parameters": self.parameters,
            "taskVectorNorms": dict(zip(names, norms[:n], strict=True)),
            "cosineMatrix": [[self.cosine(i, j) for j in range(n)] for i in range(n)],
            "signConflictFraction": self.conflicts / total,
            "signConflictFractionOfOverlap": self.conflicts / self.overlap if self.overlap else 0.0,
            "overlapFraction": self.overlap / total,
            "nonZeroFraction": {name: int(c) / total for name, c in zip(names, self.nonzero, strict=True)},
        }
        if self.k > n:
            out["merged"] = {
                "taskVectorNorm": norms[n],
                "cosineWithExperts": {name: self.cosine(n, i) for i, name in enumerate(names)},
            }
        return out


def group_of(tensor: str) -> str:
    """The layer a tensor belongs to (`model.layers.3`), else its module (`model.embed_tokens`)."""
    if match := _LAYER.match(tensor):
        return match.group(1)
    return tensor.rsplit(".", 1)[0] if "." in tensor else tensor


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
    n = len(names)
    k = n + (merged is not None)
    total = _Stats(n, k)
    layers: dict[str, _Stats] = {}
    tensors: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with ExitStack() as stack:
        base_ckpt = Checkpoint(base, stack)
        expert_ckpts = [Checkpoint(path, stack) for _, path in experts]
        merged_ckpt = Checkpoint(merged, stack) if merged is not None else None
        plan = comparable_tensors(base_ckpt, expert_ckpts, merged_ckpt, names, skipped)
        budget = sum(math.prod(shape) for _, shape in plan) or 1
        done, next_log = 0, options.progress_every
        LOG.info("analysis: %d tensors, %s parameters, %d experts", len(plan), f"{budget:,}", n)
        for name, shape in plan:
            stats = _Stats(n, k)
            rows = shape[0] if shape else 1
            per_row = math.prod(shape[1:]) if shape else 1
            step = max(1, options.block_elements // max(per_row, 1))
            for start in range(0, rows, step):
                stop = min(rows, start + step)
                b = base_ckpt.rows(name, start, stop, len(shape)).reshape(-1)
                tau = torch.empty(k, b.numel(), dtype=torch.float64)  # [k, block], filled row by row
                for i, ckpt in enumerate([*expert_ckpts, *([merged_ckpt] if merged_ckpt else [])]):
                    tau[i] = ckpt.rows(name, start, stop, len(shape)).reshape(-1)
                tau -= b
                if not bool(torch.isfinite(tau).all()):
                    finite = torch.isfinite(tau).all(dim=1)
                    bad = [label for label, ok in zip([*names, "merged"], finite, strict=False) if not ok]
                    raise AnalysisError(f"{name}: non-finite task-vector entries in {', '.join(bad)}")
                stats.add(tau)
                del tau, b
            total.merge(stats)
            layers.setdefault(group_of(name), _Stats(n, k)).merge(stats)
            tensors.append({"name": name, "shape": list(shape), **stats.to_dict(names)})
            done += stats.parameters
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
        "definitions": DEFINITIONS,
        "summary": total.to_dict(names),
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
    "taskVector": "expert minus base, flattened over every compared tensor",
    "taskVectorNorms": "L2 norm of each expert's task vector",
    "cosineMatrix": "cosine similarity of two task vectors (0 when either is zero); rows and columns "
    "in the order of experts",
    "signConflictFraction": "fraction of parameters where the non-zero task-vector entries of the "
    "experts disagree in sign",
    "signConflictFractionOfOverlap": "the same conflicts, as a fraction of the parameters where at "
    "least two experts are non-zero",
    "overlapFraction": "fraction of parameters where at least two experts are non-zero",
    "nonZeroFraction": "fraction of parameters each expert changed",
    "merged": "the merged model's task vector (merged minus base): its norm and cosine with each expert",
}


def summary_of(report: dict[str, Any], report_file: str, *, digits: int = 6) -> dict[str, Any]:
    """The status summary (MergeJob status.analysis) of a report, numbers rounded to `digits`
    significant digits; `report_file` is the report's path relative to the merge output."""
    summary = report["summary"]
    names = [e["name"] for e in report["experts"]]
    matrix = summary["cosineMatrix"]
    return {
        "taskVectorNorms": {k: _round(v, digits) for k, v in summary["taskVectorNorms"].items()},
        "pairwiseCosine": [
            {"first": names[i], "second": names[j], "cosine": _round(matrix[i][j], digits)}
            for i in range(len(names))
            for j in range(i + 1, len(names))
        ],
        "signConflictFraction": _round(summary["signConflictFraction"], digits),
        "reportFile": report_file,
    }


def _round(value: float, digits: int) -> float:
    return float(f"{value:.{digits}g}")


def write_report(report: dict[str, Any], folder: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write report.json and cosine-heatmap.svg into `folder`; return both paths."""
    import json

    from m2rl_trainer.merge.heatmap import cosine_heatmap_svg

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    report_path = folder / "report.json"
    # Compact: a 7B model's per-tensor matrices would be tens of thousands of indented lines; use jq.
    report_path.write_text(
        json.dumps(report, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8"
    )
    names = [e["name"] for e in report["experts"]]
    matrix = [list(row) for row in report["summary"]["cosineMatrix"]]
    merged = report["summary"].get("merged")
    if merged is not None:  # one more row and column: where the merge landed relative to each expert
        with_experts = [merged["cosineWithExperts"][name] for name in names]
        itself = 1.0 if merged["taskVectorNorm"] > 0 else 0.0
        matrix = [[*row, c] for row, c in zip(matrix, with_experts, strict=True)] + [[*with_experts, itself]]
        names = [*names, "(merged)"]
    heatmap_path = folder / "cosine-heatmap.svg"
    heatmap_path.write_text(
        cosine_heatmap_svg(names, matrix, title="Cosine similarity of task vectors"), encoding="utf-8"
    )
    return report_path, heatmap_path
