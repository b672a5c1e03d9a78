"""The EvalSuite builder with spec.output and spec.analysis: a writable output mount and --output for
every pod; one more completion whose pods run the analysis program with arguments its own parser
accepts; an analysis.yaml that the trainer's checker accepts against the eval.yaml beside it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.builders.evalsuite import ANALYSIS_WAIT_S, build_evalsuite
from m2rl_operator.settings import OperatorOptions
from m2rl_trainer.analysis.cli import _parser
from m2rl_trainer.analysis.config import parse_analysis_config
from m2rl_trainer.eval.config import parse_eval_config

OPTIONS = OperatorOptions(metrics_port=None)
SPEC: dict[str, Any] = {
    "models": [
        {"name": "sft", "model": "pvc://models/sft"},
        {"name": "math", "model": "pvc://ckpt/runs/math/final"},
        {"name": "code", "model": "pvc://ckpt/runs/code/final"},
        {"name": "mixed", "model": "pvc://ckpt/runs/mixed/final"},
        {"name": "ties", "mergeRef": "ties"},
    ],
    "benchmarks": [
        {"name": "aime24", "dataset": {"uri": "pvc://data/aime24.jsonl"}, "verifier": {"type": "math"}},
        {"name": "lcb", "dataset": {"uri": "pvc://data/lcb.jsonl"}, "verifier": {"type": "code"}},
    ],
    "output": {"uri": "pvc://results/suite"},
    "analysis": {
        "sft": "sft",
        "mixed": "mixed",
        "merged": ["ties"],
        "domains": [
            {"name": "math", "benchmarks": ["aime24"], "expert": "math"},
            {"name": "code", "benchmarks": ["lcb"], "expert": "code"},
        ],
        "information": {"prompts": 8, "epsilon": 2.5},
        "prediction": {},
        "selfVerification": {"responsesFrom": "sft", "modes": ["outcome"]},
    },
}
RESOLVED = {"MergeJob/ties": "pvc://ckpt/merges/ties"}


def _build(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    config_map, job = build_evalsuite(
        EvalSuiteSpec.model_validate(spec), name="s", namespace="ns", resolved=RESOLVED, options=OPTIONS
    )
    return config_map, job


def test_the_analysis_pod_runs_the_analysis_program_with_valid_arguments_and_config() -> None:
    config_map, job = _build(SPEC)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "m2rl_trainer.analysis"]
    # The kubelet expands $(JOB_COMPLETION_INDEX) from the container's environment.
    assert "$(JOB_COMPLETION_INDEX)" in container["args"]
    assert any(e["name"] == "JOB_COMPLETION_INDEX" for e in container["env"])
    args = _parser().parse_args([a.replace("$(JOB_COMPLETION_INDEX)", "5") for a in container["args"]])
    assert (args.config, args.analysis) == (Path("/etc/m2rl/eval.yaml"), Path("/etc/m2rl/analysis.yaml"))
    assert (args.model_index, args.output) == (5, Path("/mnt/pvc/results/suite"))
    # Five evaluations and the analysis.
    assert (job["spec"]["completions"], job["spec"]["maxFailedIndexes"], job["spec"]["parallelism"]) == (
        6,
        6,
        1,
    )
    mounts = {m["mountPath"]: m["readOnly"] for m in container["volumeMounts"] if "pvc" in m["mountPath"]}
    assert mounts == {
        "/mnt/pvc/ckpt": True,
        "/mnt/pvc/data": True,
        "/mnt/pvc/models": True,
        "/mnt/pvc/results": False,
    }
    eval_config = parse_eval_config(yaml.safe_load(config_map["data"]["eval.yaml"]))
    raw = yaml.safe_load(config_map["data"]["analysis.yaml"])
    assert raw["wait_s"] == ANALYSIS_WAIT_S
    analysis = parse_analysis_config(raw, eval_config)  # names checked against eval.yaml
    assert analysis.experts == {"math": "math", "code": "code"}
    assert analysis.information_models() == ["math", "code", "mixed"]
    assert analysis.information is not None and analysis.information.epsilon == 2.5
    assert analysis.self_verification is not None and analysis.self_verification.modes == ["outcome"]
    assert analysis.prediction is not None and analysis.merged == ["ties"]


def test_output_without_analysis_keeps_m2rl_eval() -> None:
    spec = copy.deepcopy(SPEC)
    del spec["analysis"]
    config_map, job = _build(spec)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["m2rl-eval"]
    assert container["args"][-2:] == ["--output", "/mnt/pvc/results/suite"]
    assert job["spec"]["completions"] == 5 and "analysis.yaml" not in config_map["data"]
    del spec["output"]
    _, job = _build(spec)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert "--output" not in container["args"]
