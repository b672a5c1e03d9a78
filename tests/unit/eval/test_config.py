"""eval.yaml: the operator's rendering parses; every bad input is an error naming its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.render import render_objects
from m2rl_operator.settings import OperatorOptions
from m2rl_trainer.config import ConfigError, FieldMapping
from m2rl_trainer.eval.cli import main
from m2rl_trainer.eval.config import (
    BenchmarkConfig,
    EvalConfig,
    ModelConfig,
    SamplingConfig,
    VLLMOptions,
    load_eval_config,
    parse_eval_config,
)

SUITE: dict[str, Any] = {
    "apiVersion": "m2rl.io/v1alpha1",
    "kind": "EvalSuite",
    "metadata": {"name": "suite"},
    "spec": {
        "models": [
            {"name": "base", "model": "pvc://models/base"},
            {"name": "raw", "model": "file:///models/raw", "chatTemplate": False},
        ],
        "benchmarks": [
            {
                "name": "aime24",
                "dataset": {"uri": "pvc://data/aime24.jsonl", "fields": {"prompt": "problem", "id": "qid"}},
                "verifier": {"type": "math", "options": {"extract": ["boxed"]}},
                "samples": 8,
                "metrics": ["avg@k", "pass@4", "maj@k"],
            },
            {
                "name": "gpqa",
                "dataset": {"uri": "pvc://data/gpqa.jsonl"},
                "verifier": {"type": "multiple_choice"},
                "maxResponseTokens": 512,
            },
        ],
        "sampling": {"temperature": 0.7, "topP": 0.9, "maxResponseTokens": 1024, "seed": 5},
        "worker": {"gpus": 2, "tensorParallelSize": 2, "extraArgs": ["--max-num-seqs", "64"]},
    },
}


def _rendered_eval_yaml(suite: dict[str, Any]) -> Any:
    rendered = render_objects([suite], OperatorOptions(metrics_port=None))
    assert rendered.problems == []
    (config_map,) = [m for m in rendered.manifests if m["kind"] == "ConfigMap"]
    return yaml.safe_load(config_map["data"]["eval.yaml"])


def test_the_operators_rendering_parses_into_the_expected_config() -> None:
    config = parse_eval_config(_rendered_eval_yaml(SUITE))
    assert config == EvalConfig(
        models=[
            ModelConfig("base", "/mnt/pvc/models/base", chat_template=True),
            ModelConfig("raw", "/models/raw", chat_template=False),
        ],
        benchmarks=[
            BenchmarkConfig(
                name="aime24",
                dataset="/mnt/pvc/data/aime24.jsonl",
                verifier="math",
                fields=FieldMapping(prompt="problem", reference="answer", id="qid"),
                verifier_options={"extract": ["boxed"]},
                samples=8,
                metrics=["avg@k", "pass@4", "maj@k"],
                max_response_tokens=1024,  # the suite's, filled in by the operator
            ),
            BenchmarkConfig(
                name="gpqa",
                dataset="/mnt/pvc/data/gpqa.jsonl",
                verifier="multiple_choice",
                fields=FieldMapping(prompt="prompt", reference="answer", id=None),
                samples=1,
                metrics=["avg@k"],
                max_response_tokens=512,
            ),
        ],
        sampling=SamplingConfig(temperature=0.7, top_p=0.9, top_k=None, max_response_tokens=1024, seed=5),
        vllm=VLLMOptions(
            tensor_parallel_size=2, gpu_memory_utilization=0.9, extra_args=["--max-num-seqs", "64"]
        ),
    )


def test_the_example_suite_parses() -> None:
    from m2rl_operator.api.yaml_io import iter_documents
    from tests.support.paths import REPO_ROOT

    objects = [doc.content for doc in iter_documents(REPO_ROOT / "examples")]
    rendered = render_objects(objects, OperatorOptions(metrics_port=None))
    maps = [m for m in rendered.manifests if m["kind"] == "ConfigMap" and "eval.yaml" in m["data"]]
    assert maps, "the examples hold an EvalSuite"
    for config_map in maps:  # every example suite (the mix-vs-merge pipeline has its own)
        raw = yaml.safe_load(config_map["data"]["eval.yaml"])
        config = parse_eval_config(raw)
        assert [b.name for b in config.benchmarks] == [b["name"] for b in raw["benchmarks"]]


def _valid() -> dict[str, Any]:
    return {
        "models": [{"name": "m", "path": "/models/m", "chat_template": False}],
        "benchmarks": [
            {
                "name": "b",
                "dataset": "/data/b.jsonl",
                "fields": {"prompt": "prompt", "reference": "answer", "id": None},
                "verifier": "math",
                "verifier_options": {},
                "samples": 4,
                "metrics": ["avg@k", "pass@4"],
                "max_response_tokens": 16,
            }
        ],
        "sampling": {"temperature": 1.0, "topP": 1.0, "maxResponseTokens": 16, "seed": 0},
        "vllm": {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "extra_args": []},
    }


def _set(path: str, value: Any) -> dict[str, Any]:
    """The valid config with `path` (dotted, [i] for list items) set to value, or deleted if DELETE."""
    data = copy.deepcopy(_valid())
    *parents, last = path.replace("[", ".").replace("]", "").split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return data


DELETE = object()

BAD: dict[str, tuple[dict[str, Any], str]] = {
    "missing-model-path": (_set("models[0].path", DELETE), "models[0].path: required field is missing"),
    "missing-verifier": (
        _set("benchmarks[0].verifier", DELETE),
        "benchmarks[0].verifier: the jsonl format needs a verifier",
    ),
    "missing-dataset": (_set("benchmarks[0].dataset", DELETE), "benchmarks[0].dataset: required field"),
    "unknown-verifier": (
        _set("benchmarks[0].verifier", "maths"),
        "benchmarks[0].verifier: unknown verifier 'maths'; known: code, ifeval, math, multiple_choice",
    ),
    "bad-verifier-option": (
        _set("benchmarks[0].verifier_options", {"extract": ["boxd"]}),
        "benchmarks[0].verifier_options: ",
    ),
    "unknown-key": (_set("benchmarks[0].sample", 4), "benchmarks[0].sample: unknown field"),
    "wrong-type": (_set("benchmarks[0].samples", "four"), "benchmarks[0].samples: expected int, got 'four'"),
    "unknown-metric": (
        _set("benchmarks[0].metrics", ["acc@1"]),
        "benchmarks[0].metrics[0]: unknown metric 'acc@1'",
    ),
    "too-few-samples": (
        _set("benchmarks[0].metrics", ["avg@k", "pass@8"]),
        "benchmarks[0].metrics[1]: pass@8 needs at least 8 samples per prompt; samples is 4",
    ),
    "duplicate-metric": (
        _set("benchmarks[0].metrics", ["avg@k", "avg@k"]),
        "benchmarks[0].metrics[1]: duplicate",
    ),
    "greedy-with-samples": (
        _set("sampling.temperature", 0),
        "benchmarks[0].samples: 4 samples with sampling.temperature 0 would all be the same",
    ),
    "top-k": (_set("sampling.topK", 20), "sampling.top_k: not supported by the rollout engines"),
    "camel-and-snake": (_set("sampling.top_p", 0.5), "sampling.top_p: given twice"),
    "bad-top-p": (_set("sampling.topP", 0), "sampling.top_p: must be in (0, 1]"),
    "bad-name": (_set("models[0].name", "a/b"), "models[0].name: 'a/b' must be"),
    "no-models": (_set("models", []), "models: at least one model is required"),
    "models-not-a-list": (_set("models", {"name": "m"}), "models: expected a list"),
    "tp-zero": (_set("vllm.tensor_parallel_size", 0), "vllm.tensor_parallel_size: must be at least 1"),
}
_code_maj = _set("benchmarks[0].verifier", "code")
_code_maj["benchmarks"][0]["metrics"] = ["maj@k"]  # code reports no extracted answer to vote on
BAD["maj-without-answers"] = (_code_maj, "benchmarks[0].metrics[0]: maj@k votes on extracted answers")


def test_the_valid_base_parses() -> None:
    config = parse_eval_config(_valid())
    assert config.benchmarks[0].samples == 4
    assert config.sampling == SamplingConfig(temperature=1.0, top_p=1.0, max_response_tokens=16, seed=0)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_names_the_field(case: str) -> None:
    data, message = BAD[case]
    with pytest.raises(ConfigError) as error:
        parse_eval_config(data)
    assert message in str(error.value)


def test_model_index_out_of_range() -> None:
    config = parse_eval_config(_valid())
    assert config.model(0).name == "m"
    for index in (1, -1):
        with pytest.raises(
            ConfigError, match=rf"--model-index {index}: out of range; the config has 1 model"
        ):
            config.model(index)


def test_file_errors_start_with_the_file_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read config file"):
        load_eval_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML/JSON"):
        load_eval_config(broken)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(BAD["unknown-verifier"][0]))
    with pytest.raises(ConfigError, match=r"bad.yaml: benchmarks\[0\].verifier: unknown verifier"):
        load_eval_config(bad)


def test_the_cli_reports_config_errors_before_loading_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The model and dataset do not exist: the config error must come first, with exit status 2.
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(BAD["too-few-samples"][0]))
    assert main(["--config", str(path), "--model-index", "0", "--engine", "hf"]) == 2
    assert "benchmarks[0].metrics[1]: pass@8 needs at least 8 samples" in capsys.readouterr().err

    path.write_text(yaml.safe_dump(_valid()))
    assert main(["--config", str(path), "--model-index", "3"]) == 2
    assert "--model-index 3: out of range" in capsys.readouterr().err

    # A valid config: the missing dataset is reported before the (missing) model is looked at.
    assert main(["--config", str(path), "--model-index", "0", "--engine", "hf"]) == 2
    assert "/data/b.jsonl: cannot read dataset: file does not exist" in capsys.readouterr().err
