"""References between resources (runRef, mergeRef) and the model URIs they resolve to.

MergeJob experts and base, EvalSuite models and MT-OPD teachers (RLVRRun spec.algorithm.teachers)
reference runs and merges; each waits until what it references has succeeded.

A reference key is "Kind/name" (e.g. "RLVRRun/math-expert"); `Resolved` maps keys to URIs. The
handler fills it from the referenced objects' status (finalModel, outputModel) and spec (a run's
base model for MergeJob.base.runRef, key "RLVRRun/NAME#base"); `m2rl render` and `m2rl run` fill
it from the other resources of the same files.

Prompt formats travel the same way (key "Kind/name#format", a JSON text {"chatTemplate",
"systemPrompt"}): an EvalSuite evaluates a run's model with the format the run trained with, and a
merge's with the format of the runs it merged when they agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from m2rl_operator.api.evalsuite import EvalModel, EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.rlvrrun import RLVRRunSpec

Resolved = Mapping[str, str]
BASE_SUFFIX = "#base"
FORMAT_SUFFIX = "#format"


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


def rlvrrun_references(spec: RLVRRunSpec) -> list[str]:
    """Keys an MT-OPD run's teachers need (their runs and merges), in spec order, without duplicates."""
    keys = [
        run_key(t.run_ref) if t.run_ref else merge_key(t.merge_ref or "")
        for t in spec.algorithm.teachers or []
        if t.run_ref or t.merge_ref
    ]
    return list(dict.fromkeys(keys))


def teacher_models(spec: RLVRRunSpec, resolved: Resolved) -> list[str]:
    """The model URI of each teacher, in order: its own `model`, else what its reference resolved
    to. ValueError names a teacher whose reference is not resolved."""
    uris = []
    for i, t in enumerate(spec.algorithm.teachers or []):
        if t.model:
            uris.append(t.model)
            continue
        key = run_key(t.run_ref) if t.run_ref else merge_key(t.merge_ref or "")
        if key not in resolved:
            raise ValueError(f"spec.algorithm.teachers[{i}]: {key} has not been resolved to a model")
        uris.append(resolved[key])
    return uris


def resolved_teachers(spec: RLVRRunSpec, models: list[str] | None) -> dict[str, str] | None:
    """The references of a run's teachers as they resolved when it started (status.teacherModels,
    in teacher order), or None when they have not all resolved yet. A run without references needs
    nothing: {}."""
    if not rlvrrun_references(spec):
        return {}
    teachers = spec.algorithm.teachers or []
    if models is None or len(models) != len(teachers):
        return None
    resolved: dict[str, str] = {}
    for t, uri in zip(teachers, models, strict=True):
        if t.run_ref or t.merge_ref:
            resolved[run_key(t.run_ref) if t.run_ref else merge_key(t.merge_ref or "")] = uri
    return resolved


def evalsuite_references(spec: EvalSuiteSpec) -> list[str]:
    keys = [
        run_key(m.run_ref) if m.run_ref else merge_key(m.merge_ref or "")
        for m in spec.models
        if m.run_ref or m.merge_ref
    ]
    return list(dict.fromkeys(keys))


def unresolved(keys: list[str], resolved: Resolved) -> list[str]:
    return [k for k in keys if k not in resolved]


def run_prompt_format(spec: RLVRRunSpec) -> str:
    """The prompt format a run trains with, as the FORMAT_SUFFIX entry holds it."""
    return json.dumps(
        {"chatTemplate": spec.model.chat_template, "systemPrompt": spec.model.system_prompt}, sort_keys=True
    )


def merge_prompt_format(spec: MergeJobSpec, resolved: Resolved) -> str | None:
    """The prompt format of a merge: its referenced experts' (runs or merges) when all agree; None
    when an expert is a model URI (its format is unknown) or two experts differ."""
    formats = set()
    for expert in spec.experts:
        if not (expert.run_ref or expert.merge_ref):
            return None
        key = run_key(expert.run_ref) if expert.run_ref else merge_key(expert.merge_ref or "")
        if key + FORMAT_SUFFIX not in resolved:
            return None
        formats.add(resolved[key + FORMAT_SUFFIX])
    return formats.pop() if len(formats) == 1 else None


def eval_prompt_format(model: EvalModel, resolved: Resolved) -> dict[str, Any]:
    """chat_template and system_prompt of an EvalSuite model: the suite's own values where set,
    else the format its run or merge trained with, else the API's defaults (chat template, no
    system prompt)."""
    inherited: dict[str, Any] = {"chatTemplate": True, "systemPrompt": None}
    if model.run_ref or model.merge_ref:
        key = run_key(model.run_ref) if model.run_ref else merge_key(model.merge_ref or "")
        if key + FORMAT_SUFFIX in resolved:
            inherited = json.loads(resolved[key + FORMAT_SUFFIX])
    chat_template = model.chat_template if model.chat_template is not None else inherited["chatTemplate"]
    system_prompt = model.system_prompt if model.system_prompt is not None else inherited["systemPrompt"]
    return {"chat_template": chat_template, "system_prompt": system_prompt if chat_template else None}
