"""Trainer faults: bad data before any work, unreachable servers, non-finite losses, kill -9 + resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from m2rl_trainer.utils.processes import free_port
from tests.integration.train.conftest import write_config

TRAIN = [sys.executable, "-m", "m2rl_trainer.cli"]
# One intra-op thread: on 2 shared, busy cores torch's thread pool spins (an agent run of 6 steps took
# 284 s with the default threads and 24 s with one, measured here).
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV)


def test_missing_dataset_field_fails_before_any_work(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "Q: max 1 2 3= A:", "answer": "3"}\n{"prompt": "Q: max 4 5 6= A:"}\n')
    config = write_config(tmp_path / "c.yaml", tiny_model_dir, data, tmp_path / "out")
    result = _run([*TRAIN, "--config", str(config)])
    assert result.returncode == 2
    assert "bad.jsonl" in result.stderr and "line 2" in result.stderr and "answer" in result.stderr
    assert not (tmp_path / "out").exists()  # nothing was started or written


def test_unreachable_rollout_server_is_a_clear_error(tmp_path: Path, tiny_model_dir: Path, max3_data) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = write_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        max3_data[0],
        tmp_path / "out",
        rollout={"mode": "server", "server_urls": [url], "max_retries": 2, "request_timeout_s": 5.0},
    )
    start = time.monotonic()
    result = _run([*TRAIN, "--config", str(config)], timeout=300)
    assert result.returncode != 0
    assert url in result.stderr and "unreachable" in result.stderr
    assert time.monotonic() - start < 240  # bounded retries, no hang


def _final_weights(output_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(output_dir / "checkpoints" / f"step-{step:06d}" / "model" / "model.safetensors")


def _by_step(metrics: Path) -> dict[int, dict]:
    records = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        records[record["step"]] = record  # a re-run step after resume replaces the killed run's
    return records


DETERMINISTIC = ("reward", "accuracy", "response_length", "loss", "grad_norm", "learning_rate", "completions")
CORRECTION = ("rollout_trainer_kl", "importance_weight_clip_ratio", "kept_accuracy", "dual_clip_ratio")
# The study's mismatch correction with everything else that keeps state across a step switched on.
ALL_OPTIONS = {
    "recompute_old_logprobs": True, "importance_sampling": "tis", "clip_high": 0.28, "clip_ratio_c": 3.0,
    "mini_batches": 2, "dynamic_sampling": True, "max_refill_rounds": 1,
    "overlong_filtering": True, "kl_coef": 0.01, "lr_schedule": "cosine", "warmup_steps": 2,
}  # fmt: skip


# Variant -> (model fixture, write_config overrides, per-step keys compared beyond DETERMINISTIC).
VARIANTS = {
    "on-policy": ("max3_sft_model", {}, ()),
    "one-step-off-policy": ("max3_sft_model", {"algorithm": {"off_policy_steps": 1}}, ()),
    "tis-dual-clip-mini-batches-dynamic-sampling": ("max3_sft_model", {"algorithm": ALL_OPTIONS}, CORRECTION),
    # MT-OPD: the teacher's scores are taken right after generation, the advantages from them and pi_old.
    "mt-opd": ("max3_sft_model", {"algorithm": {"name": "mt-opd"}}, ("opd_reverse_kl", "rollout_trainer_kl")),
    # Agent episodes: multi-turn, tool calls in threads, the environment's verdicts, loss masks.
    "agent": ("agent_sft_model", {"algorithm": {"max_response_tokens": 128}, "agent": {"max_turns": 3}},
              ("per_domain",)),
}  # fmt: skip


def _variant_config(request: pytest.FixtureRequest, variant: str) -> tuple[Path, Path, dict, tuple]:
    """(model, dataset, write_config overrides, extra keys) of a variant; fixtures are built only for
    the variants that use them."""
    fixture, overrides, keys = VARIANTS[variant]
    overrides = {k: dict(v) for k, v in overrides.items()}
    dataset = request.getfixturevalue("max3_data")[0]
    if variant == "mt-opd":
        teacher = str(request.getfixturevalue("max3_teacher_model"))
        overrides["algorithm"]["teachers"] = [{"domains": ["math"], "model": teacher}]
    if variant == "agent":
        dataset = request.getfixturevalue("agent_data")
        domain = {"name": "agent", "dataset": str(dataset), "verifier": "workplace_assistant"}
        overrides["data"] = {"domains": [{**domain, "format": "nemotron"}]}
    return request.getfixturevalue(fixture), dataset, overrides, keys


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kill9_then_resume_matches_an_uninterrupted_run(
    tmp_path: Path, variant: str, request: pytest.FixtureRequest
) -> None:
    # One-step off-policy: the batch generated during the last update is in the checkpoint.
    steps = 6
    model, dataset, overrides, keys = _variant_config(request, variant)
    straight = write_config(tmp_path / "a.yaml", model, dataset, tmp_path / "a", **overrides)
    result = _run([*TRAIN, "--config", str(straight)])
    assert result.returncode == 0, result.stderr[-3000:]

    kill_after = random.Random(os.getpid()).randint(2, steps - 1)  # a random step, printed on failure
    resumed = write_config(tmp_path / "b.yaml", model, dataset, tmp_path / "b", **overrides)
    process = subprocess.Popen(
        [*TRAIN, "--config", str(resumed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
        start_new_session=True,
    )  # fmt: skip
    metrics = tmp_path / "b" / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after:
            break
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "b" / "checkpoints" / f"step-{steps:06d}").exists(), (
        f"killed too late ({kill_after})"
    )

    result = _run([*TRAIN, "--config", str(resumed)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from" in result.stdout

    a, b = _final_weights(tmp_path / "a", steps), _final_weights(tmp_path / "b", steps)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after kill at step {kill_after} and resume"
    ma, mb = _by_step(tmp_path / "a" / "metrics.jsonl"), _by_step(metrics)
    assert sorted(ma) == sorted(mb) == list(range(1, steps + 1))
    for step in ma:
        for key in DETERMINISTIC + keys:
            # .get: a step whose dynamic sampling kept no group takes no update (no grad_norm)
            assert ma[step].get(key) == mb[step].get(key), (step, key, kill_after)
    # The run really trained: weights moved from the initial model.
    initial = load_file(model / "model.safetensors")
    assert any(not torch.equal(initial[k], a[k]) for k in initial if k in a)


def test_nonfinite_loss_skips_the_step_then_aborts(tmp_path: Path, max3_sft_model: Path, max3_data) -> None:
    """Fault injection with 2 updates per step: the loss is made NaN in every update of steps 2 and 5
    (weights must not change), and in the second update of step 4 only (its first update stays, the
    step is not reported as skipped); the run aborts once more steps than
    `faults.max_skipped_steps` had a non-finite loss."""
    script = tmp_path / "nan_run.py"
    script.write_text(
        "import json, sys, torch\n"
        "import m2rl_trainer.train.loop as loop\n"
        "import m2rl_trainer.train.update as update\n"
        "from m2rl_trainer.config import load_config\n"
        "real = update.policy_loss\n"
        "EVERY_UPDATE, LATER_UPDATES = {2, 5}, {4}\n"
        "trainer = loop.GRPOTrainer(load_config(sys.argv[1]))\n"
        "taken = [0]  # optimizer updates in the current step\n"
        "real_step = trainer.engine.step\n"
        "def counting_step(*a, **k):\n"
        "    taken[0] += 1\n"
        "    return real_step(*a, **k)\n"
        "trainer.engine.step = counting_step\n"
        "def poisoned(*a, **k):\n"
        "    loss, stats = real(*a, **k)\n"
        "    step = trainer.step + 1\n"
        "    bad = step in EVERY_UPDATE or (step in LATER_UPDATES and taken[0] >= 1)\n"
        "    return (loss * float('nan') if bad else loss), stats\n"
        "update.policy_loss = poisoned\n"
        "snapshots = {}\n"
        "orig_step = trainer.train_step\n"
        "def step_and_snapshot():\n"
        "    taken[0] = 0\n"
        "    before = {k: v.clone() for k, v in trainer.engine.module.state_dict().items()}\n"
        "    record = orig_step()\n"
        "    after = trainer.engine.module.state_dict()\n"
        "    snapshots[record['step']] = all(torch.equal(before[k], after[k]) for k in before)\n"
        "    return record\n"
        "trainer.train_step = step_and_snapshot\n"
        "try:\n"
        "    trainer.train()\n"
        "    print(json.dumps({'aborted': None, 'unchanged': snapshots}))\n"
        "except loop.TrainingAborted as e:\n"
        "    print(json.dumps({'aborted': str(e), 'unchanged': snapshots}))\n"
    )
    config = write_config(
        tmp_path / "c.yaml", max3_sft_model, max3_data[0], tmp_path / "out",
        algorithm={"update_epochs": 2}, faults={"max_skipped_steps": 2},
    )  # fmt: skip
    result = _run([sys.executable, str(script), str(config)])
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["aborted"] is not None and "non-finite loss in 3 steps" in outcome["aborted"]
    unchanged = {int(k): v for k, v in outcome["unchanged"].items()}
    assert unchanged == {1: False, 2: True, 3: False, 4: False, 5: True}
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    # Step 5's record is not written: the run aborts on it.
    assert [r["updates_applied"] for r in records] == [2, 0, 2, 1]
    assert [r["skipped_steps"] for r in records] == [0, 1, 1, 1]  # step 4 changed the weights
    assert [r["nonfinite_steps"] for r in records] == [0, 1, 1, 2]


def test_prompts_over_the_token_limit_are_left_out_or_refused(
    tmp_path: Path, max3_sft_model: Path, max3_data
) -> None:
    # "Q: max 1 2 3= A:" is 15 tokens with the tiny tokenizer: a limit of 5 leaves nothing to train on.
    config = write_config(
        tmp_path / "c.yaml",
        max3_sft_model,
        max3_data[0],
        tmp_path / "out",
        algorithm={"max_prompt_tokens": 5},
    )
    result = _run([*TRAIN, "--config", str(config)])
    assert result.returncode == 2
    assert "every prompt is longer than algorithm.max_prompt_tokens (5)" in result.stderr
