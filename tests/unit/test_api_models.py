"""The pydantic models are the single source: presets resolve as the CEL rules assume, the merge
table matches mergekit, and status objects the operator writes pass the CRD's status schema."""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from m2rl_operator.api import cel
from m2rl_operator.api.algorithm import PRESETS, AlgorithmSpec, resolve_algorithm
from m2rl_operator.api.common import Condition
from m2rl_operator.api.crd import KINDS_BY_NAME, object_schema
from m2rl_operator.api.evalsuite import (
    EvalAnalysisStatus,
    EvalResult,
    EvalSuiteStatus,
    JudgeAccuracy,
    KLPair,
)
from m2rl_operator.api.merge_methods import EXPERT_PARAMETERS, GLOBAL_PARAMETERS, MERGE_METHODS
from m2rl_operator.api.mergejob import AnalysisStatus, CosinePair, MergeJobStatus
from m2rl_operator.api.rlvrrun import CheckpointStatus, DomainStatus, RLVRRunSpec, RLVRRunStatus
from m2rl_operator.api.schema import model_schema
from m2rl_operator.api.validation import SchemaValidator

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("type_", ["grpo", "dapo", "dr_grpo"])
def test_presets_resolve(type_: str):
    resolved = resolve_algorithm(AlgorithmSpec(type=type_, steps=10))
    expected = {
        "grpo": (0.2, 0.2, 0.0, "seq-mean-token-mean", False, 0, True),
        "dapo": (0.2, 0.28, 0.0, "token-mean", True, 4096, True),
        "dr_grpo": (0.2, 0.2, 0.0, "seq-mean-token-sum-norm", False, 0, False),
    }[type_]
    assert (
        resolved.clip_low,
        resolved.clip_high,
        resolved.kl_coef,
        resolved.loss_aggregation,
        resolved.dynamic_sampling,
        resolved.overlong_buffer_tokens,
        resolved.normalize_advantage_std,
    ) == expected
    # Explicit values win over the preset.
    explicit = resolve_algorithm(AlgorithmSpec(type=type_, steps=10, clip_high=0.5, dynamic_sampling=False))
    assert (explicit.clip_high, explicit.dynamic_sampling) == (0.5, False)


def _algorithm_rule(fragment: str) -> dict[str, Any]:
    schema = model_schema(AlgorithmSpec)
    (rule,) = [r for r in schema["x-kubernetes-validations"] if fragment in r["rule"]]
    return rule


@pytest.mark.parametrize(
    ("type_", "clip_low", "clip_high"),
    list(itertools.product(["grpo", "dapo", "dr_grpo"], [None, 0.1, 0.25, 0.3], [None, 0.15, 0.26, 0.3])),
)
def test_clip_rule_agrees_with_preset_resolution(type_, clip_low, clip_high):
    """The CEL rule inlines PRESETS; it must accept exactly what resolve_algorithm finds consistent."""
    spec: dict[str, Any] = {"type": type_, "steps": 10}
    if clip_low is not None:
        spec["clipLow"] = clip_low
    if clip_high is not None:
        spec["clipHigh"] = clip_high
    resolved = resolve_algorithm(AlgorithmSpec.model_validate(spec))
    schema = model_schema(AlgorithmSpec)
    outcome = cel.check_rule(_algorithm_rule(">= (has(self.clipLow)")["rule"], cel.to_cel(spec, schema))
    assert outcome.passed == (resolved.clip_high >= resolved.clip_low)


@pytest.mark.parametrize(
    ("type_", "max_response", "ok"),
    [
        ("dapo", 4096, False),
        ("dapo", 4097, True),
        ("grpo", 1, True),
        ("dr_grpo", 64, True),
    ],
)
def test_overlong_rule_agrees_with_preset_resolution(type_, max_response, ok):
    spec = {"type": type_, "steps": 10, "maxResponseTokens": max_response}
    resolved = resolve_algorithm(AlgorithmSpec.model_validate(spec))
    assert (resolved.overlong_buffer_tokens < max_response) == ok
    rule = _algorithm_rule("< self.maxResponseTokens")["rule"]
    assert cel.check_rule(rule, cel.to_cel(spec, model_schema(AlgorithmSpec))).passed == ok


def test_every_preset_field_exists_on_the_spec():
    for name, preset in PRESETS.items():
        for field in preset.__dataclass_fields__:
            assert field in AlgorithmSpec.model_fields, (name, field)


def test_models_reject_what_the_schema_rejects():
    """Parsing in the operator (pydantic) and admission (schema) agree on types, ranges, patterns."""
    good = {
        "model": {"uri": "pvc://m/x"},
        "domains": [{"name": "math", "dataset": {"uri": "pvc://d/x"}, "verifier": {"type": "math"}}],
        "algorithm": {"steps": 1},
    }
    RLVRRunSpec.model_validate(good)
    for bad_path, value in [
        (("model", "uri"), "s3://x/y"),
        (("algorithm", "steps"), 0),
        (("algorithm", "topP"), 1.5),
        (("domains", 0, "name"), "Math"),
        (("algorithm", "learningrate"), 1.0),
    ]:
        bad = copy.deepcopy(good)
        target: Any = bad
        for key in bad_path[:-1]:
            target = target[key]
        target[bad_path[-1]] = value
        with pytest.raises(ValidationError):
            RLVRRunSpec.model_validate(bad)


def test_merge_method_table_matches_mergekit():
    """MERGE_METHODS mirrors the registry of the installed mergekit (0.1.5): base policy, expert
    counts and parameter names, so the CRD rejects exactly what mergekit would ignore or refuse."""
    from mergekit.merge_methods.base import ParameterScope
    from mergekit.merge_methods.registry import registered_methods

    from m2rl_trainer.merge.methods import INTERNAL_PARAMETERS, register_study_methods

    register_study_methods()  # what m2rl-merge does before it reads a config
    registry = {m.spec.name: m.spec for m in registered_methods()}
    for name, method in MERGE_METHODS.items():
        spec = registry[name]
        contract = spec.contract
        assert method.base == contract.base.value, name
        base_inputs = 1 if method.base == "required" else 0
        assert method.min_experts == max(contract.min_inputs - base_inputs, contract.min_non_base or 0, 1), (
            name
        )
        max_inputs = None if contract.max_inputs is None else contract.max_inputs - base_inputs
        max_non_base = contract.max_non_base
        assert method.max_experts == (max_non_base if max_non_base is not None else max_inputs), name
        # Parameters m2rl-merge computes (a seed, whole-model trim thresholds) are not the API's.
        shared = {p.name for p in spec.parameters if p.scope == ParameterScope.SHARED} - INTERNAL_PARAMETERS
        per_expert = {
            p.name for p in spec.parameters if p.scope != ParameterScope.SHARED
        } - INTERNAL_PARAMETERS
        assert {GLOBAL_PARAMETERS[p] for p in method.global_params} == shared, name
        assert {EXPERT_PARAMETERS[p] for p in method.expert_params} == per_expert, name
        if spec.reference_url:
            assert method.paper == spec.reference_url, name
        required = {p.name for p in spec.parameters if p.scope == ParameterScope.SHARED and p.required}
        assert {GLOBAL_PARAMETERS[p] for p in method.required_global} == required, name


def _check_status(kind: str, status: dict[str, Any]) -> None:
    schema = object_schema(KINDS_BY_NAME[kind])["properties"]["status"]
    result = SchemaValidator(schema, kubernetes_object=False).validate(status)
    assert [str(v) for v in result.violations] == []
    assert result.defaulted == status  # nothing pruned: every field the model writes is in the schema


def test_status_models_fit_the_status_schema():
    condition = Condition(
        type="Succeeded",
        status="True",
        reason="TrainingDone",
        message="200 steps",
        last_transition_time=NOW,
        observed_generation=1,
    )
    run = RLVRRunStatus(
        phase="Running",
        conditions=[condition],
        observed_generation=1,
        start_time=NOW,
        step=120,
        total_steps=200,
        restarts=0,
        latest_checkpoint=CheckpointStatus(uri="pvc://c/runs/a/step-000100", step=100, time=NOW),
        domains=[DomainStatus(name="math", reward=0.42, accuracy=0.42, samples=15360)],
    ).to_dict()
    assert run["latestCheckpoint"] == {
        "uri": "pvc://c/runs/a/step-000100",
        "step": 100,
        "time": "2026-11-22T12:00:00Z",
    }
    assert run["conditions"][0]["lastTransitionTime"] == "2026-11-22T12:00:00Z"
    _check_status("RLVRRun", run)

    merge = MergeJobStatus(
        phase="Succeeded",
        output_model="pvc://c/merges/ties",
        waiting_for=[],
        analysis=AnalysisStatus(
            report_uri="pvc://c/merges/ties/analysis.json",
            task_vector_norms={"math": 3.5},
            pairwise_cosine=[
                CosinePair(
                    first="math",
                    second="code",
                    cosine=0.07,
                    projected_cosine=0.05,
                    jaccard=0.2,
                    jaccard_random=0.11,
                )
            ],
            update_fraction={"math": 0.3},
            sign_conflict_fraction=0.31,
            eta=0.001,
        ),
    ).to_dict()
    _check_status("MergeJob", merge)

    suite = EvalSuiteStatus(
        phase="Running",
        cells_total=2,
        cells_succeeded=1,
        results=[
            EvalResult(
                model="mixed", benchmark="aime24", phase="Succeeded", metrics={"avg@k": 0.31}, prompts=30
            )
        ],
        analysis=EvalAnalysisStatus(
            report_uri="pvc://results/suite/_analysis/report.json",
            kl=[KLPair(sampler="math", scorer="mixed", kl=3.2, neighbour=False)],
            epsilon=1.0,
            gain_cosine={"mixed": 0.8},
            judge_accuracy=[JudgeAccuracy(model="mixed", mode="outcome", accuracy=0.7)],
        ),
    ).to_dict()
    _check_status("EvalSuite", suite)


def test_condition_reason_must_be_a_word():
    with pytest.raises(ValidationError):
        Condition(type="Ready", status="True", reason="two words", message="", last_transition_time=NOW)


def test_api_and_cli_import_without_torch_or_kopf():
    """The API (and `m2rl validate`) must work where only the operator is installed."""
    code = (
        "import sys, m2rl_operator.api, m2rl_operator.cli; "
        "print(sorted(m for m in ('torch', 'kopf', 'mergekit', 'm2rl_trainer') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
