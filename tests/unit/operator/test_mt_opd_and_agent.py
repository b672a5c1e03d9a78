"""MT-OPD teachers and agent domains in the operator's pure parts: reference resolution, the trainer
config and trainer Job of colocated teachers, the problems the trainer would refuse, the status."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.builders import build_rlvrrun, build_trainer_config, rlvrrun_problems
from m2rl_operator.builders.references import resolved_teachers, rlvrrun_references, teacher_models
from m2rl_operator.lifecycle import RunPlan
from m2rl_operator.render import render_objects
from m2rl_operator.settings import OperatorOptions
from m2rl_operator.status import RunObservation, run_status, waiting_status

HERE = Path(__file__).parent
OPTIONS = OperatorOptions(metrics_port=None)
CASE = list(yaml.safe_load_all((HERE / "cases" / "mt-opd.yaml").read_text()))
NOW = "2026-11-22T03:00:00Z"


def student(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(CASE[1]["spec"])
    spec["algorithm"]["teachers"] = [
        {"domains": ["math"], "runRef": "opd-math"},
        {"domains": ["code"], "mergeRef": "code-merge"},
        {"domains": ["science"], "model": "pvc://experts/science"},
    ]
    spec.update(changes)
    return spec


def test_references_resolve_in_teacher_order_and_status_keeps_them() -> None:
    spec = RLVRRunSpec.model_validate(student())
    assert rlvrrun_references(spec) == ["RLVRRun/opd-math", "MergeJob/code-merge"]
    resolved = {"RLVRRun/opd-math": "pvc://c/math/final", "MergeJob/code-merge": "pvc://c/merges/code"}
    models = teacher_models(spec, resolved)
    assert models == ["pvc://c/math/final", "pvc://c/merges/code", "pvc://experts/science"]
    # What the status holds rebuilds the same references: a started run never resolves again.
    assert resolved_teachers(spec, models) == resolved
    assert resolved_teachers(spec, None) is None
    assert resolved_teachers(spec, models[:2]) is None  # not all teachers: not started
    with pytest.raises(ValueError, match=r"teachers\[1\]: MergeJob/code-merge has not been resolved"):
        teacher_models(spec, {"RLVRRun/opd-math": "pvc://c/math/final"})
    plain = RLVRRunSpec.model_validate(CASE[0]["spec"])
    assert (rlvrrun_references(plain), resolved_teachers(plain, None)) == ([], {})


def test_colocated_teachers_are_loaded_by_the_trainer_from_read_only_mounts() -> None:
    spec = RLVRRunSpec.model_validate(
        {**student(), "rollout": {"mode": "colocated"}, "teacherServers": None, "queueName": None}
    )
    resolved = {
        "RLVRRun/opd-math": "pvc://checkpoints/runs/opd-math/final",
        "MergeJob/code-merge": "pvc://merges/code",
    }
    config = build_trainer_config(spec, name="opd", namespace="ns", options=OPTIONS, resolved=resolved)
    assert config["algorithm"]["name"] == "mt-opd"
    assert config["algorithm"]["teachers"] == [
        {"domains": ["math"], "model": "/mnt/pvc/checkpoints/runs/opd-math/final"},
        {"domains": ["code"], "model": "/mnt/pvc/merges/code"},
        {"domains": ["science"], "model": "/mnt/pvc/experts/science"},
    ]
    children = build_rlvrrun(spec, name="opd", namespace="ns", options=OPTIONS, resolved=resolved)
    assert not [c for c in children if c["kind"] == "StatefulSet"]  # no rollout, no teacher servers
    (job,) = [c for c in children if c["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    mounts = {
        m["mountPath"]: m["readOnly"] for m in container["volumeMounts"] if m["mountPath"].startswith("/mnt")
    }
    # The teachers' claims read-only; the claim the run writes its own checkpoints to stays writable.
    assert mounts == {
        "/mnt/pvc/checkpoints": False,
        "/mnt/pvc/datasets": True,
        "/mnt/pvc/experts": True,
        "/mnt/pvc/merges": True,
        "/mnt/pvc/models": True,
    }
    from m2rl_trainer.config import load_config

    assert load_config(copy.deepcopy(config)).algorithm.teacher_of() == {"math": 0, "code": 1, "science": 2}


def test_render_names_a_teacher_run_missing_from_the_input() -> None:
    rendered = render_objects([{**CASE[1], "spec": student()}, CASE[0]], OPTIONS)
    assert rendered.problems == ["RLVRRun/opd: references MergeJob/code-merge, which is not in the input"]


AGENT = yaml.safe_load((HERE / "cases" / "agent.yaml").read_text())


def test_agent_problems_the_trainer_would_refuse() -> None:
    spec = copy.deepcopy(AGENT["spec"])
    assert rlvrrun_problems(RLVRRunSpec.model_validate(spec)) == []
    spec["rollout"] = {"mode": "colocated"}
    spec["trainer"] = {"nodes": 1, "gpusPerNode": 2, "deepspeed": {"zeroStage": 3}}
    spec["agent"]["data"] = "hf://nvidia/workplace"
    problems = rlvrrun_problems(RLVRRunSpec.model_validate(spec))
    assert problems[0].startswith("spec.agent.data: hf://nvidia/workplace: the environment reads a folder")
    assert problems[1].startswith("spec.domains: agent episodes take a different number of turns")
    assert len(problems) == 2
    # Each way out the message names is accepted: ZeRO-2, one step off-policy, one rank.
    spec["agent"]["data"] = "pvc://datasets/workplace"
    for change in (
        {"trainer": {"gpusPerNode": 2, "deepspeed": {"zeroStage": 2}}},
        {"algorithm": {**spec["algorithm"], "offPolicySteps": 1}},
        {"trainer": {"gpusPerNode": 1, "deepspeed": {"zeroStage": 3}}},
    ):
        assert rlvrrun_problems(RLVRRunSpec.model_validate({**spec, **change})) == [], change


def test_agent_trainer_config_and_verifier_config() -> None:
    spec = RLVRRunSpec.model_validate(AGENT["spec"])
    config = build_trainer_config(spec, name="agent", namespace="ns", options=OPTIONS)
    assert [(d["name"], d["verifier"], d["verifier_options"]) for d in config["data"]["domains"]] == [
        ("math", "math", {}),
        ("agent", "workplace_assistant", {}),
    ]
    assert config["agent"] == {
        "environment_url": "http://agent-environment.ns.svc:8090",
        "max_turns": 4,
        "parallel_episodes": 8,
    }
    (config_map,) = [
        c
        for c in build_rlvrrun(spec, name="agent", namespace="ns", options=OPTIONS)
        if c["kind"] == "ConfigMap"
    ]
    assert yaml.safe_load(config_map["data"]["verifier.yaml"]) == {"verifiers": {"math": {}}}


def test_status_of_a_waiting_and_of_a_started_mt_opd_run() -> None:
    status = waiting_status({}, ["RLVRRun/opd-math"], [], 2, NOW)
    assert (status["phase"], status["waitingFor"]) == ("Waiting", ["RLVRRun/opd-math"])
    failed = waiting_status(status, [], ["RLVRRun/opd-math"], 2, NOW)
    assert (failed["phase"], failed["completionTime"], failed["conditions"][0]["reason"]) == (
        "Failed", NOW, "DependencyFailed",
    )  # fmt: skip
    raw = student(agent={"replicas": 2})
    raw["domains"].append(
        {"name": "agent", "dataset": {"uri": "pvc://d/a.jsonl"}, "verifier": {"type": "agent"}}
    )
    raw["algorithm"]["teachers"].append({"domains": ["agent"], "model": "pvc://e/agent"})
    spec = RLVRRunSpec.model_validate(raw)
    plan = RunPlan(action="keep", attempt=0, restarts=0, rollout_replicas=2, verifier_replicas=1)
    observed = RunObservation(
        job={"spec": {}, "status": {"active": 1}}, rollout_ready=2, verifier_ready=1,
        teachers_ready=(2, 1, 2, 2), environment_ready=2,
    )  # fmt: skip
    models = ["pvc://a", "pvc://b", "pvc://c", "pvc://d"]
    status = run_status(
        spec, observed, old=status, generation=2, now=NOW, plan=plan, final_model="pvc://f",
        checkpoint_uri=lambda step: f"pvc://c/{step}", teacher_models=models,
    )  # fmt: skip
    conditions = {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}
    assert conditions["WaitingForDependencies"][:2] == ("False", "DependenciesReady")
    assert conditions["TeachersReady"] == ("False", "ReplicasNotReady", "7/8 teacher vLLM servers ready")
    assert conditions["EnvironmentReady"] == ("True", "ReplicasReady", "2/2 agent environment pods ready")
    assert (status["teacherModels"], status["waitingFor"], status["phase"]) == (models, [], "Running")
