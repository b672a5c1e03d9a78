"""Builders: golden manifests per case, every manifest valid against the official Kubernetes
schemas, the trainer config accepted by the trainer's own loader, and the pure validation."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.api.yaml_io import iter_documents
from m2rl_operator.builders import build_trainer_config, rlvrrun_problems
from m2rl_operator.builders.trainer_config import final_model_uri
from m2rl_operator.render import render_objects
from m2rl_operator.settings import OperatorOptions
from tests.support.paths import REPO_ROOT

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
EXAMPLES = REPO_ROOT / "examples"
KUBE_VERSION = "1.33.0"
OPTIONS = OperatorOptions(metrics_port=None)  # the defaults `m2rl render` uses


def _load(*paths: Path) -> list[dict[str, Any]]:
    return [doc.content for path in paths for doc in iter_documents(path)]


def _suspended() -> list[dict[str, Any]]:
    (run,) = _load(EXAMPLES / "expert-run.yaml")
    run = copy.deepcopy(run)
    run["metadata"]["name"] = "paused"
    run["spec"]["suspend"] = True
    return [run]


# case id -> (input objects, label (or label=value) that selects the manifests the golden file holds)
CASES: dict[str, tuple[list[dict[str, Any]], str]] = {
    "mt-opd-server": (_load(HERE / "cases" / "mt-opd.yaml"), "m2rl.io/rlvrrun=opd"),
    "agent-domain": (_load(HERE / "cases" / "agent.yaml"), "m2rl.io/rlvrrun"),
    "single-node-expert": (_load(EXAMPLES / "expert-run.yaml"), "m2rl.io/rlvrrun"),
    "multi-node-mixed": (_load(EXAMPLES / "mixed-run.yaml"), "m2rl.io/rlvrrun"),
    "suspended": (_suspended(), "m2rl.io/rlvrrun"),
    "cpu-colocated": (_load(HERE / "cases" / "tiny-cpu.yaml"), "m2rl.io/rlvrrun"),
    "merge-ties": (_load(EXAMPLES / "expert-run.yaml", EXAMPLES / "merge.yaml"), "m2rl.io/mergejob"),
    "eval-suite": (_load(EXAMPLES), "m2rl.io/evalsuite"),
}


def _render(case: str) -> list[dict[str, Any]]:
    objects, selector = CASES[case]
    rendered = render_objects(objects, OPTIONS)
    assert rendered.problems == []
    label, _, value = selector.partition("=")
    labels = [m["metadata"]["labels"] for m in rendered.manifests]
    return [
        m
        for m, ls in zip(rendered.manifests, labels, strict=True)
        if label in ls and ls[label] in (value or ls[label])
    ]


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_manifests(case: str) -> None:
    manifests = _render(case)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("M2RL_UPDATE_GOLDEN") == "1":
        path.write_text(yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True))
    expected = list(yaml.safe_load_all(path.read_text()))
    assert manifests == expected


def _all_manifests() -> list[tuple[str, dict[str, Any]]]:
    every = render_objects(_load(EXAMPLES, HERE / "cases"), OPTIONS)
    assert every.problems == []
    cases = [m for case in sorted(CASES) for m in _render(case)]
    return [(f"{m['kind']}/{m['metadata']['name']}", m) for m in [*every.manifests, *cases]]


def test_every_manifest_is_valid_kubernetes() -> None:
    manifests = _all_manifests()
    checked: dict[str, int] = {}
    for identity, manifest in manifests:
        try:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{identity}: {'.'.join(map(str, exc.path))}: {exc.message}")
        checked[manifest["kind"]] = checked.get(manifest["kind"], 0) + 1
    # Every kind the operator creates was among them (counts: examples/ + tests' cases).
    assert sorted(checked) == [
        "ConfigMap", "Deployment", "Job", "NetworkPolicy", "PersistentVolumeClaim", "Service", "StatefulSet",
    ]  # fmt: skip
    assert len(manifests) == sum(checked.values()) > 100


@pytest.mark.parametrize(
    "case",
    [
        "single-node-expert",
        "multi-node-mixed",
        "suspended",
        "cpu-colocated",
        "mt-opd-server",
        "agent-domain",
    ],
)
def test_trainer_config_loads_in_the_trainer(case: str) -> None:
    """The trainer's own loader accepts the rendered file, and keeps every value the operator set."""
    from m2rl_trainer.config import load_config

    (config_map,) = [m for m in _render(case) if m["kind"] == "ConfigMap"]
    rendered = yaml.safe_load(config_map["data"]["trainer.yaml"])
    loaded = load_config(copy.deepcopy(rendered)).to_dict()

    def subset(part: Any, whole: Any, path: str) -> None:
        if isinstance(part, dict):
            for key, value in part.items():
                subset(value, whole[key], f"{path}.{key}")
        elif isinstance(part, list):
            assert len(part) == len(whole), path
            for i, (a, b) in enumerate(zip(part, whole, strict=True)):
                subset(a, b, f"{path}[{i}]")
        else:
            assert part == whole, path

    subset(rendered, loaded, "config")


def test_trainer_config_of_the_tiny_cpu_run() -> None:
    (run,) = _load(HERE / "cases" / "tiny-cpu.yaml")
    spec = RLVRRunSpec.model_validate(run["spec"])
    config = build_trainer_config(spec, name="tiny", namespace="research", options=OPTIONS)
    assert config == {
        "model": "/models/tiny",
        "output_dir": "/mnt/pvc/checkpoints/runs/tiny",
        "run_name": "tiny",
        "data": {
            "domains": [
                {
                    "name": "arith",
                    "dataset": "/mnt/pvc/datasets/arith/train.jsonl",
                    "verifier": "math",
                    "fields": {"prompt": "question", "reference": "solution", "id": "uid"},
                    "verifier_options": {},
                    "format": "jsonl",
                    "format_options": {},
                    "weight": 1.0,
                    "max_samples": None,
                }
            ],
            "mixing": "weighted",
            "chat_template": False,
            "system_prompt": None,
        },
        "algorithm": {
            "name": "dr_grpo",
            "group_size": 4,
            "prompts_per_step": 8,
            "learning_rate": 2e-6,
            "lr_schedule": "constant",
            "warmup_steps": 0,
            "lr_min_ratio": 0.0,
            "weight_decay": 0.0,
            "clip_low": 0.2,
            "clip_high": 0.2,
            "clip_ratio_c": None,
            "recompute_old_logprobs": False,
            "importance_sampling": "none",
            "importance_sampling_cap": 2.0,
            "importance_sampling_floor": 0.0,
            "kl_coef": 0.0,
            "kl_estimator": "k3",
            "entropy_coef": 0.0,
            "loss_aggregation": "seq-mean-token-sum-norm",
            "dynamic_sampling": False,
            "overlong_buffer_tokens": 0,
            "overlong_penalty": 1.0,
            "overlong_filtering": False,
            "normalize_advantage_std": False,
            "temperature": 1.0,
            "top_p": 1.0,
            "max_prompt_tokens": 64,
            "max_response_tokens": 16,
            "steps": 20,
            "update_epochs": 1,
            "mini_batches": 1,
            "off_policy_steps": 0,
            "micro_batch_size": 1,
            "max_grad_norm": 1.0,
            "seed": 0,
        },
        "deepspeed": {
            "zero_stage": 0,
            "offload_optimizer": False,
            "offload_params": False,
            "dtype": "float32",
        },
        "memory": {"gradient_checkpointing": True},  # the API's default reaches the trainer
        "rollout": {
            "mode": "colocated",
            "server_urls": [],
            "served_model_name": None,
            "weight_sync": "filesystem",
            "weight_sync_dir": None,
            "nccl_master_address": None,
            "nccl_port": 29600,
        },
        "rewards": {"service_url": "http://tiny-verifier.research.svc:8080"},
        "checkpoint": {"dir": "/mnt/pvc/checkpoints/runs/tiny/checkpoints", "every_steps": 10, "keep": 0},
        "metrics": {"jsonl": "metrics.jsonl", "prometheus_port": 9400, "final_scrape_timeout_s": 60.0},
    }
    assert final_model_uri("tiny", spec) == "pvc://checkpoints/runs/tiny/checkpoints/step-000020/model"


def test_multi_node_trainer_job_wiring() -> None:
    job = next(m for m in _render("multi-node-mixed") if m["kind"] == "Job")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-queue"
    spec = job["spec"]
    # Created suspended: with a queue label, Kueue unsuspends it on admission and owns `suspend`.
    assert (spec["completionMode"], spec["completions"], spec["parallelism"], spec["suspend"]) == (
        "Indexed", 2, 2, True,
    )  # fmt: skip
    assert spec["podFailurePolicy"] == {
        "rules": [{"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
    }
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == "mixed-trainer"
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env == {
        "MASTER_ADDR": "mixed-trainer-0.mixed-trainer.default.svc",
        "MASTER_PORT": "29500",
        "NNODES": "2",
        "NPROC_PER_NODE": "8",
        "WORLD_SIZE": "16",
        "NODE_RANK": {
            "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
        },
    }
    # Default requests (4 CPUs and 32 GiB per GPU): a GPU pod is never BestEffort.
    assert container["resources"] == {
        "limits": {"nvidia.com/gpu": 8},
        "requests": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": 8},
    }


def test_suspended_run_has_no_trainer_job_and_no_replicas() -> None:
    by_kind = {
        m["kind"]: m for m in _render("suspended") if m["kind"] in ("Job", "StatefulSet", "Deployment")
    }
    assert "Job" not in by_kind  # deleted while suspended; resuming recreates it (from the checkpoint)
    assert by_kind["StatefulSet"]["spec"]["replicas"] == 0
    assert by_kind["Deployment"]["spec"]["replicas"] == 0


def test_validation_problems_name_the_fields() -> None:
    (run,) = _load(HERE / "cases" / "tiny-cpu.yaml")
    assert rlvrrun_problems(RLVRRunSpec.model_validate(run["spec"])) == []
    bad = copy.deepcopy(run["spec"])
    bad["domains"][0]["dataset"]["uri"] = "hf://org/data"
    bad["domains"][0]["dataset"]["format"] = "gpqa"
    bad["algorithm"].update(normalizeAdvantageStd=True)
    bad["model"]["dtype"] = "float16"
    bad["rollout"] = {"mode": "server", "gpusPerReplica": 0, "weightSync": "nccl"}
    assert rlvrrun_problems(RLVRRunSpec.model_validate(bad)) == [
        "spec.domains[0].dataset.uri: hf://org/data: the trainer reads dataset files "
        "(.jsonl, .json, .parquet) from a volume; copy the Hub dataset to a pvc:// path",
        "spec.domains[0].dataset.format: gpqa is a benchmark format; training reads jsonl or nemotron",
        "spec.algorithm.normalizeAdvantageStd: the trainer ties it to the algorithm type (dr_grpo: false); "
        "choose the type instead",
        "spec.model.dtype: float16 is not supported by the trainer (use bfloat16 or float32)",
        "spec.rollout.weightSync: nccl needs GPUs; use filesystem with gpusPerReplica 0",
    ]


def test_every_program_the_pods_run_is_installed_by_the_trainer_image() -> None:
    """Commands in rendered containers: m2rl-* are console scripts of trainer-image/pyproject.toml
    that import; the others (torchrun, python) come with its dependencies."""
    import importlib
    import shutil
    import sys
    import tomllib

    scripts = tomllib.loads((REPO_ROOT / "trainer-image" / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    commands = {
        container["command"][0]
        for case in CASES
        for manifest in _render(case)
        if manifest["kind"] in ("Job", "StatefulSet", "Deployment")
        for container in manifest["spec"]["template"]["spec"]["containers"]
    }
    assert {"m2rl-eval", "m2rl-merge", "m2rl-verifier", "torchrun", "python"} <= commands
    for command in sorted(commands):
        if command.startswith("m2rl-"):
            module, _, function = scripts[command].partition(":")
            assert callable(getattr(importlib.import_module(module), function)), command
        else:
            assert shutil.which(command, path=str(Path(sys.executable).parent)), command


@pytest.mark.parametrize(
    "case", ["single-node-expert", "multi-node-mixed", "cpu-colocated", "mt-opd-server", "agent-domain"]
)
def test_verifier_config_loads_in_the_verifier(case: str) -> None:
    """verifier.yaml enables exactly the run's verifiers (the scorer starts a sandbox pool only for
    code; agent domains are verified by their environment), and the verifier's own loader accepts it."""
    from m2rl_trainer.rewards.scorer import ScorerConfig

    manifests = _render(case)
    (config_map,) = [m for m in manifests if m["kind"] == "ConfigMap"]
    (deployment,) = [
        m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-verifier")
    ]
    raw = yaml.safe_load(config_map["data"]["verifier.yaml"])
    owner = config_map["metadata"]["labels"]["m2rl.io/rlvrrun"]
    run = next(o for o in CASES[case][0] if o["kind"] == "RLVRRun" and o["metadata"]["name"] == owner)
    types = {d["verifier"]["type"] for d in run["spec"]["domains"]} - {"agent"}
    assert sorted(raw["verifiers"]) == sorted(types)
    assert sorted(ScorerConfig.from_dict(raw).verifiers or {}) == sorted(raw["verifiers"])
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][container["args"].index("--config") + 1] == "/etc/m2rl/verifier.yaml"
    assert ("--sandbox-workers" in container["args"]) == ("code" in raw["verifiers"])
