"""Root metadata may only restrict name and generateName: kube-apiserver's
TestValidateStructuralMetadataInvariants (apiextensions-apiserver pkg/apiserver/schema/validation_test.go),
with JSON keywords in place of the Go struct fields it fuzzes."""

from __future__ import annotations

from typing import Any

import pytest

from m2rl_operator.api.admission import check_crd
from m2rl_operator.api.admission.schema_checks import _ROOT, _metadata_invariants
from m2rl_operator.api.crd import crd_manifests

FORBIDDEN = (
    "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly "
    "specified"
)


@pytest.mark.parametrize("type_", ["object", "array", "number", "integer", "boolean", "string"])
def test_metadata_type_must_be_object(type_: str):
    errors = _metadata_invariants({"type": type_}, True, _ROOT, "m")
    assert [str(e) for e in errors] == (
        [] if type_ == "object" else [f'm.type: Invalid value: "{type_}": must be object']
    )


# The ObjectMeta fields, by their JSON names (the Go test iterates metav1.ObjectMeta's fields).
OBJECT_META = [
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields",
]  # fmt: skip


@pytest.mark.parametrize("field", OBJECT_META)
def test_only_name_and_generate_name_properties(field: str):
    errors = _metadata_invariants({"type": "object", "properties": {field: {}}}, True, _ROOT, "m")
    assert [str(e) for e in errors] == ([] if field in ("name", "generateName") else [f"m: {FORBIDDEN}"])


# Every other keyword set next to type and the name/generateName properties (the Go test fills each
# field of the Structural struct); `default` is checked elsewhere (forbidden in top-level metadata).
KEYWORDS: dict[str, Any] = {
    "description": "standard object metadata",
    "title": "t",
    "nullable": True,
    "x-kubernetes-preserve-unknown-fields": True,
    "x-kubernetes-embedded-resource": True,
    "x-kubernetes-int-or-string": True,
    "x-kubernetes-map-type": "atomic",
    "x-kubernetes-validations": [{"rule": "true"}],
    "maxProperties": 3,
    "required": ["name"],
    "enum": [{}],
    "additionalProperties": {"type": "string"},
    "externalDocs": {"url": "https://example.com"},
    "example": {"name": "x"},
    "default": None,
}


@pytest.mark.parametrize("keyword", list(KEYWORDS))
def test_nothing_else_on_root_metadata(keyword: str):
    meta = {"type": "object", "properties": {"name": {}, "generateName": {}}, keyword: KEYWORDS[keyword]}
    errors = _metadata_invariants(meta, True, _ROOT, "m")
    assert [str(e) for e in errors] == ([] if keyword == "default" else [f"m: {FORBIDDEN}"])


def test_our_metadata_restricts_only_the_name():
    for crd in crd_manifests():
        meta = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["metadata"]
        assert set(meta) == {"type", "properties"} and set(meta["properties"]) == {"name"}
        assert check_crd(crd).ok
