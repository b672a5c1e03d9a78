"""The NCCL weight-sync path on CPU: what can run without GPUs (the weight source and the config
rules); the NCCL rendezvous itself needs GPUs and runs only on a GPU cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from m2rl_trainer.config import ConfigError, load_config

SCRIPT = """
import sys, torch
from transformers import AutoModelForCausalLM
from m2rl_trainer.config import AlgorithmConfig, DeepSpeedConfig
from m2rl_trainer.train.engine import build_engine, deepspeed_config, full_state_dict, init_distributed
from m2rl_trainer.train.weight_sync import DeepSpeedWeightSource
stage = int(sys.argv[2])
init_distributed(False)
reference = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
algo = AlgorithmConfig()
ds = deepspeed_config(DeepSpeedConfig(zero_stage=stage), algo, world_size=1, on_gpu=False)
engine = build_engine(AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32), ds)
source = DeepSpeedWeightSource(engine.module, stage)
expected = dict(reference.named_parameters())
meta = source.metadata()
assert [m.name for m in meta] == list(expected), [m.name for m in meta]
assert all(tuple(m.shape) == tuple(expected[m.name].shape) and m.dtype == torch.float32 for m in meta)
for _ in range(2):  # re-iterable: one fresh pass per sync round
    items = list(source)
    assert [n for n, _ in items] == list(expected)
    assert all(torch.equal(t, expected[n].detach()) for n, t in items)
print("ok", len(meta))
"""


@pytest.mark.parametrize("stage", [2, 3], ids=["zero2", "zero3-gathered"])
def test_deepspeed_weight_source_yields_full_parameters(
    tmp_path: Path, tiny_model_dir: Path, stage: int
) -> None:
    script = tmp_path / "source.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(tiny_model_dir), str(stage)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("ok ")


def test_nccl_config_rules() -> None:
    base = {
        "model": "m",
        "output_dir": "o",
        "data": {"domains": [{"name": "math", "dataset": "x.jsonl", "verifier": "math"}]},
    }
    ok = load_config(
        {**base, "rollout": {"mode": "server", "server_urls": ["http://r-0:8000"], "weight_sync": "nccl",
                             "nccl_master_address": "run-trainer-0.run", "nccl_workers_per_replica": 4}}
    )  # fmt: skip
    assert ok.rollout.nccl_workers_per_replica == 4
    with pytest.raises(ConfigError) as error:
        load_config(
            {
                **base,
                "rollout": {"mode": "server", "server_urls": ["http://a", "http://b"], "weight_sync": "nccl"},
            }
        )
    assert "rollout.nccl_master_address" in str(error.value)
    assert "rollout.server_urls: NCCL weight sync serves one replica" in str(error.value)
