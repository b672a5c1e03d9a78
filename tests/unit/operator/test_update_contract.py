"""Admission of the fields this operator added (pod options, verifier isolation, EvalSuite
suspend with Kueue), checked by the offline admission (api.validation.SchemaValidator, which
evaluates the CRD's CEL rules as the API server does, transition rules on updates). What the
operator then does with each mutable field is in tests/integration/operator/test_operator_kmock.py."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from m2rl_operator.api.crd import KINDS_BY_NAME, object_schema
from m2rl_operator.api.validation import SchemaValidator

HERE = Path(__file__).parent
RUN = yaml.safe_load((HERE / "cases" / "tiny-cpu.yaml").read_text())
POD = {
    "labels": {"example.com/team": "rl"},
    "annotations": {"k8s.v1.cni.cncf.io/networks": "rdma-net"},
    "affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
    "imagePullSecrets": ["registry"],
    "serviceAccountName": "trainer-identity",
}


def _validator(kind: str) -> SchemaValidator:
    return SchemaValidator(object_schema(KINDS_BY_NAME[kind]))


def _messages(kind: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [f"{v.path}: {v.message}" for v in _validator(kind).validate(obj, old).violations]


def test_pod_options_are_accepted_and_immutable() -> None:
    run = copy.deepcopy(RUN)
    run["spec"]["pod"] = POD
    assert _messages("RLVRRun", run) == []
    changed = copy.deepcopy(run)
    changed["spec"]["pod"]["labels"]["example.com/team"] = "other"
    (message,) = _messages("RLVRRun", changed, run)
    assert message.startswith("spec.pod: ") and "spec.pod cannot change once the RLVRRun exists" in message
    # A mutable field changes freely next to it.
    scaled = copy.deepcopy(run)
    scaled["spec"]["verifier"]["replicas"] = 4
    assert _messages("RLVRRun", scaled, run) == []


def test_isolation_runtime_class_needs_a_runtime_class_name() -> None:
    run = copy.deepcopy(RUN)
    run["spec"]["verifier"]["isolation"] = "RuntimeClass"
    assert _messages("RLVRRun", run) == [
        "spec.verifier.runtimeClassName: Invalid value: (unset): isolation RuntimeClass needs "
        "runtimeClassName (e.g. gvisor)"
    ]
    run["spec"]["verifier"]["runtimeClassName"] = "gvisor"
    assert _messages("RLVRRun", run) == []
    run["spec"]["verifier"]["isolation"] = "Sandboxed"
    assert [m.split(":")[0] for m in _messages("RLVRRun", run)] == ["spec.verifier.isolation"]


def test_a_queued_eval_suite_cannot_be_suspended() -> None:
    suite = {
        "apiVersion": "m2rl.io/v1alpha1",
        "kind": "EvalSuite",
        "metadata": {"name": "ev", "namespace": "default"},
        "spec": {
            "models": [{"name": "base", "model": "file:///models/tiny"}],
            "benchmarks": [
                {"name": "arith", "dataset": {"uri": "pvc://d/a.jsonl"}, "verifier": {"type": "math"}}
            ],
            "suspend": True,
        },
    }
    assert _messages("EvalSuite", suite) == []
    suite["spec"]["queueName"] = "gpu"
    (message,) = _messages("EvalSuite", suite)
    assert message.startswith("spec.suspend: ") and "Kueue alone sets the suspend" in message
