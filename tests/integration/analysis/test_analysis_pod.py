"""The EvalSuite pods with an analysis, end to end on CPU (`hf` engine): indexes 0..n-1 evaluate the
models as m2rl-eval does, index n waits for their outputs, runs the three analyses on them and reports
a summary the operator turns into a valid status.analysis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from m2rl_operator.api.evalsuite import EvalAnalysisStatus
from m2rl_operator.status import eval_analysis
from m2rl_trainer.analysis.cli import main
from m2rl_trainer.data.toy_tasks import toy_splits, write_jsonl

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _variant(source: Path, out: Path, seed: int) -> Path:
    """The model with Gaussian noise on its MLP weights: another policy of the same tokenizer."""
    shutil.copytree(source, out)
    tensors = load_file(source / "model.safetensors")
    g = torch.Generator().manual_seed(seed)
    for name, t in tensors.items():
        if ".mlp." in name:
            tensors[name] = t + 0.02 * torch.randn(t.shape, generator=g)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


def test_the_analysis_pod_after_the_evaluation_pods(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plumbing end to end (the numbers are checked by tests/unit/analysis on known answers): the
    # untrained tiny model and two variants, so no SFT warm-up is needed.
    models = {
        "sft": tiny_model_dir,
        "expert": _variant(tiny_model_dir, tmp_path / "expert", 1),
        "mixed": _variant(tiny_model_dir, tmp_path / "mixed", 2),
    }
    write_jsonl(toy_splits("max3", 500, 8, seed=0)[1], tmp_path / "max3.jsonl")
    eval_yaml = tmp_path / "eval.yaml"
    eval_yaml.write_text(
        yaml.safe_dump(
            {
                "models": [{"name": n, "path": str(p), "chat_template": False} for n, p in models.items()],
                "benchmarks": [
                    {"name": "max3", "dataset": str(tmp_path / "max3.jsonl"), "verifier": "math",
                     "samples": 2, "max_response_tokens": 8}
                ],
                "sampling": {"temperature": 1.0, "topP": 1.0, "maxResponseTokens": 8, "seed": 0},
            }
        )
    )  # fmt: skip
    analysis_yaml = tmp_path / "analysis.yaml"
    analysis_yaml.write_text(
        yaml.safe_dump(
            {
                "domains": [{"name": "max3", "benchmarks": ["max3"], "expert": "expert"}],
                "sft": "sft",
                "mixed": "mixed",
                "prediction": {},
                "information": {"prompts": 3, "samples": 2, "max_response_tokens": 6},
                "self_verification": {"responses_from": "sft", "responses": 4, "max_response_tokens": 6},
                "wait_s": 0,
            }
        )
    )
    out = tmp_path / "out"
    message = tmp_path / "termination-log"
    monkeypatch.setenv("M2RL_RESULT_PATH", str(message))

    def pod(index: int) -> int:
        argv = ["--config", str(eval_yaml), "--analysis", str(analysis_yaml), "--model-index", str(index)]
        return main([*argv, "--output", str(out), "--engine", "hf"])

    # Before the evaluations: the analysis cannot run (here it may not wait), naming what it lacks.
    assert pod(3) == 1
    assert pod(4) == 2  # no such index
    for index, name in enumerate(models):
        assert pod(index) == 0
        assert json.loads(message.read_text())["model"] == name  # the evaluation's own message
        assert (out / name / "max3.samples.jsonl").is_file()
    assert pod(3) == 0

    result = json.loads(message.read_text())
    summary = result["analysis"]
    status = eval_analysis([result], "pvc://results/suite")
    assert status is not None and status["reportUri"] == "pvc://results/suite/_analysis/report.json"
    EvalAnalysisStatus.model_validate(status)
    assert {(k["sampler"], k["scorer"]) for k in summary["kl"]} == {("expert", "mixed"), ("mixed", "expert")}
    assert set(summary["gainCosine"]) == {"expert", "mixed"}
    assert summary["gainCosine"]["expert"] in (0.0, 1.0)  # the union of one expert is its own gain
    assert {(a["model"], a["mode"]) for a in summary["judgeAccuracy"]} == {
        (m, mode) for m in models for mode in ("outcome", "reasoning")
    }

    folder = out / "_analysis"
    report = json.loads((folder / "report.json").read_text())
    info = report["information"]["domains"]["max3"]
    assert info["trajectories"] == {"expert": 6, "mixed": 6}
    assert info["kl"]["expert"]["expert"] == 0.0 and info["kl"]["mixed"]["mixed"] == 0.0
    assert report["prediction"]["overall"]["prompts"] == 8
    sv = report["selfVerification"]["judges"]["sft"]["reasoning"]["max3"]
    assert sv["responses"] == 4 and sv["unparsed"] + round(sv["accuracy"] * 4) <= 4
    assert sorted(p.name for p in folder.glob("*.png")) == [
        "information-kl-max3.png", "information-kl-mean.png", "prediction-gain-cosine.png",
        "self-verification-accuracy.png",
    ]  # fmt: skip
    assert sorted(p.name for p in folder.glob("*.jsonl")) == ["judgements.jsonl", "trajectories.jsonl"]
    assert list(out.glob(".*partial*")) == []
