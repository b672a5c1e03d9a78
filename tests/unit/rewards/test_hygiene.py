"""Reward-hacking hygiene shares: counted over rewarded samples per domain, logged and exported."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch.distributed as dist

from m2rl_trainer.rewards import hygiene
from m2rl_trainer.rewards.metrics import VerifierMetrics
from m2rl_trainer.rewards.types import Result


def code_result(reward: float, **flags: bool) -> Result:
    names = ("early_exit", "eq_override", "builtins_touched", "stderr_only")
    return Result(
        reward, "correct" if reward else "incorrect", {"hygiene": {n: flags.get(n, False) for n in names}}
    )


RESULTS = [
    code_result(1.0, early_exit=True),
    code_result(1.0, early_exit=True, stderr_only=True),
    code_result(1.0),
    code_result(1.0, eq_override=True),
    code_result(0.0, early_exit=True, builtins_touched=True),  # not rewarded: not counted
    Result(1.0, "correct", {"extracted": "4"}),  # a math sample: no flags
]
DOMAINS = ["code", "code", "code", "code", "code", "math"]


def test_counts_and_shares_over_rewarded_samples():
    counts = hygiene.count(DOMAINS, RESULTS)
    assert counts == {
        "code/rewarded_checked": 4,
        "code/early_exit": 2,
        "code/stderr_only": 1,
        "code/eq_override": 1,
    }
    totals = {key: float(counts[key]) for key in hygiene.keys(["code", "math"])}
    assert hygiene.shares(totals) == {
        "code": {
            "hygiene_early_exit_ratio": 0.5,
            "hygiene_eq_override_ratio": 0.25,
            "hygiene_builtins_touched_ratio": 0.0,
            "hygiene_stderr_only_ratio": 0.25,
        }
    }  # math has no flags, so no shares (not zeros)
    assert hygiene.progress({"code": hygiene.shares(totals)["code"], "math": {"accuracy": 1.0}}) == (
        " hygiene code: exit 0.50 eq 0.25 builtins 0.00 stderr 0.25"
    )
    assert hygiene.shares({"code/rewarded_checked": 0.0}) == {}  # nothing rewarded: no share at all


@pytest.fixture
def one_rank(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_the_trainer_logs_and_exports_the_shares(one_rank, tmp_path):
    from m2rl_trainer.train.loop import GRPOTrainer
    from m2rl_trainer.train.metrics import MetricsSink
    from m2rl_trainer.train.rollouts import ScoredGroup

    def completion(tokens: list[int]) -> SimpleNamespace:
        return SimpleNamespace(token_ids=tokens, finish_reason="stop", loss_mask=None)

    code = ScoredGroup(
        SimpleNamespace(domain="code"),
        [1],
        [completion([1, 2])] * 5,
        [1.0, 1.0, 1.0, 1.0, 0.0],
        [1.0, 1.0, 1.0, 1.0, 0.0],
        (0, 0),
        hygiene.count(DOMAINS[:5], RESULTS[:5]),
    )
    math = ScoredGroup(
        SimpleNamespace(domain="math"),
        [2],
        [completion([1])] * 5,
        [1.0] * 5,
        [1.0] * 5,
        (0, 1),
        hygiene.count(["math"] * 5, [RESULTS[5]] * 5),
    )
    trainer = SimpleNamespace(
        domains={"code": [], "math": []},
        agent_domains=[],
        step=0,
        skipped_steps=0,
        nonfinite_steps=0,
        algo=SimpleNamespace(steps=3),
        engine=SimpleNamespace(get_lr=lambda: [1e-5]),
    )
    timings = {"time_generation_s": 1.0, "time_update_s": 0.1, "time_sync_s": 0.0}
    update = {"loss": 0.5, "per_domain": {}, "nonfinite": False, "updates_applied": 1}
    # Only the math group is trained on: the code group's samples still count, they were rewarded.
    record = GRPOTrainer._record(trainer, [math], [code, math], update, timings, 2.0)
    assert record["per_domain"]["code"]["hygiene_early_exit_ratio"] == 0.5
    assert "hygiene_early_exit_ratio" not in record["per_domain"]["math"]
    assert GRPOTrainer._progress_line(trainer, record).endswith(
        " hygiene code: exit 0.50 eq 0.25 builtins 0.00 stderr 0.25"
    )
    sink = MetricsSink(tmp_path / "metrics.jsonl", None, "run")
    sink.log(record)
    gauge = sink.registry.get_sample_value(
        "m2rl_train_domain_hygiene_early_exit_ratio", {"run": "run", "domain": "code"}
    )
    assert gauge == 0.5


def test_the_verifier_service_counts_flags_of_rewarded_samples():
    metrics = VerifierMetrics()
    for result in RESULTS:
        metrics.observe(Result(result.reward, result.verdict, result.details, verifier="code"))
    value = metrics.registry.get_sample_value
    assert (
        value("m2rl_verifier_rewarded_hygiene_flags_total", {"verifier": "code", "flag": "early_exit"}) == 2
    )
    assert (
        value("m2rl_verifier_rewarded_hygiene_flags_total", {"verifier": "code", "flag": "eq_override"}) == 1
    )
    assert value("m2rl_verifier_rewarded_checked_total", {"verifier": "code"}) == 4
