"""fieldPath validity against kube-apiserver's TestValidateFieldPath
(apiextensions-apiserver pkg/apis/apiextensions/validation/validation_test.go), one row per Go case."""

from __future__ import annotations

import pytest

from m2rl_operator.api.admission.fieldpath import FieldPathError, valid_field_path

SCHEMA = {
    "type": "object",
    "properties": {
        "foo": {
            "type": "object",
            "additionalProperties": {"type": "object", "properties": {"f1": {"type": "number"}}},
        },
        "a": {
            "type": "object",
            "properties": {
                "bbb": {"type": "object", "properties": {"c": {"type": "number"}, "34": {"type": "number"}}},
                "bbb.c": {"type": "object", "properties": {"a-b34": {"type": "number"}}},
            },
        },
        "list": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"a": {"type": "number"}, "a-b.34": {"type": "number"}},
            },
        },
    },
}

# (Go test name, fieldPath, error message substring or "" for valid)
CASES = [
    ("Valid .a", ".a", ""),
    ("Valid .a.b", ".a.bbb", ""),
    ("Valid .foo.f1", ".foo.f1", ""),
    ("Invalid map syntax .a.b", ".a['bbb']", ""),
    ("Valid .a['bbb.c']", ".a['bbb.c']", ""),
    ("Valid .a['bbb.c'].a-b34", ".a['bbb.c'].a-b34", ""),
    ("Valid .a['bbb.c']['a-b34']", ".a['bbb.c']['a-b34']", ""),
    ("Valid .a.bbb.c", ".a.bbb.c", ""),
    ("Valid .a.bbb.34", ".a.bbb['34']", ""),
    ("Invalid map key", ".a.foo", "does not refer to a valid field"),
    ("Malformed map key", ".a.bbb[0]", "expected single quoted string but got 0"),
    ("number in field names", ".a.bbb.34", ""),
    ("Special field names", ".a.bbb['34']", ""),
    ("Valid .list", ".list", ""),
    ("Invalid .list[1]", ".list[1]", "expected single quoted string but got 1"),
    ("Unsopported .list.a", ".list.a", "does not refer to a valid field"),
    ("Unsupported .list['a-b.34']", ".list['a-b.34']", "does not refer to a valid field"),
    ("Invalid .list.a-b.34", ".list.a-b.34", "does not refer to a valid field"),
    ("Missing leading dot", "a", "expected [ or . but got: a"),
    ("Nonexistent field", ".c", "does not refer to a valid field"),
    ("Duplicate dots", ".a..b", "does not refer to a valid field"),
    ("Negative array index", ".list[-1]", "expected single quoted string but got -1"),
    ("Floating-point array index", ".list[1.0]", "expected single quoted string but got 1"),
]


@pytest.mark.parametrize(("name", "path", "error"), CASES, ids=[c[0] for c in CASES])
def test_valid_field_path(name: str, path: str, error: str):
    if error:
        with pytest.raises(FieldPathError, match=error.replace("[", r"\[").replace(".", r"\.")):
            valid_field_path(path, SCHEMA)
    else:
        valid_field_path(path, SCHEMA)


def test_normalized_paths_print_as_field_paths():
    assert valid_field_path(".a['bbb.c'].a-b34", SCHEMA)[0] == "a.bbb.c.a-b34"
    assert valid_field_path(".foo.f1", SCHEMA)[0] == "foo[f1]"  # a map key prints as a key
    _, found = valid_field_path(".a.bbb", SCHEMA)
    assert found == SCHEMA["properties"]["a"]["properties"]["bbb"]


def test_metadata_without_properties_has_no_valid_paths():
    """Cause 1 of the CRDs' rejection: a root rule's `.metadata.name` walks into a metadata schema
    that declares no properties."""
    root = {"type": "object", "properties": {"metadata": {"type": "object"}}}
    with pytest.raises(FieldPathError, match="does not refer to a valid field"):
        valid_field_path(".metadata.name", root)
    root["properties"]["metadata"]["properties"] = {"name": {"type": "string"}}
    assert valid_field_path(".metadata.name", root)[0] == "metadata.name"
