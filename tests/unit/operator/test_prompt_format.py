"""One prompt format per model, end to end (issue 12, item 6): an EvalSuite model given by runRef
(or a merge of runs) is evaluated with the format its run trained with unless the suite says
otherwise, the operator finds it on a cluster as `m2rl render` does offline, and the trainer's and
the evaluator's own config defaults agree."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import fields
from typing import Any

import pytest
import yaml

from m2rl_operator.api.offline import validate_object
from m2rl_operator.reconcile import prompt_formats
from m2rl_operator.render import render_objects, resolve_offline
from m2rl_operator.settings import OperatorOptions


def _run(name: str, chat: bool, system: str | None = None) -> dict[str, Any]:
    model: dict[str, Any] = {"uri": f"pvc://m/{name}", "chatTemplate": chat}
    if system:
        model["systemPrompt"] = system
    return {
        "apiVersion": "m2rl.io/v1alpha1", "kind": "RLVRRun", "metadata": {"name": name},
        "spec": {"model": model, "algorithm": {"steps": 10}, "domains": [
            {"name": "m", "dataset": {"uri": "pvc://d/m.jsonl"}, "verifier": {"type": "math"}},
        ]},
    }  # fmt: skip


def _merge(name: str, *runs: str) -> dict[str, Any]:
    return {
        "apiVersion": "m2rl.io/v1alpha1", "kind": "MergeJob", "metadata": {"name": name},
        "spec": {"method": "linear", "experts": [{"runRef": r} for r in runs], "output": {"uri": f"pvc://o/{name}"}},
    }  # fmt: skip


RUNS = [_run("raw", False), _run("raw2", False), _run("chat", True, "Think, then answer.")]
MERGES = [_merge("raw-merge", "raw", "raw2"), _merge("mixed-merge", "raw", "chat")]
MODELS = [
    {"name": "raw", "runRef": "raw"},
    {"name": "chat", "runRef": "chat"},
    {"name": "raw-merge", "mergeRef": "raw-merge"},
    {"name": "mixed-merge", "mergeRef": "mixed-merge"},
    {"name": "uri", "model": "pvc://m/base"},
    {"name": "forced", "runRef": "raw", "chatTemplate": True, "systemPrompt": "Be brief."},
    {"name": "no-system", "runRef": "chat", "chatTemplate": False},
]
SUITE = {
    "apiVersion": "m2rl.io/v1alpha1", "kind": "EvalSuite", "metadata": {"name": "suite"},
    "spec": {"models": MODELS, "benchmarks": [
        {"name": "b", "dataset": {"uri": "pvc://d/b.jsonl"}, "verifier": {"type": "math"}},
    ]},
}  # fmt: skip
EXPECTED = {
    "raw": (False, None),  # the run trained on raw prompts: evaluated on raw prompts
    "chat": (True, "Think, then answer."),  # ... with its chat template and system prompt
    "raw-merge": (False, None),  # merged runs that agree
    "mixed-merge": (True, None),  # merged runs that disagree: the API's default
    "uri": (True, None),  # a model URI: the API's default
    "forced": (True, "Be brief."),  # the suite's own values win
    "no-system": (False, None),  # no chat template, no system message
}


def _eval_models(objects: list[dict[str, Any]]) -> dict[str, tuple[bool, str | None]]:
    rendered = render_objects(objects, OperatorOptions(metrics_port=None))
    assert rendered.problems == []
    (config_map,) = [m for m in rendered.manifests if m["kind"] == "ConfigMap" and "eval.yaml" in m["data"]]
    models = yaml.safe_load(config_map["data"]["eval.yaml"])["models"]
    return {m["name"]: (m["chat_template"], m.get("system_prompt")) for m in models}


def test_models_are_evaluated_with_their_runs_prompt_format() -> None:
    assert _eval_models([*RUNS, *MERGES, SUITE]) == EXPECTED


class FakeKube:
    """The objects the operator reads, by kind and name (a MergeJob's runs included)."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    async def get_custom(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.objects.get((kind, name)))


def test_the_operator_finds_the_same_formats_as_render() -> None:
    keys = ["RLVRRun/raw", "RLVRRun/chat", "MergeJob/raw-merge", "MergeJob/mixed-merge"]
    found = asyncio.run(prompt_formats(FakeKube([*RUNS, *MERGES]), "default", keys))  # type: ignore[arg-type]
    offline = resolve_offline([*RUNS, *MERGES])
    assert found == {k: v for k, v in offline.items() if k.endswith("#format")}
    assert "MergeJob/mixed-merge#format" not in found  # its runs disagree


def test_a_system_prompt_needs_the_chat_template_set_here() -> None:
    suite = copy.deepcopy(SUITE)
    suite["spec"]["models"] = [{"name": "x", "runRef": "chat", "systemPrompt": "Hi."}]
    violations, _, _ = validate_object(suite)
    assert [v.path for v in violations] == ["spec.models[0].systemPrompt"]
    assert "systemPrompt needs chatTemplate: true (set here, not inherited)" in str(violations[0])


def test_trainer_and_evaluator_defaults_agree() -> None:
    from m2rl_trainer.config import DataConfig
    from m2rl_trainer.eval.config import ModelConfig, parse_eval_config

    data = {f.name: f.default for f in fields(DataConfig)}
    model = {f.name: f.default for f in fields(ModelConfig)}
    assert (model["chat_template"], model["system_prompt"]) == (data["chat_template"], data["system_prompt"])
    config = {
        "models": [{"name": "m", "path": "/m", "system_prompt": "S"}],
        "benchmarks": [{"name": "b", "dataset": "/b.jsonl", "verifier": "math"}],
    }
    with pytest.raises(ValueError, match=r"models\[0\].system_prompt: needs chat_template"):
        parse_eval_config(config)
