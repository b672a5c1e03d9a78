"""Level-based status (pure), progress parsing, naming, settings and the operator's metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

from m2rl_operator import metrics, naming
from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.kube import results_of_pods
from m2rl_operator.lifecycle import Trainer, plan_run, scale_step
from m2rl_operator.progress import parse_progress
from m2rl_operator.settings import Images, OperatorOptions
from m2rl_operator.status import (
    Progress,
    RunObservation,
    eval_results_table,
    job_phase_status,
    job_state,
    latest_checkpoint_step,
    merge_analysis,
    run_status,
)
from m2rl_trainer.train.metrics import MetricsSink

TINY = yaml.safe_load((Path(__file__).parent / "cases" / "tiny-cpu.yaml").read_text())
NOW, LATER = "2026-11-22T03:00:00Z", "2026-11-22T03:05:00Z"


def _status(job: dict[str, Any] | None, old: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    parsed = RLVRRunSpec.model_validate({**TINY["spec"], "queueName": None, **spec})
    plan = plan_run(
        trainer=Trainer(job=job),
        suspend=parsed.suspend,
        queued=bool(parsed.queue_name),
        max_restarts=parsed.max_restarts,
        rollout_replicas=parsed.rollout.replicas,
        verifier_replicas=parsed.verifier.replicas,
        config_hash="h",
        old=old or {},
    )
    return run_status(
        parsed,
        RunObservation(
            job=job, rollout_ready=None, verifier_ready=1, progress=Progress(7, {"arith": {"reward": 0.5}})
        ),
        old=old or {},
        generation=3,
        now=NOW if old is None else LATER,
        plan=plan,
        final_model="pvc://c/final",
        checkpoint_uri=lambda step: f"pvc://c/step-{step}",
    )


@pytest.mark.parametrize(
    ("job", "state"),
    [
        (None, "Missing"),
        ({"spec": {}, "status": {}}, "Pending"),
        ({"spec": {"suspend": True}, "status": {}}, "Suspended"),
        ({"spec": {}, "status": {"active": 2}}, "Running"),
        ({"spec": {}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}, "Succeeded"),
        ({"spec": {}, "status": {"conditions": [{"type": "Failed", "status": "True"}]}}, "Failed"),
    ],
    ids=["missing", "pending", "suspended", "running", "succeeded", "failed"],
)
def test_job_state(job: dict[str, Any] | None, state: str) -> None:
    assert job_state(job) == state


def test_running_status_is_the_whole_expected_object() -> None:
    status = _status({"spec": {}, "status": {"active": 1}})
    condition = {"lastTransitionTime": NOW, "observedGeneration": 3}
    assert status == {
        "phase": "Running",
        "conditions": [
            {
                "type": "Created",
                "status": "True",
                "reason": "ChildrenCreated",
                "message": "trainer, rollout and verifier objects exist",
                **condition,
            },
            {
                "type": "ReplicaFailure",
                "status": "False",
                "reason": "PodsCreated",
                "message": "",
                **condition,
            },
            {
                "type": "VerifierReady",
                "status": "True",
                "reason": "ReplicasReady",
                "message": "1/1 verifier pods ready",
                **condition,
            },
            {
                "type": "Training",
                "status": "True",
                "reason": "TrainerRunning",
                "message": "step 7/20",
                **condition,
            },
            {"type": "Suspended", "status": "False", "reason": "NotSuspended", "message": "", **condition},
            {"type": "Succeeded", "status": "False", "reason": "NotComplete", "message": "", **condition},
            {"type": "Failed", "status": "False", "reason": "NotFailed", "message": "", **condition},
        ],
        "observedGeneration": 3,
        "totalSteps": 20,
        "restarts": 0,
        "attempt": 0,
        "startTime": NOW,
        "step": 7,
        "domains": [{"name": "arith", "reward": 0.5}],
    }


def test_transition_times_move_only_when_a_condition_flips() -> None:
    running = _status({"spec": {}, "status": {"active": 1}})
    done = _status(
        {"spec": {}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}, old=running
    )
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert times == {
        "Created": NOW,
        "ReplicaFailure": NOW,
        "VerifierReady": NOW,
        "Training": LATER,
        "Suspended": NOW,
        "Succeeded": LATER,
        "Failed": NOW,
    }
    assert (done["phase"], done["step"], done["finalModel"], done["completionTime"], done["startTime"]) == (
        "Succeeded",
        20,
        "pvc://c/final",
        LATER,
        NOW,
    )
    assert done["latestCheckpoint"] == {"uri": "pvc://c/step-20", "step": 20}


def test_suspended_spec_wins_over_a_pending_job() -> None:
    status = _status(None, suspend=True)
    assert status["phase"] == "Suspended"
    assert next(c for c in status["conditions"] if c["type"] == "Suspended")["status"] == "True"


def _kinds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_a_job_kueue_holds_is_queued_not_suspended() -> None:
    held = {"metadata": {"labels": {naming.KUEUE_QUEUE_LABEL: "q"}}, "spec": {"suspend": True}, "status": {}}
    status = _status(held, queueName="q")
    assert status["phase"] == "Queued"
    assert _kinds(status)["Queued"] == ("True", "AwaitingAdmission")
    assert _kinds(status)["Suspended"] == ("False", "NotSuspended")
    admitted = {**held, "spec": {"suspend": False}, "status": {"active": 1}}
    status = _status(admitted, old=status, queueName="q")
    assert (status["phase"], _kinds(status)["Queued"]) == ("Running", ("False", "Admitted"))
    # A namespace's default LocalQueue labels the Job without spec.queueName: still Kueue's.
    status = _status(held)
    assert (status["phase"], _kinds(status)["Queued"]) == ("Queued", ("True", "AwaitingAdmission"))


def test_failure_outcomes_keep_their_reason_once_terminal() -> None:
    deadline = {
        "spec": {},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]},
    }
    status = _status(deadline)
    assert (status["phase"], _kinds(status)["Failed"]) == ("Failed", ("True", "DeadlineExceeded"))
    again = _status(None, old=status)  # the Job is gone later: the outcome stays
    assert (again["phase"], _kinds(again)["Failed"], again["completionTime"]) == (
        "Failed", ("True", "DeadlineExceeded"), NOW,
    )  # fmt: skip


def _job(attempt: int, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"labels": {naming.ATTEMPT: str(attempt)}, "annotations": {"m2rl.io/config-hash": "h"}},
        "spec": {},
        "status": status,
    }


def _failed(reason: str, message: str = "") -> dict[str, Any]:
    return {"conditions": [{"type": "Failed", "status": "True", "reason": reason, "message": message}]}


DISRUPTION = "Pod ns/p has condition DisruptionTarget matching FailJob rule at index 0"


@pytest.mark.parametrize(
    ("job", "pods_left", "old", "suspend", "queued", "expected"),
    [
        # (action, attempt, restarts, rollout, verifier, terminal, reason)
        (None, 0, {}, False, False, ("create", 0, 0, 2, 1, None, "")),
        (None, 2, {"attempt": 1}, False, False, ("wait", 1, 0, 2, 1, None, "Restarting")),
        (_job(0, active=1), 0, {}, False, False, ("keep", 0, 0, 2, 1, None, "")),
        (_job(0, **_failed("BackoffLimitExceeded")), 0, {}, False, False,
         ("delete", 1, 1, 2, 1, None, "TrainerFailed")),
        (_job(1, **_failed("BackoffLimitExceeded")), 0, {"attempt": 1, "restarts": 3}, False, False,
         ("keep", 1, 3, 0, 0, "Failed", "TrainerFailed")),
        (_job(1, **_failed("PodFailurePolicy", DISRUPTION)), 0, {"attempt": 1, "restarts": 3}, False, False,
         ("delete", 2, 3, 2, 1, None, "Disruption")),
        (_job(0, **_failed("DeadlineExceeded")), 0, {}, False, False,
         ("keep", 0, 0, 0, 0, "Failed", "DeadlineExceeded")),
        (_job(0, conditions=[{"type": "Complete", "status": "True"}]), 0, {}, False, False,
         ("keep", 0, 0, 0, 0, "Succeeded", "")),
        ({**_job(0), "metadata": {"labels": {}, "annotations": {"m2rl.io/config-hash": "old"}}}, 0, {},
         False, False,
         ("delete", 1, 0, 2, 1, None, "ConfigChanged")),
        (_job(0), 0, {"attempt": 1}, False, False, ("delete", 1, 0, 2, 1, None, "Restarting")),  # stale Job
        (_job(0, active=1), 0, {}, True, False, ("delete", 0, 0, 0, 0, None, "Suspended")),
        (None, 0, {}, True, False, ("keep", 0, 0, 0, 0, None, "")),
        ({**_job(0), "spec": {"suspend": True}}, 0, {}, False, True,
         ("keep", 0, 0, 0, 0, None, "")),  # queued
        ({**_job(0), "spec": {"suspend": False}}, 0, {}, False, True,
         ("keep", 0, 0, 2, 1, None, "")),  # admitted
        (None, 0, {"phase": "Succeeded", "completionTime": NOW}, False, False,
         ("keep", 0, 0, 0, 0, "Succeeded", "")),
    ],
    ids=[
        "missing-create", "old-pods-wait", "running", "failed-restart", "failed-final",
        "disruption-not-counted",
        "deadline-final", "complete", "config-changed", "stale-attempt", "suspend-deletes", "suspended",
        "kueue-queued", "kueue-admitted", "finished-stays",
    ],
)  # fmt: skip
def test_plan_run_decisions(
    job: dict[str, Any] | None,
    pods_left: int,
    old: dict[str, Any],
    suspend: bool,
    queued: bool,
    expected: tuple,
) -> None:
    plan = plan_run(
        trainer=Trainer(job=job, pods_left=pods_left),
        suspend=suspend,
        queued=queued,
        max_restarts=3,
        rollout_replicas=2,
        verifier_replicas=1,
        config_hash="h",
        old=old,
        teacher_replicas=3,
        environment_replicas=4,
    )
    got = (plan.action, plan.attempt, plan.restarts, plan.rollout_replicas, plan.verifier_replicas)
    assert (*got, plan.terminal, plan.reason) == expected
    # MT-OPD teachers and the agent environment follow the rollout servers: on, or none at all.
    on = plan.rollout_replicas > 0
    assert (plan.teacher_replicas, plan.environment_replicas) == ((3, 4) if on else (0, 0))


@pytest.mark.parametrize(
    ("current", "desired", "kueue", "pods_gone", "step"),
    [
        (2, 2, True, False, None),
        (1, 3, False, False, 3),  # without Kueue: straight there
        (1, 3, True, False, 0),  # Kueue's StatefulSet webhook: n -> m only through zero
        (0, 3, True, False, None),  # ... and from zero only once the old pods are gone
        (0, 3, True, True, 3),
        (3, 0, True, False, 0),
    ],
)
def test_scale_step_follows_kueues_statefulset_rules(
    current: int, desired: int, kueue: bool, pods_gone: bool, step: int | None
) -> None:
    assert scale_step(current, desired, kueue=kueue, pods_gone=pods_gone) == step


def test_a_dependents_job_status_derives_dependencies_ready_from_a_stale_waiting_status() -> None:
    # The Job exists only once every reference resolved: an older status saying Waiting (read before
    # the Job was created) must not survive into the Job's status (a race CI once hit).
    stale = {
        "phase": "Waiting",
        "startTime": NOW,
        "conditions": [
            {
                "type": "WaitingForDependencies",
                "status": "True",
                "reason": "Waiting",
                "message": "w",
                "lastTransitionTime": NOW,
                "observedGeneration": 1,
            }
        ],
    }
    complete = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    status = job_phase_status(complete, old=stale, generation=1, now=LATER, output="pvc://c/m", what="Merge")
    assert status["phase"] == "Succeeded"
    assert {c["type"]: (c["status"], c["reason"], c["lastTransitionTime"]) for c in status["conditions"]} == {
        "WaitingForDependencies": ("False", "DependenciesReady", LATER),
        "Created": ("True", "ChildrenCreated", LATER),
        "ReplicaFailure": ("False", "PodsCreated", LATER),
        "Succeeded": ("True", "MergeComplete", LATER),
        "Failed": ("False", "NotFailed", LATER),
    }


@pytest.mark.parametrize(
    ("progress", "old", "succeeded", "expected"),
    [
        (None, {}, False, None),
        (Progress(12), {}, False, None),  # no checkpoint written yet
        (Progress(12, checkpoint_step=10), {}, False, 10),  # as the trainer reports it
        (None, {"latestCheckpoint": {"step": 10}}, False, 10),  # trainer restarting: kept
        (Progress(3), {"latestCheckpoint": {"step": 10}}, False, 10),
        (None, {}, True, 20),  # the final checkpoint
    ],
)
def test_latest_checkpoint_step(
    progress: Progress | None, old: dict[str, Any], succeeded: bool, expected: int | None
) -> None:
    assert latest_checkpoint_step(progress, old, succeeded, 20) == expected


def test_progress_from_the_trainers_own_metrics(tmp_path: Path) -> None:
    sink = MetricsSink(tmp_path / "a.jsonl", None, "a")
    sink.log(
        {"step": 42, "per_domain": {"math": {"reward": 0.75, "accuracy": 0.5}, "code": {"reward": 0.25}}}
    )
    sink.checkpoint_written(40)
    other = MetricsSink(tmp_path / "o.jsonl", None, "other")
    other.log({"step": 7})
    text = prometheus_client.generate_latest(sink.registry).decode()
    text += prometheus_client.generate_latest(other.registry).decode()
    assert parse_progress(text, "a") == Progress(
        42, {"math": {"reward": 0.75, "accuracy": 0.5}, "code": {"reward": 0.25}}, checkpoint_step=40
    )
    assert parse_progress(text, "other") == Progress(7)
    assert parse_progress(text, "missing") is None


def test_the_operator_scrapes_the_names_the_trainer_exports() -> None:
    """progress.py repeats the trainer's names (the operator does not import the trainer package):
    the two must stay equal, and the sink must export them under those names."""
    from m2rl_operator import progress
    from m2rl_trainer.train import metrics as trainer_metrics

    names = ("STEP", "CHECKPOINT_STEP", "DOMAIN_REWARD", "DOMAIN_ACCURACY")
    assert [getattr(progress, n) for n in names] == [getattr(trainer_metrics, n) for n in names]
    assert progress.DOMAIN_ACCURACY == "m2rl_train_domain_accuracy_ratio"


def test_child_names_and_labels() -> None:
    assert [
        naming.trainer("r"),
        naming.rollout("r"),
        naming.verifier("r"),
        naming.checkpoints_claim("r"),
    ] == [
        "r-trainer",
        "r-rollout",
        "r-verifier",
        "r-checkpoints",
    ]
    assert naming.trainer_host("r", "ns", 1) == "r-trainer-1.r-trainer.ns.svc"
    assert naming.labels("RLVRRun", "r", "trainer", "q") == {
        "app.kubernetes.io/name": "m2rl",
        "app.kubernetes.io/instance": "r",
        "app.kubernetes.io/component": "trainer",
        "app.kubernetes.io/part-of": "m2rl",
        "app.kubernetes.io/managed-by": "m2rl-operator",
        "m2rl.io/rlvrrun": "r",
        "kueue.x-k8s.io/queue-name": "q",
    }
    # The longest allowed owner name (40) keeps every child name within a DNS label (63).
    longest = "x" * 40
    assert max(len(n) for n in (naming.checkpoints_claim(longest), f"{naming.rollout(longest)}-1023")) <= 63


def test_options_from_the_charts_environment() -> None:
    env = {"M2RL_IMAGE_TRAINER": "t:1", "M2RL_IMAGE_EVAL": "e:1", "M2RL_METRICS_PORT": "9090"}
    options = OperatorOptions.from_env(env)
    assert options.images == Images(trainer="t:1", eval="e:1")
    assert (options.metrics_port, options.status_interval_s) == (9090, 30.0)
    assert OperatorOptions.from_env({}).metrics_port is None
    assert not options.leader_election.enabled and options.metrics_from == ()
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    env |= {"M2RL_LEADER_ELECTION": "true", "POD_NAME": "op-1", "POD_NAMESPACE": "m2rl",
            "M2RL_HEALTH_PORT": "8080", "M2RL_METRICS_FROM": json.dumps(peers)}  # fmt: skip
    options = OperatorOptions.from_env(env)
    election = options.leader_election
    assert (election.enabled, election.identity, election.namespace, election.standby_health_port) == (
        True, "op-1", "m2rl", 8080,
    )  # fmt: skip
    assert options.metrics_from == tuple(peers)
    with pytest.raises(ValueError, match="POD_NAME and POD_NAMESPACE"):
        OperatorOptions.from_env({"M2RL_LEADER_ELECTION": "true"})
    with pytest.raises(ValueError, match="M2RL_METRICS_FROM"):
        OperatorOptions.from_env({"M2RL_METRICS_FROM": '{"not": "a list"}'})


def test_reconcile_metrics_count_time_and_phase() -> None:
    def value(name: str, labels: dict[str, str]) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("m2rl_operator_reconciles_total", {"kind": "Test", "result": "ok"})
    with metrics.reconcile("Test"):
        pass
    with pytest.raises(ValueError), metrics.reconcile("Test"):
        raise ValueError("boom")
    assert value("m2rl_operator_reconciles_total", {"kind": "Test", "result": "ok"}) == before + 1
    assert value("m2rl_operator_reconcile_errors_total", {"kind": "Test", "error": "ValueError"}) >= 1
    assert value("m2rl_operator_reconcile_duration_seconds_count", {"kind": "Test"}) >= 2
    metrics.set_phase("Test", "ns", "a", "Running")
    metrics.set_phase("Test", "ns", "b", "Running")
    metrics.set_phase("Test", "ns", "b", "Succeeded")
    assert value("m2rl_operator_resources", {"kind": "Test", "phase": "Running"}) == 1
    assert value("m2rl_operator_resources", {"kind": "Test", "phase": "Succeeded"}) == 1
    # One series per resource for the phase it is in (the chart's M2RLRunFailed alert reads it).
    phase = "m2rl_operator_resource_phase"
    assert value(phase, {"kind": "Test", "namespace": "ns", "name": "b", "phase": "Succeeded"}) == 1
    assert (
        metrics.REGISTRY.get_sample_value(
            phase, {"kind": "Test", "namespace": "ns", "name": "b", "phase": "Running"}
        )
        is None
    )
    metrics.set_phase("Test", "ns", "a", None)
    assert value("m2rl_operator_resources", {"kind": "Test", "phase": "Running"}) == 0
    assert (
        metrics.REGISTRY.get_sample_value(
            phase, {"kind": "Test", "namespace": "ns", "name": "a", "phase": "Running"}
        )
        is None
    )
    metrics.set_phase("Test", "ns", "b", None)


def _pod(job: str, index: int, created: str, message: str | None, phase: str = "Succeeded") -> dict[str, Any]:
    terminated = {"exitCode": 0} | ({"message": message} if message is not None else {})
    return {
        "metadata": {
            "labels": {"job-name": job},
            "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            "creationTimestamp": created,
        },
        "status": {"phase": phase, "containerStatuses": [{"state": {"terminated": terminated}}]},
    }


def test_results_of_pods_one_per_index_latest_wins_and_junk_is_skipped() -> None:
    pods = [
        _pod("ev-eval", 1, NOW, '{"model": "b", "try": 1}'),
        _pod("ev-eval", 1, LATER, '{"model": "b", "try": 2}'),  # index 1 ran again: the later pod wins
        _pod("ev-eval", 0, NOW, '{"model": "a"}'),
        _pod("ev-eval", 2, NOW, "Traceback (most recent call last): ..."),  # logs, not a result
        _pod("ev-eval", 3, NOW, '{"model": "d"}', phase="Failed"),
        _pod("ev-eval", 4, NOW, None),
        _pod("other-job", 5, NOW, '{"model": "x"}'),
    ]
    assert results_of_pods(pods, "ev-eval") == [{"model": "a"}, {"model": "b", "try": 2}]


def test_eval_table_marks_missing_cells_by_the_jobs_phase_and_keeps_completion_times() -> None:
    layout = [("b1", ["avg@k", "pass@k"]), ("b2", ["avg@k"])]
    results = [
        {"model": "m1", "cells": [[8, 0.5, 0.75], [4, 0.25]]},
        {"model": "m2", "cells": [[8, 0.5], [4, 0.25]]},  # b1's row lacks a metric: not used
    ]
    old = {"results": [{"model": "m1", "benchmark": "b1", "phase": "Succeeded", "completionTime": NOW}]}
    running = eval_results_table(["m1", "m2"], layout, results, job_phase="Running", old=old, now=LATER)
    assert running == [
        {"model": "m1", "benchmark": "b1", "phase": "Succeeded", "metrics": {"avg@k": 0.5, "pass@k": 0.75},
         "prompts": 8, "completionTime": NOW},
        {"model": "m1", "benchmark": "b2", "phase": "Succeeded", "metrics": {"avg@k": 0.25}, "prompts": 4,
         "completionTime": LATER},
        {"model": "m2", "benchmark": "b1", "phase": "Running"},
        {"model": "m2", "benchmark": "b2", "phase": "Succeeded", "metrics": {"avg@k": 0.25}, "prompts": 4,
         "completionTime": LATER},
    ]  # fmt: skip
    failed = eval_results_table(["m1", "m2"], layout, results[:1], job_phase="Failed", old={}, now=LATER)
    assert [c["phase"] for c in failed] == ["Succeeded", "Succeeded", "Failed", "Failed"]
    wrong_length = [{"model": "m1", "cells": [[8, 0.5, 0.75]]}]  # one row for two benchmarks
    assert {c["phase"] for c in eval_results_table(["m1"], layout, wrong_length, job_phase="Pending",
                                                    old={}, now=LATER)} == {"Pending"}  # fmt: skip


def test_merge_analysis_points_at_the_report_next_to_the_output() -> None:
    result = {"analysis": {"taskVectorNorms": {"a": 1.0}, "reportFile": "analysis/report.json"}}
    assert merge_analysis([result], "pvc://c/merges/x/") == {
        "taskVectorNorms": {"a": 1.0},
        "reportUri": "pvc://c/merges/x/analysis/report.json",
    }
    assert merge_analysis([], "pvc://c/m") is None
