"""Cardinality, the per-CRD total and the cost messages, against kube-apiserver's TestCostInfo and
TestPerCRDEstimatedCost (apiextensions-apiserver pkg/apis/apiextensions/validation/validation_test.go)
and `getCostErrorMessage` (validation.go)."""

from __future__ import annotations

from typing import Any

import pytest

from m2rl_operator.api.admission.decl import KUBE_1_36
from m2rl_operator.api.admission.limits import UINT64_MAX
from m2rl_operator.api.admission.schema_checks import (
    _CelContext,
    _TotalCost,
    cost_error_message,
    validate_validation,
)

OBJECT: dict[str, Any] = {"type": "object"}
ARRAY: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
UNBOUNDED = None

# TestCostInfo: (name, schemas from the root down, expected cardinality of a string leaf below them)
COST_INFO = [
    ("object", [OBJECT], 1),
    ("array", [{**ARRAY, "maxItems": 5}], 5),
    ("unbounded array", [ARRAY], UNBOUNDED),
    ("map", [{**MAP, "maxProperties": 10}], 10),
    ("unbounded map", [MAP], UNBOUNDED),
    ("array inside map", [{**MAP, "maxProperties": 5}, {**ARRAY, "maxItems": 5}], 25),
    ("unbounded array inside bounded map", [{**MAP, "maxProperties": 5}, ARRAY], UNBOUNDED),
    ("object inside array", [{**ARRAY, "maxItems": 3}, OBJECT], 3),
    ("map inside object inside array", [{**ARRAY, "maxItems": 2}, OBJECT, {**MAP, "maxProperties": 4}], 8),
    (
        "integer overflow bounds check",
        [{**ARRAY, "maxItems": 2**63 - 1}, {**ARRAY, "maxItems": 100}],
        UINT64_MAX,
    ),
]


@pytest.mark.parametrize(("name", "schemas", "expected"), COST_INFO, ids=[c[0] for c in COST_INFO])
def test_cost_info(name: str, schemas: list[dict[str, Any]], expected: int | None):
    ctx = _CelContext(schemas[0], None, False, 1, _TotalCost(), KUBE_1_36)
    for schema in [*schemas[1:], {"type": "string"}]:
        ctx = ctx.child_context(schema)
    assert ctx.max_cardinality == expected


# TestPerCRDEstimatedCost: (name, costs, expected most expensive, expected total)
PER_CRD = [
    ("no costs", [], [], 0),
    ("one cost", [1000000], [1000000], 1000000),
    ("one cost, ignored", [900000], [], 900000),
    ("2 costs", [5000000, 25000000], [25000000, 5000000], 30000000),
    ("3 costs, one ignored", [5000000, 25000000, 900000], [25000000, 5000000], 30900000),
    ("4 costs", [16000000, 50000000, 34000000, 50000000],
     [50000000, 50000000, 34000000, 16000000], 150000000),
    ("5 costs, one trimmed, one ignored", [16000000, 50000000, 900000, 34000000, 50000000, 50000001],
     [50000001, 50000000, 50000000, 34000000], 200900001),
    ("costs do not overflow", [UINT64_MAX // 2, UINT64_MAX // 2, 1, 10, 100, 1000],
     [UINT64_MAX // 2, UINT64_MAX // 2], UINT64_MAX),
]  # fmt: skip


@pytest.mark.parametrize(("name", "costs", "expensive", "total"), PER_CRD, ids=[c[0] for c in PER_CRD])
def test_per_crd_estimated_cost(name: str, costs: list[int], expensive: list[int], total: int):
    tracker = _TotalCost()
    for cost in costs:
        tracker.observe("p", cost)
    assert [c for _, c in tracker.most_expensive] == expensive
    assert tracker.total == total


def test_cost_messages_follow_get_cost_error_message():
    tail = (
        " (try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, "
        "and strings are declared)"
    )
    assert cost_error_message("estimated rule cost", 10_000_001, 10_000_000) == (
        "estimated rule cost exceeds budget by factor of 1.000000x" + tail
    )
    assert cost_error_message("estimated rule cost", 25_000_000, 10_000_000).endswith("factor of 2.5x" + tail)
    assert "more than 100x" in cost_error_message("estimated rule cost", 2**64 - 1, 10_000_000)


def test_total_limit_case_reports_the_api_servers_messages():
    """validation_test.go "forbid validation rules where cost total exceeds total limit", with the
    exact messages: the list items' rule exceeds both limits, the map's only contributes."""
    schema = {
        "type": "object",
        "properties": {
            "list": {
                "type": "array",
                "maxItems": 100000,
                "items": {
                    "type": "string", "maxLength": 5000,
                    "x-kubernetes-validations": [{"rule": "self.contains('keyword')"}],
                },
            },
            "map": {
                "type": "object",
                "maxProperties": 1000,
                "additionalProperties": {
                    "type": "string", "maxLength": 5000,
                    "x-kubernetes-validations": [{"rule": "self.contains('keyword')"}],
                },
            },
            "field": {"type": "integer", "x-kubernetes-validations": [{"rule": "self > 50 && self < 100"}]},
        },
    }  # fmt: skip
    result = validate_validation(schema, "spec.validation", status_enabled=False, profile=KUBE_1_36)
    # contains: ceil(20000 * 0.1) * ceil(7 * 0.1) = 2000 per string, plus `self`: 2001
    assert {c.path.split("properties[")[1][:4]: c.cost for c in result.costs if "field" not in c.path} == {
        "list": 2001 * 100000,
        "map]": 2001 * 1000,
    }
    root = "spec.validation.openAPIV3Schema"
    assert [str(e) for e in result.errors] == [
        f"{root}.properties[list].items.x-kubernetes-validations[0].rule: Forbidden: estimated rule "
        f"cost exceeds "
        "budget by factor of 20.0x (try simplifying the rule, or adding maxItems, maxProperties, and "
        "maxLength "
        "where arrays, maps, and strings are declared)",
        f"{root}.properties[list].items.x-kubernetes-validations[0].rule: Forbidden: contributed to "
        f"estimated "
        "rule cost total exceeding cost limit for entire OpenAPIv3 schema",
        f"{root}.properties[map].additionalProperties.x-kubernetes-validations[0].rule: Forbidden: "
        f"contributed "
        "to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema",
        f"{root}: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema "
        "exceeds budget by factor of 2.0x (try simplifying the rule, or adding maxItems, maxProperties, and "
        "maxLength where arrays, maps, and strings are declared)",
    ]
