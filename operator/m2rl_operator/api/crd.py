"""The three CustomResourceDefinitions, generated from the spec and status models.

`crd_manifests()` is the single source for crds/*.yaml, the Helm chart's CRD templates, the
offline validator and docs/api.md. `write_crds`/`write_chart_crds` write the files; tests compare
the committed files with a fresh generation so they cannot go stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from m2rl_operator.api import evalsuite, mergejob, rlvrrun
from m2rl_operator.api.base import API_VERSION, DNS_1035_LABEL_PATTERN, GROUP, VERSION
from m2rl_operator.api.evalsuite import EvalSuiteSpec, EvalSuiteStatus
from m2rl_operator.api.mergejob import MergeJobSpec, MergeJobStatus
from m2rl_operator.api.rlvrrun import RLVRRunSpec, RLVRRunStatus
from m2rl_operator.api.schema import model_schema
from m2rl_operator.api.updates import add_update_rules

CATEGORY = "m2rl"

# Child objects are named <name>-<suffix>[-<ordinal>] and Services must be DNS-1035 labels of at
# most 63 characters; 40 leaves room for the operator's suffixes and pod ordinals.
MAX_NAME_LENGTH = 40
NAME_PATTERN = DNS_1035_LABEL_PATTERN
"""Child Services and pods are named after the resource."""


def metadata_schema() -> dict[str, Any]:
    """The root `metadata` schema: constraints on `name` only.

    At the root of a CRD, metadata may only restrict name and generateName, and carry nothing
    else, not even a description (apiextensions-apiserver pkg/apiserver/schema/validation.go
    `validateStructuralMetadataInvariants`). The name rules live here rather than in root CEL
    rules: a rule's fieldPath `.metadata.name` is only valid if the schema declares that property
    (`ValidFieldPath`), and the schema check costs no CEL budget. The API server validates the
    generated name when generateName is used.
    """
    return {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "description": f"name must be a DNS-1035 label of at most {MAX_NAME_LENGTH} characters "
                "(lowercase letters, digits and '-', starting with a letter): the operator derives Service, "
                "Job and pod names from it.",
                "maxLength": MAX_NAME_LENGTH,
                "pattern": NAME_PATTERN,
            },
        },
    }


@dataclass(frozen=True)
class Kind:
    """One custom resource kind and how it is presented."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    mutable_spec_fields: tuple[str, ...]
    """Spec fields that may change once the resource exists (paths below spec); all others are
    immutable."""
    printer_columns: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def file_name(self) -> str:
        """controller-gen's file naming: <group>_<plural>.yaml."""
        return f"{GROUP}_{self.plural}.yaml"


def _col(
    name: str, json_path: str, type_: str = "string", description: str = "", priority: int = 0
) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type_, "jsonPath": json_path}
    if description:
        column["description"] = description
    if priority:
        column["priority"] = priority
    return column


_AGE = _col("Age", ".metadata.creationTimestamp", "date")

KINDS: tuple[Kind, ...] = (
    Kind(
        kind="RLVRRun",
        plural="rlvrruns",
        singular="rlvrrun",
        short_names=("rlvr",),
        spec=RLVRRunSpec,
        status=RLVRRunStatus,
        description="RLVRRun is a GRPO run (reinforcement learning with verifiable rewards) of one model "
        "over "
        "one domain (an expert run) or several domains (a mixed multi-task run).",
        mutable_spec_fields=rlvrrun.MUTABLE_SPEC_FIELDS,
        printer_columns=(
            _col("Phase", ".status.phase", description="Where the run is in its life"),
            _col("Step", ".status.step", "integer", "Last completed step"),
            _col("Steps", ".spec.algorithm.steps", "integer", "Steps of the run"),
            _col("Algorithm", ".spec.algorithm.type", description="grpo, dapo or dr_grpo"),
            _col("Model", ".spec.model.uri", description="Base model", priority=1),
            _col("Checkpoint", ".status.latestCheckpoint.uri", description="Latest checkpoint", priority=1),
            _AGE,
        ),
    ),
    Kind(
        kind="MergeJob",
        plural="mergejobs",
        singular="mergejob",
        short_names=("merge",),
        spec=MergeJobSpec,
        status=MergeJobStatus,
        description="MergeJob merges expert checkpoints (runs, other merges or URIs) with a mergekit method "
        "and "
        "analyses their task vectors.",
        mutable_spec_fields=mergejob.MUTABLE_SPEC_FIELDS,
        printer_columns=(
            _col("Method", ".spec.method", description="Merge method"),
            _col("Phase", ".status.phase", description="Where the merge is in its life"),
            _col("Output", ".status.outputModel", description="Merged model", priority=1),
            _AGE,
        ),
    ),
    Kind(
        kind="EvalSuite",
        plural="evalsuites",
        singular="evalsuite",
        short_names=("evals",),
        spec=EvalSuiteSpec,
        status=EvalSuiteStatus,
        description="EvalSuite evaluates models (URIs, runs or merges) on benchmarks and keeps a models x "
        "benchmarks results table in its status.",
        mutable_spec_fields=evalsuite.MUTABLE_SPEC_FIELDS,
        printer_columns=(
            _col("Phase", ".status.phase", description="Where the evaluation is in its life"),
            _col("Done", ".status.cellsSucceeded", "integer", "Finished cells"),
            _col("Cells", ".status.cellsTotal", "integer", "Models x benchmarks"),
            _AGE,
        ),
    ),
)

KINDS_BY_NAME: dict[str, Kind] = {k.kind: k for k in KINDS}


def object_schema(kind: Kind) -> dict[str, Any]:
    """The openAPIV3Schema of a kind: apiVersion, kind, metadata, spec, status."""
    return {
        "type": "object",
        "description": kind.description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "apiVersion is the versioned schema of this object: " + API_VERSION + ".",
            },
            "kind": {
                "type": "string",
                "description": f"kind is the REST resource this object represents: {kind.kind}.",
            },
            "metadata": metadata_schema(),
            "spec": add_update_rules(model_schema(kind.spec), kind.kind, kind.mutable_spec_fields),
            "status": model_schema(kind.status),
        },
        "required": ["spec"],
    }


def crd_manifest(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "annotations": {"m2rl.io/generated-by": "m2rl crds"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": list(kind.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": object_schema(kind)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.printer_columns),
                }
            ],
        },
    }


def crd_manifests() -> list[dict[str, Any]]:
    """The CRDs of all kinds, in KINDS order."""
    return [crd_manifest(k) for k in KINDS]


_HEADER = "# Generated by `m2rl crds` from operator/m2rl_operator/api; do not edit by hand.\n"


def dump_yaml(obj: Any) -> str:
    """Stable YAML: insertion order, wide lines, block style."""
    return str(yaml.safe_dump(obj, sort_keys=False, width=120, default_flow_style=False, allow_unicode=True))


def crd_file_texts() -> dict[str, str]:
    """File name -> text of crds/*.yaml."""
    return {k.file_name: _HEADER + dump_yaml(crd_manifest(k)) for k in KINDS}


# The chart wraps each CRD in `crds.enabled` and can keep CRDs (and so every custom resource) on
# `helm uninstall`; the annotation line is inserted under the generated annotations.
_CHART_KEEP = "    {{- if .Values.crds.keep }}\n    helm.sh/resource-policy: keep\n    {{- end }}\n"


def chart_crd_texts() -> dict[str, str]:
    """File name (under templates/crds/) -> Helm template text of each CRD."""
    out: dict[str, str] = {}
    anchor = "  annotations:\n    m2rl.io/generated-by: m2rl crds\n"
    for k in KINDS:
        body = dump_yaml(crd_manifest(k))
        if anchor not in body or "{{" in body:
            raise ValueError(f"cannot template the CRD of {k.kind}: unexpected layout or '{{{{' in text")
        body = body.replace(anchor, anchor + _CHART_KEEP, 1)
        out[f"{k.plural}.yaml"] = "{{- if .Values.crds.enabled }}\n" + _HEADER + body + "{{- end }}\n"
    return out


def write_files(texts: dict[str, str], directory: Path) -> list[Path]:
    """Write `texts` into `directory`; return the files whose content changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, text in texts.items():
        path = directory / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def stale_files(texts: dict[str, str], directory: Path) -> list[Path]:
    """Files under `directory` that differ from `texts` (or are missing)."""
    return [
        directory / name
        for name, text in texts.items()
        if not (directory / name).exists() or (directory / name).read_text() != text
    ]
