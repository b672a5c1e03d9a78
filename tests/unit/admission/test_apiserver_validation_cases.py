"""The admission check against kube-apiserver's own test cases for CRD schema validation.

Each case of apiextensions-apiserver's TestValidateCustomResourceDefinitionValidation
(data/apiserver_validation_cases.yaml) runs through `validate_validation` with the case's options;
the errors (type and field path) must equal the Go test's expectations exactly. Cases using what the
port does not model must be refused, never passed.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.api.admission import KUBE_1_37, NOT_CHECKED, Options, validate_validation

CASES: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "data" / "apiserver_validation_cases.yaml").read_text()
)
RUN = [c for c in CASES if "excluded" not in c]
# validationMatch constructors of validation_test.go -> field.ErrorType.String()
TYPES = {
    "invalid": "Invalid value",
    "forbidden": "Forbidden",
    "required": "Required value",
    "unsupported": "Unsupported value",
}
OPTIONS = {
    "requireStructuralSchema": "require_structural_schema",
    "allowDefaults": "allow_defaults",
    "requireValidPropertyType": "require_valid_property_type",
    "requireAtomicSetType": "require_atomic_set_type",
    "requirePrunedDefaults": "require_pruned_defaults",
    "requireMapListKeysMapSetValidation": "require_map_list_keys_map_set_validation",
}


def _options(case: dict[str, Any]) -> Options:
    values = dict.fromkeys(OPTIONS.values(), False)  # Go's zero validationOptions
    for name, value in case["options"].items():
        values[OPTIONS[name]] = value
    return Options(**values)


def _errors(case: dict[str, Any]) -> list[Any]:
    # The test file is master's (Kubernetes 1.37 development): its metadata.name bound applies.
    result = validate_validation(
        case["schema"], "spec.validation", status_enabled=case["status_enabled"], profile=KUBE_1_37,
        options=_options(case),
    )  # fmt: skip
    return result.errors


def test_the_corpus_is_the_whole_go_table():
    assert len(CASES) == 119
    assert len(RUN) == 117
    assert sum("not_modelled" in c for c in RUN) == 7
    assert sum(bool(c["expected"]) for c in RUN) >= 60


@pytest.mark.parametrize("case", [c for c in RUN if "not_modelled" not in c], ids=lambda c: c["name"])
def test_errors_match_the_api_server(case: dict[str, Any]):
    errors = _errors(case)
    got = collections.Counter((e.type, e.field) for e in errors)
    expected = collections.Counter((TYPES[t], path) for t, path in case["expected"])
    assert got == expected, [str(e) for e in errors]


@pytest.mark.parametrize("case", [c for c in RUN if "not_modelled" in c], ids=lambda c: c["name"])
def test_what_is_not_modelled_is_refused(case: dict[str, Any]):
    assert any(e.type == NOT_CHECKED for e in _errors(case)), case["not_modelled"]
