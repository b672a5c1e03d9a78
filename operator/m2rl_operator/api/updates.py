"""The spec-update contract: which spec fields may change once a resource exists.

Everything not listed in a kind's `MUTABLE_SPEC_FIELDS` is immutable, enforced by CEL transition
rules that the CRD generator adds to the spec schema (`add_update_rules`), as Kubeflow's TrainJob
and Kubernetes' own APIs do: a field that is always present (required, or with a default) gets
`self == oldSelf`; an optional field without a default gets a rule on its parent that also
refuses adding or removing it (a transition rule on the field itself would not run when the old
or the new object lacks it). Each rule's message names the field and says to create a new
resource. New spec fields are immutable unless added to the list, so an accepted change is
always one the operator applies to a live resource.
"""

from __future__ import annotations

import copy
from typing import Any

from m2rl_operator.api.base import Rule, english_list


def _message(path: str, kind: str, mutable: tuple[str, ...]) -> str:
    allowed = english_list([f"spec.{m}" for m in mutable])
    return (
        f"{path} cannot change once the {kind} exists: create a new {kind} instead "
        f"(only {allowed} can change)"
    )


def _always_present(name: str, parent: dict[str, Any]) -> bool:
    node = parent["properties"][name]
    return name in parent.get("required", []) or "default" in node


def add_update_rules(spec: dict[str, Any], kind: str, mutable: tuple[str, ...]) -> dict[str, Any]:
    """A copy of the spec schema with transition rules making every field outside `mutable`
    (paths relative to spec, e.g. `rollout.replicas`) immutable."""
    out = copy.deepcopy(spec)
    for path in mutable:
        node: dict[str, Any] | None = out
        for part in path.split("."):
            node = (node or {}).get("properties", {}).get(part)
        if node is None:
            raise ValueError(f"{kind}: mutable spec field {path!r} is not in the spec schema")
    _add(out, "spec", "", kind, mutable)
    return out


def _add(node: dict[str, Any], shown: str, relative: str, kind: str, mutable: tuple[str, ...]) -> None:
    parent_rules: list[Rule] = []
    for name, sub in node.get("properties", {}).items():
        path = f"{relative}.{name}" if relative else name
        if path in mutable:
            continue
        field_path = f"{shown}.{name}"
        if any(m.startswith(path + ".") for m in mutable):
            _add(sub, field_path, path, kind, mutable)  # a mutable field inside: its siblings are not
            continue
        message = _message(field_path, kind, mutable)
        if _always_present(name, node):
            rule = Rule(rule="self == oldSelf", message=message, reason="FieldValueForbidden")
            sub.setdefault("x-kubernetes-validations", []).append(rule.to_schema())
        else:
            parent_rules.append(
                Rule(
                    rule=f"has(self.{name}) == has(oldSelf.{name}) "
                    f"&& (!has(self.{name}) || self.{name} == oldSelf.{name})",
                    message=message,
                    reason="FieldValueForbidden",
                    field_path=f".{name}",
                )
            )
    if parent_rules:
        node.setdefault("x-kubernetes-validations", []).extend(r.to_schema() for r in parent_rules)
