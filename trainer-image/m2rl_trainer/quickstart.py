"""The quickstart: a whole GRPO run on one CPU machine, in about two minutes.

1. builds the project's tiny Qwen2-style model and tokenizer (no download);
2. a short supervised warm-up on the `max3` toy task ("Q: max 3 8 1= A:" -> " \\boxed{8}") so the
   model answers in the right format and is sometimes right;
3. GRPO with the real trainer (`m2rl-train`: DeepSpeed on the CPU, rewards from the math verifier
   in worker processes, Hugging Face generation in the trainer process), checkpoints included;
4. held-out accuracy before and after, on questions never seen in training.

With `--server` the rollouts come from a real vLLM OpenAI server instead, with filesystem weight
sync after every step (slower on a CPU; it is the cluster's path). As the local runner lands this
becomes `m2rl run -f examples/quickstart/` (experts, a mixed run, merges and evaluation).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from m2rl_trainer.data.toy_tasks import completion_for, toy_splits, write_jsonl
from m2rl_trainer.models.tiny import TinyModelSpec, build_tiny_model, parameter_count
from m2rl_trainer.rollout.vllm_server import VLLMServer, VLLMServerConfig
from m2rl_trainer.train.sft import greedy_accuracy, supervised_warmup


def _log(message: str) -> None:
    print(f"[quickstart] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart", description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("runs/quickstart"), help="where everything goes")
    parser.add_argument("--steps", type=int, default=30, help="GRPO steps")
    parser.add_argument("--server", action="store_true", help="roll out with a real vLLM server")
    args = parser.parse_args(argv)
    work = args.workdir
    if (work / "run").exists():
        shutil.rmtree(work / "run")  # a fresh run each time; models are reused

    train, heldout = toy_splits("max3", 500, 300, seed=0)
    train_file = write_jsonl(train, work / "data" / "train.jsonl")
    base, warm = work / "model-base", work / "model-sft"
    if not base.exists():
        _log("building the tiny model (seeded, no download)")
        build_tiny_model(base, TinyModelSpec(seed=0))
    _log(f"tiny model: {parameter_count(base):,} parameters")
    if not warm.exists():
        _log("supervised warm-up: 40 steps on max3 so GRPO groups have something to compare")
        supervised_warmup(base, warm, [(r["prompt"], completion_for(r)) for r in train], steps=40)
    before = greedy_accuracy(warm, heldout)
    _log(f"held-out accuracy before GRPO: {before:.1%} (300 questions never trained on)")

    config = {
        "model": str(warm),
        "output_dir": str(work / "run"),
        "run_name": "quickstart",
        "data": {"domains": [{"name": "math", "dataset": str(train_file), "verifier": "math"}]},
        "algorithm": {"name": "grpo", "group_size": 8, "prompts_per_step": 16, "learning_rate": 1e-3,
                      "max_response_tokens": 8, "steps": args.steps, "micro_batch_size": 64, "seed": 0},
        "rollout": {"mode": "colocated"},
        "deepspeed": {"zero_stage": 2},
        "checkpoint": {"every_steps": 10, "keep": 2},
    }  # fmt: skip
    server = None
    if args.server:
        _log("starting a vLLM OpenAI server on the CPU (about a minute)")
        server = VLLMServer(VLLMServerConfig(model=warm, served_model_name="policy"), work / "vllm.log")
        server.wait_ready()
        config["rollout"] = {"mode": "server", "server_urls": [server.url], "served_model_name": "policy",
                             "weight_sync_dir": str(work / "weights")}  # fmt: skip
    config_file = work / "grpo.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    _log(f"GRPO: {args.steps} steps of 16 prompts x 8 completions (config: {config_file})")
    try:
        from m2rl_trainer.config import load_config
        from m2rl_trainer.train.loop import train as run_grpo

        run_grpo(load_config(config_file))
    finally:
        if server is not None:
            server.stop()

    final = work / "run" / "checkpoints" / f"step-{args.steps:06d}" / "model"
    after = greedy_accuracy(final, heldout)
    records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = records[: max(len(records) // 4, 1)], records[-max(len(records) // 4, 1) :]
    _log(
        f"training reward {sum(r['reward'] for r in first) / len(first):.1%} (first quarter) -> "
        f"{sum(r['reward'] for r in last) / len(last):.1%} (last quarter)"
    )
    _log(f"held-out accuracy: {before:.1%} -> {after:.1%}")
    _log(f"model: {final} (Hugging Face format); metrics: {work / 'run' / 'metrics.jsonl'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
