"""End to end on CPU: GRPO with 2 DeepSpeed ranks against a real vLLM server, filesystem weight sync.

The tiny model, after a short supervised warm-up on `max3` ("Q: max 3 8 1= A:" -> " \\boxed{8}"),
answers in the right format but names the maximum only about 45% of the time (it often picks
another of the three digits). GRPO then trains it on 500 training questions; accuracy is measured greedily
on 300 held-out questions that never appear in training.

Threshold: held-out accuracy must rise by at least 10 points. Why it cannot pass by chance:
greedy evaluation is deterministic, so the only way accuracy moves is through the weights; a
change of 10 points on 300 questions is 30 more right answers, about 3 standard errors of a
binomial proportion near 0.5 (sqrt(0.5 * 0.5 / 300) = 2.9 points) even if the two evaluations were
independent draws, which they are not. Measured here: 0.443 -> 0.647 in 40 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from m2rl_trainer.rollout.vllm_server import VLLMServer, VLLMServerConfig
from m2rl_trainer.train.sft import greedy_accuracy
from m2rl_trainer.utils.processes import free_port
from tests.integration.train.conftest import write_config

STEPS = 40
MIN_GAIN = 0.10


@pytest.mark.slow
def test_grpo_two_ranks_with_vllm_server_raises_heldout_accuracy(
    tmp_path: Path, max3_sft_model: Path, max3_data: tuple[Path, Path]
) -> None:
    heldout = [json.loads(line) for line in max3_data[1].read_text().splitlines()]
    before = greedy_accuracy(max3_sft_model, heldout)

    server = VLLMServer(
        VLLMServerConfig(model=max3_sft_model, served_model_name="policy", max_model_len=128),
        tmp_path / "vllm.log",
    )
    try:
        server.wait_ready()
        config = write_config(
            tmp_path / "grpo.yaml",
            max3_sft_model,
            max3_data[0],
            tmp_path / "run",
            algorithm={"group_size": 8, "prompts_per_step": 16, "learning_rate": 1e-3, "steps": STEPS,
                       "micro_batch_size": 32, "seed": 0},
            rollout={"mode": "server", "server_urls": [server.url], "served_model_name": "policy",
                     "weight_sync": "filesystem", "weight_sync_dir": str(tmp_path / "weights")},
            deepspeed={"zero_stage": 3},
            checkpoint={"every_steps": 20, "keep": 1},
        )  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port())}
        result = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
             "--master_port", env["MASTER_PORT"], "-m", "m2rl_trainer.cli", "--config", str(config)],
            capture_output=True, text=True, timeout=1500, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:] + server.log_tail()
    finally:
        server.stop()

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(r["time_sync_s"] > 0 for r in records)  # every step pushed weights to the server
    after = greedy_accuracy(tmp_path / "run" / "checkpoints" / f"step-{STEPS:06d}" / "model", heldout)
    print(f"held-out greedy accuracy: {before:.3f} -> {after:.3f}")
    assert after >= before + MIN_GAIN, f"held-out accuracy {before:.3f} -> {after:.3f} (needs +{MIN_GAIN})"
    # Training reward also rose: last 10 steps against the first 10.
    first = sum(r["reward"] for r in records[:10]) / 10
    last = sum(r["reward"] for r in records[-10:]) / 10
    assert last > first, (first, last)
