"""`m2rl render`: the manifests the operator would create for resources, without a cluster.

References (runRef, mergeRef) resolve against the other resources given to the same call: a run's
final model is where its last checkpoint will be, a merge's output is its spec.output.uri. A
reference to a resource that is not among them is a problem (render it together with its
dependencies, e.g. `m2rl render -f examples/mix-vs-merge/`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.offline import validate_object
from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.builders import build_children, final_model_uri, rlvrrun_problems
from m2rl_operator.builders.common import Manifest
from m2rl_operator.builders.references import (
    BASE_SUFFIX,
    FORMAT_SUFFIX,
    evalsuite_references,
    merge_key,
    merge_prompt_format,
    mergejob_references,
    rlvrrun_references,
    run_key,
    run_prompt_format,
    unresolved,
)
from m2rl_operator.settings import OperatorOptions


@dataclass
class Rendered:
    """Manifests of every resource, and the problems that kept some resources from rendering."""

    manifests: list[Manifest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def resolve_offline(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Reference key -> model URI (and prompt format), from the RLVRRuns and MergeJobs among `objects`."""
    resolved: dict[str, str] = {}
    merges: dict[str, MergeJobSpec] = {}
    for obj in objects:
        name = obj["metadata"]["name"]
        if obj.get("kind") == "RLVRRun":
            spec = RLVRRunSpec.model_validate(obj["spec"])
            resolved[run_key(name)] = final_model_uri(name, spec)
            resolved[run_key(name) + BASE_SUFFIX] = spec.model.uri
            resolved[run_key(name) + FORMAT_SUFFIX] = run_prompt_format(spec)
        elif obj.get("kind") == "MergeJob":
            merges[name] = MergeJobSpec.model_validate(obj["spec"])
            resolved[merge_key(name)] = merges[name].output.uri
    for _ in merges:  # merges of merges: a pass per level of nesting at most
        for name, merge in merges.items():
            if (fmt := merge_prompt_format(merge, resolved)) is not None:
                resolved[merge_key(name) + FORMAT_SUFFIX] = fmt
    return resolved


def render_objects(objects: list[Any], options: OperatorOptions, namespace: str = "default") -> Rendered:
    """Validate each M2RL object like the API server would, then build its children."""
    result = Rendered()
    valid: list[dict[str, Any]] = []
    for obj in objects:
        violations, _, skipped = validate_object(obj)
        identity = (
            f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}" if isinstance(obj, dict) else "?"
        )
        if skipped:
            continue  # not an M2RL kind (e.g. a PVC in the same folder): nothing to render
        if violations:
            result.problems += [f"{identity}: {v}" for v in violations]
            continue
        valid.append(obj)
    resolved = resolve_offline(valid)
    for obj in valid:
        kind, name = obj["kind"], obj["metadata"]["name"]
        identity = f"{kind}/{name}"
        if kind == "RLVRRun":
            spec = RLVRRunSpec.model_validate(obj["spec"])
            missing = unresolved(rlvrrun_references(spec), resolved)
            problems = rlvrrun_problems(spec)
            problems += [f"references {k}, which is not in the input" for k in missing]
        elif kind == "MergeJob":
            missing = unresolved(mergejob_references(MergeJobSpec.model_validate(obj["spec"])), resolved)
            keys = dict.fromkeys(k.removesuffix(BASE_SUFFIX) for k in missing)
            problems = [f"references {k}, which is not in the input" for k in keys]
        else:
            missing = unresolved(evalsuite_references(EvalSuiteSpec.model_validate(obj["spec"])), resolved)
            problems = [f"references {k}, which is not in the input" for k in missing]
        if problems:
            result.problems += [f"{identity}: {p}" for p in problems]
            continue
        result.manifests += build_children(
            obj, options=options, resolved=resolved, default_namespace=namespace
        )
    return result


def to_yaml(manifests: list[Manifest]) -> str:
    return str(yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True))
