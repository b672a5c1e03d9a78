"""A whole CustomResourceDefinition through the schema checks, once per Kubernetes profile."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2rl_operator.api.admission.decl import SUPPORTED_PROFILES, Profile
from m2rl_operator.api.admission.errors import FieldError, child, index, invalid, required
from m2rl_operator.api.admission.schema_checks import Options, RuleCost, validate_validation
from m2rl_operator.api.yaml_io import iter_documents


@dataclass
class ProfileReport:
    """What one Kubernetes profile says about the CRD."""

    profile: Profile
    errors: list[FieldError] = field(default_factory=list)
    costs: list[RuleCost] = field(default_factory=list)
    total_cost: int = 0


@dataclass
class CRDReport:
    name: str
    reports: list[ProfileReport]

    @property
    def errors(self) -> list[tuple[FieldError, list[str]]]:
        """Every distinct error with the profiles that report it, in first-seen order."""
        seen: dict[str, tuple[FieldError, list[str]]] = {}
        for report in self.reports:
            for error in report.errors:
                entry = seen.setdefault(str(error), (error, []))
                entry[1].append(report.profile.name)
        return list(seen.values())

    @property
    def ok(self) -> bool:
        return all(not r.errors for r in self.reports)

    def largest(self) -> RuleCost | None:
        """The most expensive rule or messageExpression over all profiles."""
        costs = [c for r in self.reports for c in r.costs]
        return max(costs, key=lambda c: c.cost) if costs else None

    @property
    def total_cost(self) -> int:
        """The largest per-CRD total over all profiles."""
        return max((r.total_cost for r in self.reports), default=0)

    def lines(self) -> list[str]:
        """Errors as the API server prints them, tagged when only some profiles report them."""
        every = len(self.reports)
        out = []
        for error, profiles in self.errors:
            tag = "" if len(profiles) == every else f"  [Kubernetes {', '.join(profiles)}]"
            out.append(f"{error}{tag}")
        return out


def _schemas(crd: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None, bool]]:
    """(field path, openAPIV3Schema, status enabled) as the API server validates them.

    A v1 CRD is converted to the internal version first: when every version has the same schema
    (and the same subresources) they move to spec.validation / spec.subresources
    (apis/apiextensions/v1/conversion.go), which is why errors of single-version CRDs are
    reported under `spec.validation.openAPIV3Schema`.
    """
    spec = crd.get("spec") or {}
    versions = spec.get("versions") or []
    schemas = [(v.get("schema") or {}).get("openAPIV3Schema") for v in versions]
    subresources = [v.get("subresources") for v in versions]
    any_status = any(bool(s) and "status" in s for s in subresources)
    if versions and all(s == schemas[0] for s in schemas):
        return [("spec.validation", schemas[0], any_status)]
    out = []
    for i, version in enumerate(versions):
        status = bool(version.get("subresources")) and "status" in version["subresources"]
        out.append((child(index("spec.versions", i), "schema"), schemas[i], status))
    return out


_COLUMN_TYPES = ["boolean", "date", "integer", "number", "string"]
_COLUMN_FORMATS = ["byte", "date", "date-time", "double", "float", "int32", "int64", "password"]


def _printer_columns(crd: dict[str, Any]) -> list[FieldError]:
    """ValidateCustomResourceColumnDefinition for each column (identical columns of all versions
    move to spec.additionalPrinterColumns in the internal version, like the schemas)."""
    versions = (crd.get("spec") or {}).get("versions") or []
    columns = [v.get("additionalPrinterColumns") or [] for v in versions]
    if versions and all(c == columns[0] for c in columns):
        targets = [("spec.additionalPrinterColumns", columns[0])]
    else:
        targets = [
            (child(index("spec.versions", i), "additionalPrinterColumns"), c) for i, c in enumerate(columns)
        ]
    errors: list[FieldError] = []
    for base, cols in targets:
        for i, col in enumerate(cols):
            path = index(base, i)
            if not col.get("name"):
                errors.append(required(child(path, "name"), ""))
            type_ = col.get("type", "")
            if not type_:
                errors.append(required(child(path, "type"), f"must be one of {','.join(_COLUMN_TYPES)}"))
            elif type_ not in _COLUMN_TYPES:
                errors.append(
                    invalid(child(path, "type"), type_, f"must be one of {','.join(_COLUMN_TYPES)}")
                )
            fmt = col.get("format", "")
            if fmt and fmt not in _COLUMN_FORMATS:
                errors.append(
                    invalid(child(path, "format"), fmt, f"must be one of {','.join(_COLUMN_FORMATS)}")
                )
            json_path = col.get("jsonPath", "")
            if not json_path:
                errors.append(required(child(path, "JSONPath"), ""))
            elif not json_path.startswith("."):  # validateSimpleJSONPath
                errors.append(
                    invalid(child(path, "JSONPath"), json_path, "must be a simple json path starting with .")
                )
    return errors


def check_crd(
    crd: dict[str, Any], profiles: tuple[Profile, ...] = SUPPORTED_PROFILES, options: Options | None = None
) -> CRDReport:
    """The schema half of ValidateCustomResourceDefinition for an apiextensions.k8s.io/v1 CRD (and its
    printer columns); names, conversion and the other spec checks are not ported."""
    name = str((crd.get("metadata") or {}).get("name", "<no name>"))
    reports = []
    for profile in profiles:
        report = ProfileReport(profile)
        targets = _schemas(crd)
        if not targets:
            report.errors.append(
                required("spec.versions", "must have exactly one version marked as storage version")
            )
        for path, schema, status in targets:
            if schema is None:
                report.errors.append(required(child(path, "openAPIV3Schema"), "schemas are required"))
                continue
            result = validate_validation(
                schema, path, status_enabled=status, profile=profile, options=options
            )
            report.errors.extend(result.errors)
            report.costs.extend(result.costs)
            report.total_cost += result.total_cost
        report.errors.extend(_printer_columns(crd))
        reports.append(report)
    return CRDReport(name, reports)


def check_crds(crds: list[dict[str, Any]]) -> list[CRDReport]:
    return [check_crd(crd) for crd in crds]


def crds_in(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(source label, manifest) of every CustomResourceDefinition in a file or below a directory."""
    found = []
    for doc in iter_documents(path):
        content = doc.content
        items = (
            content.get("items") if isinstance(content, dict) and content.get("kind") == "List" else [content]
        )
        for item in items or []:
            if isinstance(item, dict) and item.get("kind") == "CustomResourceDefinition":
                found.append((doc.label, item))
    return found
