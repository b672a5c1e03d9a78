"""The MergeJob builder's container runs `m2rl-merge` with arguments its own parser accepts, with the
expert names the API defines, and a mergekit config that mergekit 0.1.5 runs (explicit weights)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.builders.mergejob import build_mergejob, expert_names
from m2rl_operator.settings import OperatorOptions
from m2rl_trainer.merge.cli import _parser
from m2rl_trainer.merge.config import check_merge_config

OPTIONS = OperatorOptions(metrics_port=None)
SPEC: dict[str, Any] = {
    "method": "task_arithmetic",
    "base": {"model": "pvc://models/base"},
    "experts": [
        {"name": "math", "model": "pvc://ckpt/runs/math/final", "weight": 0.7},
        {"runRef": "code-run"},
        {"mergeRef": "earlier-merge"},
        {"model": "hf://org/Science-Expert@v2"},
        {"model": "pvc://ckpt/other/final"},
        {"model": "file:///models/another/final/"},
        {"model": "pvc://whole-claim"},
    ],
    "output": {"uri": "pvc://ckpt/merges/m"},
}
RESOLVED = {
    "RLVRRun/code-run": "pvc://ckpt/runs/code-run/final",
    "MergeJob/earlier-merge": "pvc://ckpt/merges/earlier-merge",
}


def _container(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    config_map, job = build_mergejob(
        MergeJobSpec.model_validate(spec), name="m", namespace="ns", resolved=RESOLVED, options=OPTIONS
    )
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container, job, yaml.safe_load(config_map["data"]["merge.yaml"])


def test_names_follow_the_api_and_are_unique() -> None:
    spec = MergeJobSpec.model_validate(SPEC)
    assert expert_names(spec) == [
        "math", "code-run", "earlier-merge", "Science-Expert", "final", "final-2", "whole-claim",
    ]  # fmt: skip


def test_the_container_runs_m2rl_merge_with_arguments_its_parser_accepts() -> None:
    container, job, config = _container(SPEC)
    assert container["command"] == ["m2rl-merge"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    args = _parser().parse_args(container["args"])
    assert args.config == Path("/etc/m2rl/merge.yaml")
    assert args.output == Path("/mnt/pvc/ckpt/merges/m")
    assert args.expert_names == (
        "math", "code-run", "earlier-merge", "Science-Expert", "final", "final-2", "whole-claim",
    )  # fmt: skip
    assert (args.cuda, args.no_analysis) == (False, False)
    # Invalid input (exit 2) fails the Job at once; crashes and evictions are retried.
    assert job["spec"]["podFailurePolicy"]["rules"] == [
        {"action": "FailJob", "onExitCodes": {"containerName": "merge", "operator": "In", "values": [2]}}
    ]
    assert job["spec"]["backoffLimit"] == 2
    # One name per model of the config, in the same order.
    assert len(config["models"]) == len(args.expert_names)


@pytest.mark.parametrize(
    ("change", "flags"),
    [
        ({"worker": {"gpus": 1}}, ["--cuda"]),
        ({"analysis": {"enabled": False}}, ["--no-analysis"]),
        ({"worker": {"gpus": 2}, "analysis": {"enabled": False}}, ["--cuda", "--no-analysis"]),
    ],
    ids=["gpu", "no-analysis", "both"],
)
def test_gpu_and_analysis_switches(change: dict[str, Any], flags: list[str]) -> None:
    container, _, _ = _container({**copy.deepcopy(SPEC), **change})
    end = container["args"].index("--expert-names")
    assert container["args"][4:end] == flags
    args = _parser().parse_args(container["args"])
    assert args.cuda == ("--cuda" in flags)
    assert args.no_analysis == ("--no-analysis" in flags)


def test_unset_weights_are_written_as_one_and_the_config_passes_the_trainers_check() -> None:
    _, _, config = _container(SPEC)
    assert [m["parameters"] for m in config["models"]] == [{"weight": 0.7}] + [{"weight": 1.0}] * 6
    loaded = check_merge_config(config, path=Path("merge.yaml"))  # paths are checked in the pod
    assert loaded.method == "task_arithmetic"
    # Methods that read no weight get none (mergekit would ignore it; the checker would refuse it).
    sce = {**copy.deepcopy(SPEC), "method": "sce"}
    for e in sce["experts"]:
        e.pop("weight", None)
    _, _, config = _container(sce)
    assert all("parameters" not in m for m in config["models"])
    check_merge_config(config, path=Path("merge.yaml"))


def test_analysis_thresholds_and_the_base_of_a_plain_average() -> None:
    container, _, config = _container({**copy.deepcopy(SPEC), "analysis": {"eta": 0.0, "projectionDims": 64}})
    args = _parser().parse_args(container["args"])
    assert (args.eta, args.projection_dims, args.analysis_base) == (0.0, 64, None)
    assert config["base_model"] == "/mnt/pvc/models/base"
    # linear ignores a base: mergekit would average it in, so it goes to the analysis only.
    linear = {**copy.deepcopy(SPEC), "method": "linear"}
    container, _, config = _container(linear)
    args = _parser().parse_args(container["args"])
    assert "base_model" not in config
    assert (args.eta, args.projection_dims, args.analysis_base) == (1e-3, 256, "/mnt/pvc/models/base")
    check_merge_config(config, path=Path("merge.yaml"))
