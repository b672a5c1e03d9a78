"""The runner's loop with stand-in programs (the real ones run in tests/integration/test_quickstart.py):
dependency order, statuses, restarts, failures that propagate, resume, and the spec check.

The plan functions are replaced by ones that keep the real plan's files and result paths but run
small Python scripts: a trainer that writes metrics and checkpoints (and fails as often as told),
an HTTP server as the verifier, a merge and an evaluation that leave their termination messages.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from m2rl_operator.local import RunnerOptions, run_local
from m2rl_operator.local import runner as runner_module
from m2rl_operator.local.display import Display
from m2rl_operator.local.plan import JobPlan, PlanError, ProcessPlan, RunPlan
from m2rl_operator.local.store import Store

TRAINER = """
import json, os, sys
from pathlib import Path
out, steps, fail = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
attempts = out / "attempts"
attempt = int(attempts.read_text()) + 1 if attempts.exists() else 1
attempts.write_text(str(attempt))
if attempt <= fail:
    sys.exit(int(sys.argv[4]))
with open(out / "metrics.jsonl", "a") as f:
    for step in range(1, steps + 1):
        domains = {"math": {"reward": 0.5, "accuracy": 0.5}}
        f.write(json.dumps({"step": step, "reward": step / steps, "per_domain": domains}) + "\\n")
ckpt = out / "checkpoints" / f"step-{steps:06d}"
ckpt.mkdir(parents=True)
(ckpt / "checksums.json").write_text("{}")
"""
RESULT = "import os, sys; open(os.environ['M2RL_RESULT_PATH'], 'w').write(sys.argv[1])"


def _run(name: str, max_restarts: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "m2rl.io/v1alpha1", "kind": "RLVRRun", "metadata": {"name": name},
        "spec": {
            "model": {"uri": "pvc://data/sft", "dtype": "float32", "chatTemplate": False},
            "domains": [
                {"name": "math", "dataset": {"uri": "pvc://data/math.jsonl"}, "verifier": {"type": "math"}}
            ],
            "algorithm": {"steps": 2}, "trainer": {"gpusPerNode": 0}, "rollout": {"mode": "colocated"},
            "checkpoint": {"uri": f"pvc://ckpt/{name}"}, "maxRestarts": max_restarts,
        },
    }  # fmt: skip


MERGE = {
    "apiVersion": "m2rl.io/v1alpha1", "kind": "MergeJob", "metadata": {"name": "avg"},
    "spec": {
        "method": "linear", "experts": [{"runRef": "a"}, {"runRef": "b"}], "output": {"uri": "pvc://ckpt/avg"}
    },
}  # fmt: skip
SUITE = {
    "apiVersion": "m2rl.io/v1alpha1", "kind": "EvalSuite", "metadata": {"name": "suite"},
    "spec": {
        "models": [{"name": "sft", "model": "pvc://data/sft"}, {"name": "a", "runRef": "a"},
                   {"name": "avg", "mergeRef": "avg"}],
        "benchmarks": [
            {"name": "math", "dataset": {"uri": "pvc://data/math.jsonl"}, "verifier": {"type": "math"}}
        ],
        "worker": {"gpus": 0, "parallelism": 2},
    },
}  # fmt: skip


@pytest.fixture
def stand_ins(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Replace the programs; `behaviour[run]` = (failures before success, exit code of a failure)."""
    behaviour: dict[str, Any] = {}
    real_run, real_merge, real_eval = (
        runner_module.plan_run,
        runner_module.plan_merge,
        runner_module.plan_eval,
    )

    def plan_run(resource: Any, layout: Any, **ports: Any) -> RunPlan:
        real = real_run(resource, layout, **ports)
        fail, code = behaviour.get(resource.name, (0, 1))
        port = ports["verifier_port"]
        http = (sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1")
        server = ProcessPlan("verifier", http, health_url=f"http://127.0.0.1:{port}/")
        argv = (sys.executable, "-c", TRAINER, str(real.output_dir), "2", str(fail), str(code))
        return RunPlan(real.files, (server,), ProcessPlan("trainer", argv), real.output_dir)

    def plan_merge(resource: Any, layout: Any, resolved: Any) -> JobPlan:
        real = real_merge(resource, layout, resolved)
        analysis = {"analysis": {"pairwiseCosine": [{"first": "a", "second": "b", "cosine": 0.5}]}}
        (process,) = real.processes
        return JobPlan(real.files, (ProcessPlan("merge", (sys.executable, "-c", RESULT, json.dumps(analysis)),
                                                result_file=process.result_file),))  # fmt: skip

    def plan_eval(resource: Any, layout: Any, resolved: Any, engine: str) -> JobPlan:
        real = real_eval(resource, layout, resolved, engine)
        processes = []
        for index, (model, process) in enumerate(zip(resource.spec.models, real.processes, strict=True)):
            result = json.dumps({"model": model.name, "cells": [[10, index / 10]]})
            processes.append(ProcessPlan(process.component, (sys.executable, "-c", RESULT, result),
                                         result_file=process.result_file))  # fmt: skip
        return JobPlan(real.files, tuple(processes))

    monkeypatch.setattr(runner_module, "plan_run", plan_run)
    monkeypatch.setattr(runner_module, "plan_merge", plan_merge)
    monkeypatch.setattr(runner_module, "plan_eval", plan_eval)
    return behaviour


def _setup(tmp_path: Path, objects: list[dict[str, Any]]) -> tuple[Path, RunnerOptions]:
    folder = tmp_path / "yaml"
    folder.mkdir()
    (folder / "all.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    data = tmp_path / "pvc"
    (data / "data" / "sft").mkdir(parents=True)
    (data / "data" / "math.jsonl").write_text("")
    options = RunnerOptions(workdir=tmp_path / "work", data_root=data, parallel=2, poll_s=0.05, grace_s=5)
    return folder, options


def _status(options: RunnerOptions, kind: str, name: str) -> dict[str, Any]:
    record = Store(options.workdir).load(kind, name)
    assert record is not None
    return record.status


@pytest.fixture(autouse=True)
def plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("m2rl_operator.local.make_display", lambda log, plain=False: Display(log))


def test_a_pipeline_runs_in_order_and_records_crd_statuses(stand_ins: dict[str, Any], tmp_path: Path) -> None:
    folder, options = _setup(tmp_path, [_run("a"), _run("b"), MERGE, SUITE])
    stand_ins["b"] = (1, 1)  # fails once, then succeeds from its checkpoint
    assert run_local([folder], options) == 0
    run = _status(options, "RLVRRun", "b")
    assert (run["phase"], run["step"], run["restarts"]) == ("Succeeded", 2, 1)
    assert run["finalModel"] == "pvc://ckpt/b/checkpoints/step-000002/model"
    assert run["domains"] == [{"name": "math", "reward": 0.5, "accuracy": 0.5}]
    merge = _status(options, "MergeJob", "avg")
    assert merge["phase"] == "Succeeded" and merge["outputModel"] == "pvc://ckpt/avg"
    assert merge["analysis"] == {"pairwiseCosine": [{"first": "a", "second": "b", "cosine": 0.5}]}
    suite = _status(options, "EvalSuite", "suite")
    assert [(c["model"], c["metrics"]["avg@k"]) for c in suite["results"]] == [
        ("sft", 0.0),
        ("a", 0.1),
        ("avg", 0.2),
    ]
    assert (suite["cellsTotal"], suite["cellsSucceeded"]) == (3, 3)
    log = (options.workdir / "run.log").read_text()
    assert log.index("MergeJob/avg: - -> Waiting") < log.index("RLVRRun/b: Running -> Succeeded")
    assert log.index("RLVRRun/b: Running -> Succeeded") < log.index("MergeJob/avg: Waiting -> Pending")
    assert log.index("MergeJob/avg: Waiting -> Pending") < log.index("MergeJob/avg: Pending -> Running")
    assert "RLVRRun/b: trainer exited with code 1; restart 1/3 from the latest checkpoint" in log
    usage = Store(options.workdir).load("RLVRRun", "a")
    assert usage is not None and set(usage.usage.cpu_seconds) == {"trainer", "verifier"}
    assert usage.usage.total_cpu_seconds > 0

    # The same command again: everything is skipped.
    assert run_local([folder], options) == 0
    assert "RLVRRun/a: succeeded in an earlier run, skipped" in (options.workdir / "run.log").read_text()
    # A finished resource whose spec changed is refused, naming what to remove.
    changed = _run("a")
    changed["spec"]["algorithm"]["steps"] = 3
    (folder / "all.yaml").write_text(yaml.safe_dump_all([changed, _run("b"), MERGE, SUITE]))
    with pytest.raises(PlanError, match="RLVRRun/a: its spec changed since it ran in"):
        run_local([folder], options)


def test_failures_end_in_failed_and_reach_the_dependents(stand_ins: dict[str, Any], tmp_path: Path) -> None:
    folder, options = _setup(tmp_path, [_run("a", max_restarts=1), _run("b"), MERGE, SUITE])
    stand_ins["a"] = (5, 1)  # keeps failing: one restart, then Failed
    stand_ins["b"] = (5, 2)  # invalid input: never retried
    assert run_local([folder], options) == 1
    a, b = _status(options, "RLVRRun", "a"), _status(options, "RLVRRun", "b")
    assert (a["phase"], a["restarts"]) == ("Failed", 1)
    assert (b["phase"], b["restarts"]) == ("Failed", 0)
    merge = _status(options, "MergeJob", "avg")
    (condition,) = merge["conditions"]
    assert (merge["phase"], condition["reason"]) == ("Failed", "DependencyFailed")
    assert _status(options, "EvalSuite", "suite")["phase"] == "Failed"


def test_missing_inputs_are_named_before_anything_starts(stand_ins: dict[str, Any], tmp_path: Path) -> None:
    folder, options = _setup(tmp_path, [_run("a")])
    (options.data_root / "data" / "math.jsonl").unlink()
    with pytest.raises(
        PlanError, match=r"RLVRRun/a: spec.domains\[0\].dataset.uri: .*/data/math.jsonl does not exist"
    ):
        run_local([folder], options)
    assert not (options.workdir / "rlvrruns").exists()


def test_an_mt_opd_run_starts_once_its_teacher_run_succeeded(
    stand_ins: dict[str, Any], tmp_path: Path
) -> None:
    student = _run("student")
    student["spec"]["algorithm"].update(type="mt_opd", teachers=[{"domains": ["math"], "runRef": "a"}])
    folder, options = _setup(tmp_path, [student, _run("a")])
    assert run_local([folder], options) == 0
    status = _status(options, "RLVRRun", "student")
    assert (status["phase"], status["waitingFor"]) == ("Succeeded", [])
    assert status["teacherModels"] == ["pvc://ckpt/a/checkpoints/step-000002/model"]
    log = (options.workdir / "run.log").read_text()
    assert log.index("RLVRRun/student: - -> Waiting") < log.index("RLVRRun/a: Running -> Succeeded")
    assert log.index("RLVRRun/a: Running -> Succeeded") < log.index("RLVRRun/student: Waiting -> Pending")
    config = yaml.safe_load((options.workdir / "rlvrruns/student/config/trainer.yaml").read_text())
    # Colocated, the trainer loads the teacher's final model folder under the data root.
    assert config["algorithm"]["teachers"] == [
        {
            "domains": ["math"],
            "model": str((options.data_root / "ckpt/a/checkpoints/step-000002/model").resolve()),
        }
    ]


def test_sigint_stops_the_runner_even_when_the_shell_ignored_it() -> None:
    """A shell starts `m2rl run ... &` with SIGINT ignored (Python keeps an inherited SIG_IGN): the
    runner sets its own handler, so SIGINT still interrupts it, and it puts the old one back."""
    import os
    import signal

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        previous = runner_module._install_stop_signals()
        assert previous[signal.SIGINT] is signal.SIG_IGN
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # delivered to this thread before kill returns
        for number, handler in previous.items():
            signal.signal(number, handler)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
