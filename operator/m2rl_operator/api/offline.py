"""`m2rl validate`'s library: check files of M2RL resources offline, as admission would.

Every m2rl.io object is checked against the CRD generated from the models (schema + CEL); other
kinds are listed as skipped (`kubectl apply --dry-run=server` checks those against a cluster).
As a guard against drift between models and CRDs, an object the CRD accepts must also parse
into the pydantic spec model; if it does not, that is reported as an internal error.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from m2rl_operator.api.base import API_VERSION, GROUP
from m2rl_operator.api.crd import KINDS, KINDS_BY_NAME, Kind, object_schema
from m2rl_operator.api.validation import NotEvaluated, SchemaValidator, Violation
from m2rl_operator.api.yaml_io import Document, KubeYAMLLoader, yaml_files


@dataclass
class ObjectReport:
    """What validation found for one object (or one unreadable file)."""

    source: str
    """file path, with #N for the N-th document of a multi-document file (N > 0)"""
    identity: str
    """Kind/name, or a description when the document is not an object"""
    violations: list[Violation] = field(default_factory=list)
    not_evaluated: list[NotEvaluated] = field(default_factory=list)
    skipped: str | None = None
    """why the object was not checked (not an m2rl.io kind)"""

    @property
    def ok(self) -> bool:
        return not self.violations


@functools.cache
def validator_for(kind: str) -> SchemaValidator:
    """The validator of an M2RL kind, built from the generated CRD schema (cached)."""
    return SchemaValidator(object_schema(KINDS_BY_NAME[kind]))


def _identity(obj: Any) -> str:
    if not isinstance(obj, dict):
        return f"<{type(obj).__name__}>"
    meta = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") or (f"{meta.get('generateName')}*" if meta.get("generateName") else "<no name>")
    return f"{obj.get('kind', '<no kind>')}/{name}"


def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    return (str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def validate_object(
    obj: Any, old: dict[str, Any] | None = None
) -> tuple[list[Violation], list[NotEvaluated], str | None]:
    """Validate one object; returns (violations, not-evaluated rules, skip reason)."""
    if not isinstance(obj, dict):
        return (
            [Violation("", f"expected a Kubernetes object (a mapping), got {type(obj).__name__}", "object")],
            [],
            None,
        )
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        missing = [k for k, v in (("apiVersion", api_version), ("kind", kind)) if not isinstance(v, str)]
        return [Violation(m, "Required value", "schema:required") for m in missing], [], None
    group = api_version.rpartition("/")[0]
    if group != GROUP:
        return [], [], f"{api_version} {kind} is not an {GROUP} kind; not checked offline"
    if kind not in KINDS_BY_NAME:
        known = ", ".join(k.kind for k in KINDS)
        return (
            [Violation("kind", f"Unsupported value: {kind!r}: {GROUP} kinds are {known}", "kind")],
            [],
            None,
        )
    if api_version != API_VERSION:
        return (
            [
                Violation(
                    "apiVersion",
                    f"Unsupported value: {api_version!r}: this m2rl serves {API_VERSION}",
                    "apiVersion",
                )
            ],
            [],
            None,
        )
    result = validator_for(kind).validate(obj, old)
    violations = list(result.violations)
    if result.ok:
        violations.extend(_model_drift(KINDS_BY_NAME[kind], result.defaulted))
    return violations, result.not_evaluated, None


def _model_drift(kind: Kind, defaulted: dict[str, Any]) -> list[Violation]:
    """An object the CRD accepts must parse into the spec model too; anything else is our bug."""
    try:
        kind.spec.model_validate(defaulted.get("spec", {}))
    except ValidationError as exc:
        return [
            Violation(
                "spec",
                f"internal error: the CRD accepts this spec but the {kind.kind} model rejects it: "
                f"{exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}",
                "internal:model-drift",
            )
        ]
    return []


def _documents(path: Path) -> tuple[list[Document], list[ObjectReport]]:
    docs: list[Document] = []
    errors: list[ObjectReport] = []
    for file in yaml_files(path):
        try:
            raw = list(yaml.load_all(file.read_text(), Loader=KubeYAMLLoader))
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
            errors.append(
                ObjectReport(str(file), "<file>", [Violation("", f"cannot read YAML: {exc}", "yaml")])
            )
            continue
        for index, content in enumerate(raw):
            if content is None:
                continue
            if (
                isinstance(content, dict)
                and content.get("kind") == "List"
                and isinstance(content.get("items"), list)
            ):
                docs.extend(Document(file, index, item) for item in content["items"])
            else:
                docs.append(Document(file, index, content))
    return docs, errors


def validate_path(path: Path, old_path: Path | None = None) -> list[ObjectReport]:
    """Validate every object in a file or below a directory.

    With `old_path`, objects are validated as updates of the objects there with the same kind,
    namespace and name (so `self == oldSelf` immutability rules run); the others as creates.
    """
    if not path.exists():
        return [ObjectReport(str(path), "<file>", [Violation("", "no such file or directory", "file")])]
    docs, reports = _documents(path)
    if not docs and not reports:
        reports.append(ObjectReport(str(path), "<file>", [Violation("", "no YAML documents found", "file")]))
    old_by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
    if old_path is not None:
        old_docs, old_errors = _documents(old_path)
        reports.extend(old_errors)
        old_by_key = {_key(d.content): d.content for d in old_docs if isinstance(d.content, dict)}
    for doc in docs:
        old = old_by_key.get(_key(doc.content)) if isinstance(doc.content, dict) else None
        violations, not_evaluated, skipped = validate_object(doc.content, old)
        reports.append(ObjectReport(doc.label, _identity(doc.content), violations, not_evaluated, skipped))
    return reports
