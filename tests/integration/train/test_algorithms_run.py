"""Each algorithm variant runs end to end in the real loop and reports its metrics."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from m2rl_trainer.train.metrics import MetricsSink
from m2rl_trainer.utils.processes import free_port
from tests.integration.train.conftest import write_config
from tests.support.prometheus import PrometheusServer


def _train(config: Path) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "m2rl_trainer.cli", "--config", str(config)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads(line) for line in (config.parent / "out" / "metrics.jsonl").read_text().splitlines()]


def test_dapo_with_dynamic_sampling_overlong_kl_and_entropy(
    tmp_path: Path, max3_sft_model: Path, max3_data
) -> None:
    config = write_config(
        tmp_path / "c.yaml", max3_sft_model, max3_data[0], tmp_path / "out",
        algorithm={"name": "dapo", "clip_high": 0.28, "dynamic_sampling": True, "max_refill_rounds": 2,
                   "overlong_buffer_tokens": 4, "overlong_penalty": 1.0, "kl_coef": 0.05,
                   "kl_estimator": "k3",
                   "entropy_coef": 0.001, "update_epochs": 2, "steps": 2},
        checkpoint={"every_steps": 0, "keep": 1},
    )  # fmt: skip
    records = _train(config)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        for key in ("kl_ref", "entropy", "clip_fraction", "lm_head_grad_norm", "grad_norm", "approx_kl"):
            assert math.isfinite(r[key]), (key, r)
        assert r["kl_ref"] >= 0.0  # k3 is non-negative
        assert r["entropy"] > 0.0
        assert 0.0 <= r["zero_variance_fraction"] <= 1.0
        assert r["lm_head_grad_norm"] > 0.0
        # Overlong shaping only lowers rewards: shaped reward <= verifier accuracy.
        assert r["reward"] <= r["accuracy"] + 1e-9
    # Dynamic sampling: every group kept for the update has reward variance (prompts_per_step 4 x 4).
    assert all(r["completions"] <= 16 for r in records)


def test_dr_grpo_runs_with_zero3_and_mini_batches(tmp_path: Path, max3_sft_model: Path, max3_data) -> None:
    config = write_config(
        tmp_path / "c.yaml", max3_sft_model, max3_data[0], tmp_path / "out",
        algorithm={"name": "dr_grpo", "steps": 2, "lr_schedule": "cosine", "update_epochs": 2,
                   "mini_batches": 2},
        deepspeed={"zero_stage": 3},
        checkpoint={"every_steps": 0, "keep": 1},
    )  # fmt: skip
    records = _train(config)
    assert [r["step"] for r in records] == [1, 2]
    assert [r["updates_applied"] for r in records] == [4, 4]  # 2 epochs x 2 mini-batches
    # The schedule counts steps, not updates: cosine at 0 and 1/2 of the way (4 updates per step).
    assert [r["learning_rate"] for r in records] == [1e-3, pytest.approx(0.5e-3, rel=1e-9)]
    assert (tmp_path / "out" / "checkpoints" / "step-000002" / "model" / "config.json").exists()


def test_metrics_reach_a_real_prometheus(
    tmp_path: Path, prometheus_server: Callable[[list[str]], PrometheusServer]
) -> None:
    port = free_port()
    sink = MetricsSink(tmp_path / "m.jsonl", port, run_name="demo")
    try:
        sink.log(
            {
                "step": 3,
                "reward": 0.25,
                "per_domain": {"math": {"accuracy": 0.5}, "code": {"accuracy": 0.125}},
            }
        )
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'm2rl_train_reward{run="demo"} 0.25' in body
        prometheus = prometheus_server([f"127.0.0.1:{port}"])
        result = prometheus.wait_for('m2rl_train_domain_accuracy_ratio{domain="code"}')
        assert float(result[0]["value"][1]) == 0.125
        assert float(prometheus.wait_for("m2rl_train_step")[0]["value"][1]) == 3.0
    finally:
        sink.close()
    assert json.loads((tmp_path / "m.jsonl").read_text())["reward"] == 0.25
