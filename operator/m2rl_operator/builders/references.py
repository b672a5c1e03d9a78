"""References between resources (runRef, mergeRef) and the model URIs they resolve to.

A reference key is "Kind/name" (e.g. "RLVRRun/math-expert"); `Resolved` maps keys to URIs. The
handler fills it from the referenced objects' status (finalModel, outputModel) and spec (a run's
base model for MergeJob.base.runRef, key "RLVRRun/NAME#base"); `m2rl render` fills it from the
other resources of the same files.
"""

from __future__ import annotations

from collections.abc import Mapping

from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec

Resolved = Mapping[str, str]
BASE_SUFFIX = "#base"


def run_key(name: str) -> str:
    return f"RLVRRun/{name}"


def merge_key(name: str) -> str:
    return f"MergeJob/{name}"


def mergejob_references(spec: MergeJobSpec) -> list[str]:
    """Keys this MergeJob needs, in spec order, without duplicates."""
    keys: list[str] = []
    if spec.base is not None and spec.base.run_ref:
        keys.append(run_key(spec.base.run_ref) + BASE_SUFFIX)
    for expert in spec.experts:
        if expert.run_ref:
            keys.append(run_key(expert.run_ref))
        elif expert.merge_ref:
            keys.append(merge_key(expert.merge_ref))
    return list(dict.fromkeys(keys))


def evalsuite_references(spec: EvalSuiteSpec) -> list[str]:
    keys = [
        run_key(m.run_ref) if m.run_ref else merge_key(m.merge_ref or "")
        for m in spec.models
        if m.run_ref or m.merge_ref
    ]
    return list(dict.fromkeys(keys))


def unresolved(keys: list[str], resolved: Resolved) -> list[str]:
    return [k for k in keys if k not in resolved]
