"""Each reason a real kube-apiserver rejected the m2rl CRDs, put back into a copy of today's CRD:
the admission check must reject it with the API server's own message (error path and text as
kubectl prints them)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from m2rl_operator.api.admission import check_crd
from m2rl_operator.api.crd import KINDS_BY_NAME, crd_manifest

ROOT = "spec.validation.openAPIV3Schema"
COST_HINT = (
    "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and "
    "strings are declared)"
)


def _crd(kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    crd = copy.deepcopy(crd_manifest(KINDS_BY_NAME[kind]))
    return crd, crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _lines(crd: dict[str, Any]) -> list[str]:
    report = check_crd(crd)
    assert not report.ok
    return report.lines()


@pytest.mark.parametrize("kind", ["RLVRRun", "MergeJob", "EvalSuite"])
def test_today_s_crds_are_accepted(kind: str):
    crd, _ = _crd(kind)
    assert check_crd(crd).lines() == []


@pytest.mark.parametrize("kind", ["RLVRRun", "MergeJob", "EvalSuite"])
def test_cause_1_root_rule_with_field_path_into_undeclared_metadata(kind: str):
    """The old root rules (`fieldPath: .metadata.name`) beside a metadata schema without properties
    (ValidFieldPath), and the old metadata description (validateStructuralMetadataInvariants)."""
    crd, schema = _crd(kind)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["x-kubernetes-validations"] = [
        {"rule": "self.metadata.name.size() <= 40", "message": "too long", "fieldPath": ".metadata.name"}
    ]
    assert _lines(crd) == [
        f'{ROOT}.x-kubernetes-validations[0].fieldPath: Invalid value: ".metadata.name": must be a valid path'
    ]
    schema["properties"]["metadata"]["description"] = "metadata is the standard object metadata."
    assert _lines(crd) == [
        f"{ROOT}.properties[metadata]: Forbidden: must not specify anything other than name and "
        f"generateName, "
        "but metadata is implicitly specified",
        f"{ROOT}.x-kubernetes-validations[0].fieldPath: "
        'Invalid value: ".metadata.name": must be a valid path',
    ]


def test_cause_2_string_of_a_number_in_a_message_expression():
    """The old MergeJob expert-count rules: `'...' + string(self.experts.size())` has no size bound."""
    crd, schema = _crd("MergeJob")
    rules = schema["properties"]["spec"]["x-kubernetes-validations"]
    index = next(
        i for i, r in enumerate(rules) if r["rule"] == "self.method != 'slerp' || self.experts.size() == 1"
    )
    rules[index]["messageExpression"] = (
        "'method slerp takes exactly 1 expert, got ' + string(self.experts.size())"
    )
    at = f"{ROOT}.properties[spec].x-kubernetes-validations[{index}].messageExpression"
    assert _lines(crd) == [
        f"{at}: Forbidden: estimated messageExpression cost exceeds budget by factor of more than "
        f"100x {COST_HINT}",
        f"{at}: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire "
        f"OpenAPIv3 schema",
        f"{ROOT}: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 "
        f"schema exceeds "
        f"budget by factor of more than 100x {COST_HINT}",
    ]


def test_cause_2_string_of_a_double_in_the_clip_high_message():
    crd, schema = _crd("RLVRRun")
    algorithm = schema["properties"]["spec"]["properties"]["algorithm"]
    (index,) = [
        i for i, r in enumerate(algorithm["x-kubernetes-validations"]) if r.get("fieldPath") == ".clipHigh"
    ]
    algorithm["x-kubernetes-validations"][index]["messageExpression"] = (
        "'clipHigh (' + string(has(self.clipHigh) ? self.clipHigh : 0.2) + ') must be >= clipLow'"
    )
    at = f"{ROOT}.properties[spec].properties[algorithm].x-kubernetes-validations[{index}].messageExpression"
    lines = _lines(crd)
    assert (
        f"{at}: Forbidden: estimated messageExpression cost exceeds budget by factor of more than "
        f"100x {COST_HINT}" in lines
    )


@pytest.mark.parametrize(
    ("kind", "field", "missing", "message"),
    [
        ("RLVRRun", "rollout", "gpusPerReplica",
         "tensorParallelSize must not exceed gpusPerReplica: each tensor-parallel shard needs its own GPU"),
        ("EvalSuite", "worker", "gpus",
         "tensorParallelSize must not exceed gpus: each tensor-parallel shard needs its own GPU"),
    ],
)  # fmt: skip
def test_cause_3_rules_evaluated_on_an_empty_default(kind: str, field: str, missing: str, message: str):
    """`default: {}` with rules reading fields: the API server evaluates them on the default as
    written, without nested defaults (defaulting/validation.go), and the field is missing."""
    crd, schema = _crd(kind)
    schema["properties"]["spec"]["properties"][field]["default"] = {}
    lines = _lines(crd)
    assert lines[0] == (
        f"{ROOT}.properties[spec].properties[{field}].default: "
        f'Invalid value: "object": no such key: {missing} '
        f"evaluating rule: {message}"
    )


def test_cause_3_nested_sub_model_default():
    """trainer.deepspeed: the rule reads offloadParams, absent from `{}`."""
    crd, schema = _crd("RLVRRun")
    schema["properties"]["spec"]["properties"]["trainer"]["properties"]["deepspeed"]["default"] = {}
    assert _lines(crd) == [
        f"{ROOT}.properties[spec].properties[trainer].properties[deepspeed].default: "
        'Invalid value: "object": no such key: offloadParams evaluating rule: '
        "offloadParams needs zeroStage 3: only ZeRO-3 partitions the parameters it could offload",
    ]


def test_printer_columns_are_checked():
    crd, _ = _crd("RLVRRun")
    crd["spec"]["versions"][0]["additionalPrinterColumns"][1]["type"] = "int"
    crd["spec"]["versions"][0]["additionalPrinterColumns"][2]["jsonPath"] = "spec.algorithm.steps"
    assert _lines(crd) == [
        'spec.additionalPrinterColumns[1].type: Invalid value: "int": '
        "must be one of boolean,date,integer,number,string",
        'spec.additionalPrinterColumns[2].JSONPath: Invalid value: "spec.algorithm.steps": '
        "must be a simple json path starting with .",
    ]
