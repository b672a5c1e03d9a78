"""Rules evaluated on schema defaults as written (apiextensions-apiserver
pkg/apiserver/schema/defaulting/validation.go), on the apiserver's own cases: validation_test.go
"valid default with x-kubernetes-validations" / "invalid default with x-kubernetes-validations" and
defaulting/validation_test.go "default cel validation", without their embedded-resource part (refused
by this check: see test_apiserver_validation_cases.py)."""

from __future__ import annotations

import copy
from typing import Any

from m2rl_operator.api.admission import KUBE_1_36, Options, validate_validation

ROOT = "spec.validation.openAPIV3Schema"


def _schema(value_default: str, object_default: dict[str, int]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "value": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self.startsWith('kube')"}],
                "default": value_default,
            },
            "object": {
                "type": "object",
                "properties": {"field1": {"type": "integer"}, "field2": {"type": "integer"}},
                "x-kubernetes-validations": [{"rule": "self.field1 < self.field2"}],
                "default": object_default,
            },
        },
    }


def _errors(schema: dict[str, Any]) -> list[str]:
    options = Options(allow_defaults=True, require_structural_schema=True, require_valid_property_type=False,
                      require_pruned_defaults=False, require_atomic_set_type=False,
                      require_map_list_keys_map_set_validation=False)  # fmt: skip
    result = validate_validation(
        schema, "spec.validation", status_enabled=False, profile=KUBE_1_36, options=options
    )
    return [str(e) for e in result.errors]


def test_valid_defaults_pass():
    assert _errors(_schema("kube-everything", {"field1": 1, "field2": 2})) == []


def test_invalid_defaults_fail_with_the_rule():
    assert _errors(_schema("nope", {"field1": 2, "field2": 1})) == [
        f"{ROOT}.properties[value].default: Invalid value: \"nope\": failed rule: self.startsWith('kube')",
        f"{ROOT}.properties[object].default: Invalid value: failed rule: self.field1 < self.field2",
    ]


def test_nested_defaults_are_not_applied_first():
    """A default object missing a field whose own schema has a default: the rule still sees it
    missing ("no such key"), and the error carries the rule's message."""
    schema = _schema("kube-everything", {"field1": 1})
    schema["properties"]["object"]["properties"]["field2"]["default"] = 5
    schema["properties"]["object"]["x-kubernetes-validations"][0]["message"] = "field1 must be below field2"
    assert _errors(schema) == [
        f'{ROOT}.properties[object].default: Invalid value: "object": no such key: field2 evaluating rule: '
        "field1 must be below field2",
    ]


def test_rules_of_nested_nodes_run_on_the_parent_default():
    """A default on a parent carries its children's values: their rules run on them too."""
    schema = {
        "type": "object",
        "properties": {
            "outer": {
                "type": "object",
                "properties": copy.deepcopy(_schema("kube-x", {"field1": 1, "field2": 2})["properties"]),
                "default": {"value": "nope", "object": {"field1": 1, "field2": 2}},
            }
        },
    }
    del schema["properties"]["outer"]["properties"]["value"]["default"]
    del schema["properties"]["outer"]["properties"]["object"]["default"]
    assert _errors(schema) == [
        f"{ROOT}.properties[outer].default.value: "
        "Invalid value: \"nope\": failed rule: self.startsWith('kube')",
    ]


def test_transition_rules_see_the_default_as_old_value():
    """`self == oldSelf` passes on a default (first pass: oldSelf is the default; second: not run)."""
    schema = _schema("kube-everything", {"field1": 1, "field2": 2})
    schema["properties"]["object"]["x-kubernetes-validations"].append({"rule": "self == oldSelf"})
    assert _errors(schema) == []


def test_unknown_fields_in_a_default_are_refused():
    schema = _schema("kube-everything", {"field1": 1, "field2": 2, "field3": 3})
    options = Options()
    result = validate_validation(
        schema, "spec.validation", status_enabled=False, profile=KUBE_1_36, options=options
    )
    assert [str(e) for e in result.errors] == [
        f"{ROOT}.properties[object].default: "
        'Invalid value: {"field1": 1, "field2": 2, "field3": 3}: must not have unknown fields',
    ]
