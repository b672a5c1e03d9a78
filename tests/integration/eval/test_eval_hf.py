"""`m2rl-eval` end to end on CPU with the `hf` engine: a model that is right some of the time,
two benchmarks, and every number checked against the per-sample records."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.kube import results_of_pods
from m2rl_operator.status import eval_results_table
from m2rl_trainer.data.toy_tasks import write_jsonl
from m2rl_trainer.eval.cli import main


def _write_config(tmp_path: Path, model: Path, heldout: list[dict[str, str]]) -> Path:
    write_jsonl(heldout, tmp_path / "max3.jsonl")
    # The same questions under other column names, with ids: the field mapping and verifier options
    # reach the datasets module and the scorer.
    renamed = [
        {"qid": f"q{i}", "question": r["prompt"], "gold": r["answer"]} for i, r in enumerate(heldout[:10])
    ]
    (tmp_path / "renamed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in renamed))
    config = {
        "models": [{"name": "sft", "path": str(model), "chat_template": False}],
        "benchmarks": [
            {
                "name": "max3",
                "dataset": str(tmp_path / "max3.jsonl"),
                "fields": {"prompt": "prompt", "reference": "answer", "id": None},
                "verifier": "math",
                "verifier_options": {},
                "samples": 4,
                "metrics": ["avg@k", "pass@1", "pass@2", "pass@k", "maj@k", "maj@2"],
                "max_response_tokens": 8,
            },
            {
                "name": "renamed",
                "dataset": str(tmp_path / "renamed.jsonl"),
                "fields": {"prompt": "question", "reference": "gold", "id": "qid"},
                "verifier": "math",
                "verifier_options": {"extract": ["boxed"]},
                "samples": 2,
                "metrics": ["avg@k", "pass@k"],
                "max_response_tokens": 6,
            },
        ],
        # camelCase, as the operator renders this section
        "sampling": {"temperature": 1.0, "topP": 1.0, "maxResponseTokens": 16, "seed": 0},
        "vllm": {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "extra_args": []},
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _by_prompt(records: list[dict[str, Any]], key: str) -> list[list[Any]]:
    rows: dict[str, list[Any]] = {}
    for record in records:
        rows.setdefault(record["prompt_id"], []).append(record[key])
    return list(rows.values())


def test_hf_engine_end_to_end(
    tmp_path: Path, max3_sft_model: Path, max3_heldout: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _write_config(tmp_path, max3_sft_model, max3_heldout)
    message = tmp_path / "termination-log"
    monkeypatch.setenv("M2RL_RESULT_PATH", str(message))
    argv = ["--config", str(config), "--model-index", "0", "--engine", "hf"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 0

    # The termination message: a positional row per benchmark (prompts, then the metric values in
    # the benchmark's order), in the suite's order: what the operator decodes with the spec.
    result = json.loads(message.read_text())
    layout = [(b["name"], b["metrics"]) for b in yaml.safe_load(config.read_text())["benchmarks"]]
    assert result["model"] == "sft"
    assert [len(row) for row in result["cells"]] == [1 + len(names) for _, names in layout]
    max3, renamed = (
        {"prompts": row[0], "metrics": dict(zip(names, row[1:], strict=True))}
        for (_, names), row in zip(layout, result["cells"], strict=True)
    )
    assert (max3["prompts"], renamed["prompts"]) == (24, 10)

    # Outputs: one directory per model, nothing partial left beside it; the sample cache.
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [".cache", "sft"]
    assert sorted(p.name for p in (out / "sft").iterdir()) == [
        "max3.samples.jsonl",
        "renamed.samples.jsonl",
        "results.json",
        "results.md",
        "results.png",
    ]
    full = json.loads((out / "sft" / "results.json").read_text())
    assert full["engine"] == "hf"
    assert full["sampling"] == {
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": None,
        "max_response_tokens": 16,
        "seed": 0,
    }

    # Every metric recomputed by hand from the per-sample records.
    records = _records(out / "sft" / "max3.samples.jsonl")
    assert len(records) == 24 * 4
    assert [(r["prompt_id"], r["sample"]) for r in records] == [
        (str(i), j) for i in range(24) for j in range(4)
    ]
    rewards = _by_prompt(records, "reward")
    correct = [sum(r == 1.0 for r in row) for row in rewards]
    metrics = full["results"][0]["metrics"]
    avg = sum(map(sum, rewards)) / 96
    assert 0 < avg < 1, "the warmed-up model is right on some samples, not all"
    assert metrics["avg@k"] == pytest.approx(avg)
    assert metrics["pass@1"] == pytest.approx(avg)  # 0/1 rewards
    assert metrics["pass@2"] == pytest.approx(sum(1 - math.comb(4 - c, 2) / 6 for c in correct) / 24)
    assert metrics["pass@k"] == pytest.approx(sum(c > 0 for c in correct) / 24)
    assert metrics["pass@k"] >= metrics["pass@2"] >= metrics["avg@k"]
    answers = _by_prompt(records, "answer")

    def majority(rows: list[list[Any]], answers_: list[list[Any]], n: int) -> float:
        total = 0.0
        for row, votes in zip(rows, answers_, strict=True):
            counts = Counter(a for a in votes[:n] if a is not None)
            if counts:
                top = max(counts.values())
                winners = [a for a, c in counts.items() if c == top]
                total += sum(row[votes.index(a)] for a in winners) / len(winners)
        return total / len(rows)

    assert metrics["maj@k"] == pytest.approx(majority(rewards, answers, 4))
    assert metrics["maj@2"] == pytest.approx(majority(rewards, answers, 2))
    for record in records:
        assert record["verdict"] in ("correct", "incorrect", "no_answer")
        assert record["reward"] == (1.0 if record["verdict"] == "correct" else 0.0)
        assert record["response_tokens"] <= 8  # the benchmark's own limit, not the suite's 16
    assert full["results"][0]["verdicts"] == dict(Counter(r["verdict"] for r in records))
    # The termination message is results.json's summary, rounded to 6 decimals.
    assert max3["metrics"] == {k: round(v, 6) for k, v in metrics.items()}

    # The second benchmark: ids from the mapped column, its own k and token limit.
    renamed_records = _records(out / "sft" / "renamed.samples.jsonl")
    assert [(r["prompt_id"], r["sample"]) for r in renamed_records] == [
        (f"q{i}", j) for i in range(10) for j in range(2)
    ]
    assert all(r["response_tokens"] <= 6 for r in renamed_records)
    renamed_rewards = _by_prompt(renamed_records, "reward")
    assert full["results"][1]["metrics"]["avg@k"] == pytest.approx(sum(map(sum, renamed_rewards)) / 20)
    assert full["results"][1]["metrics"]["pass@k"] == pytest.approx(sum(max(r) for r in renamed_rewards) / 10)

    # The operator turns the message into Succeeded cells of the EvalSuite's table.
    pod = {
        "metadata": {
            "labels": {"job-name": "suite-eval"},
            "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [{"state": {"terminated": {"message": message.read_text()}}}],
        },
    }
    table = eval_results_table(
        ["sft"],
        layout,
        results_of_pods([pod], "suite-eval"),
        job_phase="Running",
        old={},
        now="t",
    )
    assert [(c["benchmark"], c["phase"], c["prompts"], c["metrics"]) for c in table] == [
        ("max3", "Succeeded", 24, max3["metrics"]),
        ("renamed", "Succeeded", 10, renamed["metrics"]),
    ]

    # The same seed gives the same samples (into a second directory, with a cache of its own).
    assert main([*argv, "--output", str(tmp_path / "again")]) == 0
    assert _records(tmp_path / "again" / "sft" / "max3.samples.jsonl") == records
    assert json.loads(message.read_text()) == result
    assert [r["generated"] for r in full["results"]] == [96, 20]

    # Run again into the first directory: everything comes from the cache, nothing is generated.
    assert main([*argv, "--output", str(out)]) == 0
    rerun = json.loads((out / "sft" / "results.json").read_text())
    assert [r["generated"] for r in rerun["results"]] == [0, 0]
    assert [r["metrics"] for r in rerun["results"]] == [r["metrics"] for r in full["results"]]
    assert _records(out / "sft" / "max3.samples.jsonl") == records


def test_check_validates_the_data_without_a_model(
    tmp_path: Path, max3_heldout: list[dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_config(tmp_path, tmp_path / "no-such-model", max3_heldout)
    assert main(["--config", str(config), "--model-index", "0", "--check"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "config": str(config),
        "model": "sft",
        "prompts": {"max3": 24, "renamed": 10},
    }


def test_a_bad_reference_is_reported_before_the_model_is_loaded(
    tmp_path: Path, max3_heldout: list[dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [dict(r) for r in max3_heldout]
    config = _write_config(tmp_path, tmp_path / "no-such-model", rows)
    data = yaml.safe_load(config.read_text())
    data["benchmarks"][0]["verifier"] = "multiple_choice"  # "7" is not an option letter
    config.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config), "--model-index", "0", "--engine", "hf"]) == 2
    error = capsys.readouterr().err
    assert (
        "benchmark 'max3'" in error and "prompt 0: field 'answer'" in error and "expected one letter" in error
    )


def test_a_failed_evaluation_leaves_no_outputs(
    tmp_path: Path, tiny_model_dir: Path, max3_heldout: list[dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model folder whose tokenizer loads but whose weights are corrupt: the run fails after the
    # output directory was set up, while the engine starts.
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    config = _write_config(tmp_path, broken, max3_heldout)
    monkeypatch.setenv("M2RL_RESULT_PATH", str(tmp_path / "termination-log"))
    with pytest.raises(Exception, match=r"(?i)safetensors|header|deserializ"):
        main(
            [
                "--config",
                str(config),
                "--model-index",
                "0",
                "--engine",
                "hf",
                "--output",
                str(tmp_path / "out"),
            ]
        )
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "termination-log").exists()
