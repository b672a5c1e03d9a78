"""The merge methods a MergeJob accepts, declared as data (after mergekit 0.1.5's registry, plus the
M2RL study's MergeLM variants that the trainer image registers into it: `mergelm_*`).

Each entry says whether the method needs a base model, how many experts it takes, and which
global and per-expert parameters it reads. The MergeJob CRD's CEL rules are generated from this
table, so `kubectl apply` rejects a parameter the chosen method would silently ignore.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

BasePolicy = Literal["required", "optional", "ignored"]

# Global parameters (spec.parameters.<name>) and their mergekit names.
GLOBAL_PARAMETERS: dict[str, str] = {
    "lambda": "lambda",
    "normalize": "normalize",
    "rescale": "rescale",
    "int8Mask": "int8_mask",
    "t": "t",
    "selectTopK": "select_topk",
    "filterWise": "filter_wise",
    "normalizeWeights": "normalize_weights",
    "eps": "eps",
    "maxIter": "max_iter",
    "tol": "tol",
    "rowWise": "nuslerp_row_wise",
    "flatten": "nuslerp_flatten",
    "trimScope": "trim_scope",
    "dareRescale": "dare_rescale",
}
# Per-expert parameters (spec.experts[].<name>) and their mergekit names.
EXPERT_PARAMETERS: dict[str, str] = {
    "weight": "weight",
    "density": "density",
    "gamma": "gamma",
    "epsilon": "epsilon",
    "dareDensity": "dare_density",
}

_GTA_GLOBAL = frozenset({"lambda", "normalize", "rescale", "int8Mask"})


@dataclass(frozen=True)
class MergeMethod:
    """What a merge method needs. `min_experts`/`max_experts` count experts, not the base."""

    name: str
    base: BasePolicy
    min_experts: int
    max_experts: int | None
    global_params: frozenset[str]
    expert_params: frozenset[str]
    required_global: frozenset[str]
    paper: str


_TIES_LIKE = {"weight", "density"}
_DARE_GLOBAL = {"trimScope", "dareRescale"}
_TIES_DARE = {"density", "dareDensity"}
_MERGELM = "https://github.com/Mosi-AI/M2RL/tree/main/M2RL/MergeLM"

# fmt: off
# columns: name, base, min experts, max experts, global parameters, per-expert parameters, reference
_TABLE: tuple[tuple[str, BasePolicy, int, int | None, set[str], set[str], str], ...] = (
    ("linear",           "ignored",  1, None, {"normalize"},                 {"weight"},                    "https://arxiv.org/abs/2203.05482"),
    ("task_arithmetic",  "required", 1, None, set(_GTA_GLOBAL),              _TIES_LIKE,                    "https://arxiv.org/abs/2212.04089"),
    ("ties",             "required", 1, None, set(_GTA_GLOBAL),              _TIES_LIKE,                    "https://arxiv.org/abs/2306.01708"),
    ("dare_ties",        "required", 1, None, set(_GTA_GLOBAL),              _TIES_LIKE,                    "https://arxiv.org/abs/2311.03099"),
    ("dare_linear",      "required", 1, None, set(_GTA_GLOBAL),              _TIES_LIKE,                    "https://arxiv.org/abs/2311.03099"),
    ("breadcrumbs",      "required", 1, None, set(_GTA_GLOBAL),              _TIES_LIKE | {"gamma"},        "https://arxiv.org/abs/2312.06795"),
    ("breadcrumbs_ties", "required", 1, None, set(_GTA_GLOBAL),              _TIES_LIKE | {"gamma"},        "https://arxiv.org/abs/2312.06795"),
    ("della",            "required", 1, None, set(_GTA_GLOBAL),              _TIES_LIKE | {"epsilon"},      "https://arxiv.org/abs/2406.11617"),
    ("della_linear",     "required", 1, None, set(_GTA_GLOBAL),              _TIES_LIKE | {"epsilon"},      "https://arxiv.org/abs/2406.11617"),
    ("sce",              "required", 1, None, {"int8Mask", "selectTopK"},    set(),                         "https://arxiv.org/abs/2408.07990"),
    ("model_stock",      "required", 2, None, {"filterWise"},                set(),                         "https://arxiv.org/abs/2403.19522"),
    ("slerp",            "required", 1, 1,    {"t"},                         set(),                         "https://en.wikipedia.org/wiki/Slerp"),
    ("nuslerp",          "optional", 2, 2,    {"rowWise", "flatten"},        {"weight"},                    "https://github.com/arcee-ai/mergekit/blob/main/docs/merge_methods.md"),
    ("multislerp",       "optional", 1, None, {"normalizeWeights", "eps"},   {"weight"},                    "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea"),
    ("karcher",          "ignored",  1, None, {"maxIter", "tol"},            set(),                         "https://arxiv.org/abs/2603.04972"),
    # The M2RL study's variants (MergeLM), registered into mergekit by the trainer image (merge/methods).
    ("mergelm_ties",     "required", 1, None, {"lambda", *_DARE_GLOBAL}, _TIES_DARE, _MERGELM),
    ("mergelm_sce",      "required", 1, None, {"selectTopK"},                set(),                         "https://arxiv.org/abs/2408.07990"),
    ("mergelm_task_arithmetic", "required", 1, None, {"lambda", "dareRescale"}, {"dareDensity"},   "https://arxiv.org/abs/2311.03099"),
)
# fmt: on
_REQUIRED_GLOBAL: dict[str, frozenset[str]] = {"slerp": frozenset({"t"})}

MERGE_METHODS: dict[str, MergeMethod] = {
    name: MergeMethod(
        name=name,
        base=base,
        min_experts=min_experts,
        max_experts=max_experts,
        global_params=frozenset(global_params),
        expert_params=frozenset(expert_params),
        required_global=_REQUIRED_GLOBAL.get(name, frozenset()),
        paper=paper,
    )
    for name, base, min_experts, max_experts, global_params, expert_params, paper in _TABLE
}

MethodName = Literal[
    "linear",
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "sce",
    "model_stock",
    "slerp",
    "nuslerp",
    "multislerp",
    "karcher",
    "mergelm_ties",
    "mergelm_sce",
    "mergelm_task_arithmetic",
]


def methods_where(predicate: Callable[[MergeMethod], bool]) -> list[str]:
    """Names of the methods for which `predicate(method)` is true, in table order."""
    return [name for name, m in MERGE_METHODS.items() if predicate(m)]
