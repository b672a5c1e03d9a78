"""Pure builders: a resource's spec (+ options, + resolved references) -> Kubernetes manifests.

`build_children` dispatches on the kind of a whole object (as read from YAML or the API server);
`m2rl render` and the handlers call it, so both create exactly the same children.
"""

from __future__ import annotations

from typing import Any

from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.builders.common import Manifest
from m2rl_operator.builders.evalsuite import build_evalsuite
from m2rl_operator.builders.mergejob import build_mergejob
from m2rl_operator.builders.references import Resolved
from m2rl_operator.builders.rlvrrun import build_rlvrrun
from m2rl_operator.builders.trainer_config import build_trainer_config, final_model_uri
from m2rl_operator.builders.validation import rlvrrun_problems
from m2rl_operator.settings import OperatorOptions

__all__ = [
    "Manifest",
    "build_children",
    "build_evalsuite",
    "build_mergejob",
    "build_rlvrrun",
    "build_trainer_config",
    "final_model_uri",
    "rlvrrun_problems",
]


def build_children(
    obj: dict[str, Any],
    *,
    options: OperatorOptions,
    resolved: Resolved | None = None,
    default_namespace: str = "default",
) -> list[Manifest]:
    """Children of one RLVRRun, MergeJob or EvalSuite object (apiVersion/kind/metadata/spec)."""
    kind = obj.get("kind")
    name = obj["metadata"]["name"]
    namespace = obj["metadata"].get("namespace") or default_namespace
    spec = obj.get("spec") or {}
    if kind == "RLVRRun":
        return build_rlvrrun(
            RLVRRunSpec.model_validate(spec),
            name=name,
            namespace=namespace,
            options=options,
            resolved=resolved or {},
        )
    if kind == "MergeJob":
        return build_mergejob(
            MergeJobSpec.model_validate(spec),
            name=name,
            namespace=namespace,
            resolved=resolved or {},
            options=options,
        )
    if kind == "EvalSuite":
        return build_evalsuite(
            EvalSuiteSpec.model_validate(spec),
            name=name,
            namespace=namespace,
            resolved=resolved or {},
            options=options,
        )
    raise ValueError(f"kind {kind!r} is not an M2RL kind (RLVRRun, MergeJob, EvalSuite)")
