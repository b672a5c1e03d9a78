"""The protocol example (examples/m2rl-qwen3-4b/) as the trainer image reads it: the study's
settings reach the trainer and evaluator configs the operator renders, and both accept them."""

from __future__ import annotations

from typing import Any

import yaml

from m2rl_operator.api.yaml_io import iter_documents
from m2rl_operator.render import render_objects
from m2rl_operator.settings import OperatorOptions
from m2rl_trainer.config import load_config
from m2rl_trainer.eval.config import parse_eval_config
from tests.support.paths import REPO_ROOT

FOLDER = REPO_ROOT / "examples" / "m2rl-qwen3-4b"


def _configs() -> dict[str, Any]:
    objects = [doc.content for path in sorted(FOLDER.glob("*.yaml")) for doc in iter_documents(path)]
    rendered = render_objects(objects, OperatorOptions(metrics_port=None))
    assert rendered.problems == []
    found = {}
    for manifest in rendered.manifests:
        if manifest["kind"] == "ConfigMap":
            for key, text in manifest["data"].items():
                found[f"{manifest['metadata']['name']}/{key}"] = yaml.safe_load(text)
    return found


def test_the_study_settings_reach_the_programs() -> None:
    configs = _configs()
    evaluation = parse_eval_config(configs["qwen3-4b-eval-config/eval.yaml"])
    s = evaluation.sampling
    assert (s.temperature, s.top_p, s.max_response_tokens) == (1.0, 0.7, 32768)
    samples = {b.name: b.samples for b in evaluation.benchmarks}
    assert (samples["aime24"], samples["gpqa-diamond"], samples["ifbench"]) == (16, 4, 1)
    assert {b.name: b.format for b in evaluation.benchmarks} == {
        "aime24": "aime24",
        "aime25": "aime25",
        "lcb-v5": "livecodebench",
        "lcb-v6": "livecodebench",
        "gpqa-diamond": "gpqa",
        "ifeval": "ifeval",
        "ifbench": "ifbench",
        "mmlu-redux": "mmlu_redux",
    }
    assert all(b.verifier_options["require_think_close"] for b in evaluation.benchmarks)  # the </think> gate
    runs = {key: load_config(value) for key, value in configs.items() if key.endswith("trainer.yaml")}
    assert len(runs) == 7
    for run in runs.values():
        for domain in run.data.domains:
            assert domain.format == "nemotron"
            if domain.verifier != "workplace_assistant":  # an agent domain's environment verifies
                assert domain.verifier_options["require_think_close"] is True
    mixed = next(r for k, r in runs.items() if "mixed" in k)
    assert [(d.name, d.verifier) for d in mixed.data.domains] == [
        ("math", "math"),
        ("code", "code"),
        ("science", "multiple_choice"),
        ("if", "ifeval"),
    ]
    code = next(d for d in mixed.data.domains if d.name == "code")
    assert code.verifier_options == {
        "require_think_close": True,
        "max_tests": 20,
        "timeout_s": 10.0,
        "memory_mb": 4096,
        "output_match": "strip",
    }


def test_the_mt_opd_run_reaches_the_trainer() -> None:
    """The MT-OPD run's teachers are the experts' final models, each behind its own vLLM servers;
    its agent domain runs against the run's environment service."""
    run = load_config(_configs()["qwen3-4b-mt-opd-config/trainer.yaml"])
    a = run.algorithm
    assert (a.name, a.learning_rate, a.prompts_per_step, a.group_size) == ("mt-opd", 1e-6, 256, 4)
    assert (a.max_response_tokens, a.weight_decay, a.recomputes_old_logprobs()) == (16384, 0.1, True)
    assert [(t.domains, t.served_model_name) for t in a.teachers] == [
        ([d], f"qwen3-4b-mt-opd-teacher-{i}")
        for i, d in enumerate(("math", "code", "science", "if", "agent"))
    ]
    assert a.teachers[0].server_urls == [
        "http://qwen3-4b-mt-opd-teacher-0-0.qwen3-4b-mt-opd-teacher-0.default.svc:8000"
    ]
    assert [(d.name, d.verifier) for d in run.data.domains][-1] == ("agent", "workplace_assistant")
    assert (run.agent.environment_url, run.agent.max_turns) == (
        "http://qwen3-4b-mt-opd-environment.default.svc:8090",
        6,
    )


def test_the_study_merges() -> None:
    merges = {
        doc.content["metadata"]["name"]: doc.content["spec"]
        for doc in iter_documents(FOLDER / "30-merges.yaml")
    }
    assert {e["density"] for e in merges["qwen3-4b-ties"]["experts"]} == {0.2}
    assert merges["qwen3-4b-ties"]["method"] == "mergelm_ties"  # MergeLM's TIES: whole-model trim
    assert {e["dareDensity"] for e in merges["qwen3-4b-dare"]["experts"]} == {0.8}  # drop 0.2
    assert merges["qwen3-4b-dare"]["method"] == "mergelm_task_arithmetic"  # a sum, 1/0.8 rescale
    dare_ties = merges["qwen3-4b-dare-ties"]["experts"]
    assert {(e["density"], e["dareDensity"]) for e in dare_ties} == {(0.2, 0.8)}
    assert merges["qwen3-4b-sce"]["method"] == "mergelm_sce"
    ta = merges["qwen3-4b-ta"]
    assert ta["parameters"] == {"normalize": False, "lambda": 1.0}  # a sum of task vectors
    assert {e["weight"] for e in ta["experts"]} == {1.0}
