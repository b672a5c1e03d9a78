"""Level-based status: phase and conditions computed from the children's observed state only.

Pure functions: the same observations always give the same status (except timestamps, which are
kept from the previous status while a condition does not change). The handlers observe, call these
and patch the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.rlvrrun import AgentSpec, RLVRRunSpec, TeacherServerSpec
from m2rl_operator.builders.references import rlvrrun_references
from m2rl_operator.lifecycle import RunPlan, kueue_managed
from m2rl_operator.naming import KUEUE_QUEUE_LABEL

Status = dict[str, Any]


@dataclass(frozen=True)
class Progress:
    """Training progress read from the trainer's metrics endpoint."""

    step: int
    domains: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> reward, accuracy
    checkpoint_step: int | None = None  # the newest checkpoint the trainer finished writing


@dataclass(frozen=True)
class RunObservation:
    """What the operator saw of an RLVRRun's children."""

    job: Mapping[str, Any] | None  # the trainer Job, None when it does not exist (yet)
    rollout_ready: int | None  # readyReplicas of the rollout StatefulSet; None in colocated mode
    verifier_ready: int
    progress: Progress | None = None
    create_error: str | None = None
    """The API server refused to create a child: which one, and its message."""
    pod_failures: tuple[str, ...] = ()
    """Children that cannot create their pods (FailedCreate): "Kind/name: the API server's message"."""
    teachers_ready: tuple[int, ...] | None = None
    """readyReplicas of each MT-OPD teacher's StatefulSet; None when no teacher is served."""
    environment_ready: int | None = None
    """readyReplicas of the agent environment Deployment; None without agent domains."""


def job_state(job: Mapping[str, Any] | None) -> str:
    """Missing, Suspended, Succeeded, Failed, Running or Pending, from a Job's status."""
    if job is None:
        return "Missing"
    status = job.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conditions.get("Complete") == "True":
        return "Succeeded"
    if conditions.get("Failed") == "True":
        return "Failed"
    if (job.get("spec") or {}).get("suspend"):
        return "Suspended"
    if (status.get("active") or 0) > 0:
        return "Running"
    return "Pending"


def condition(
    old: Status, type_: str, ok: bool, reason: str, message: str, generation: int | None, now: str
) -> dict[str, Any]:
    """A metav1.Condition; lastTransitionTime moves only when the status flips."""
    status = "True" if ok else "False"
    previous = next((c for c in old.get("conditions") or [] if c.get("type") == type_), None)
    since = previous["lastTransitionTime"] if previous and previous.get("status") == status else now
    result = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def latest_checkpoint_step(progress: Progress | None, old: Status, succeeded: bool, total: int) -> int | None:
    """The newest complete checkpoint: as the trainer reports it (written after the rename that
    completes it), else the last one seen (the trainer restarts), and the final one on success."""
    if succeeded:
        return total
    if progress is not None and progress.checkpoint_step is not None:
        return progress.checkpoint_step
    return (old.get("latestCheckpoint") or {}).get("step")


def creation_conditions(
    old: Status,
    observed_error: str | None,
    pod_failures: tuple[str, ...],
    created: bool,
    what: str,
    generation: int | None,
    now: str,
) -> list[dict[str, Any]]:
    """Created (False with the API server's message when it refused a child) and ReplicaFailure
    (True, reason FailedCreate, when a child cannot create its pods: admission refused them, e.g.
    the namespace's Pod Security level or a quota; as a ReplicaSet reports it)."""
    if observed_error:
        created_row = ("Created", False, "CreateFailed", observed_error)
    elif created:
        created_row = ("Created", True, "ChildrenCreated", f"{what} exist")
    else:
        created_row = ("Created", False, "Creating", "creating children")
    failure_row = (
        ("ReplicaFailure", True, "FailedCreate", "; ".join(pod_failures))
        if pod_failures
        else ("ReplicaFailure", False, "PodsCreated", "")
    )
    return [
        condition(old, t, ok, reason, message, generation, now)
        for t, ok, reason, message in (created_row, failure_row)
    ]


def run_status(
    spec: RLVRRunSpec,
    observed: RunObservation,
    *,
    old: Status,
    generation: int | None,
    now: str,
    plan: RunPlan,
    final_model: str,
    checkpoint_uri: Any,
    teacher_models: list[str] | None = None,
) -> Status:
    """The whole status of an RLVRRun. `checkpoint_uri(step)` gives a checkpoint's model URI; `plan`
    is the refresh's decision (lifecycle.plan_run: terminal outcome, attempt, restarts, why);
    `teacher_models` the MT-OPD teachers' models as they resolved (their references have succeeded:
    a run waiting for them has `waiting_status` instead)."""
    state = job_state(observed.job)
    kueue = bool(spec.queue_name) or kueue_managed(observed.job)  # a default LocalQueue labels it too
    queued = kueue and state == "Suspended"
    if plan.terminal:
        phase = plan.terminal
    elif spec.suspend:
        phase = "Suspended"
    elif queued:
        phase = "Queued"
    else:
        phase = "Running" if state == "Running" else "Pending"
    rollout_needed = spec.rollout.mode == "server"
    rollout_ok = not rollout_needed or (observed.rollout_ready or 0) >= spec.rollout.replicas
    verifier_ok = observed.verifier_ready >= spec.verifier.replicas
    total = spec.algorithm.steps
    step = (
        total if phase == "Succeeded" else (observed.progress.step if observed.progress else old.get("step"))
    )
    suspended = phase == "Suspended"
    training, succeeded, failed = phase == "Running", phase == "Succeeded", phase == "Failed"
    ready = observed.rollout_ready or 0
    created = observed.job is not None or suspended or bool(plan.terminal)
    c = creation_conditions(
        old, observed.create_error, observed.pod_failures, created,
        "trainer, rollout and verifier objects", generation, now,
    )  # fmt: skip
    # (type, true?, reason, message) of each further condition, in a fixed order.
    rows: list[tuple[str, bool, str, str]] = []
    if rollout_needed:
        rows.append(
            (
                "RolloutReady",
                rollout_ok,
                "ReplicasReady" if rollout_ok else "ReplicasNotReady",
                f"{ready}/{spec.rollout.replicas} vLLM servers ready",
            )
        )
    if observed.teachers_ready is not None:
        per_teacher = (spec.teacher_servers or TeacherServerSpec()).replicas
        teachers_ok = all(r >= per_teacher for r in observed.teachers_ready)
        rows.append(
            (
                "TeachersReady",
                teachers_ok,
                "ReplicasReady" if teachers_ok else "ReplicasNotReady",
                f"{sum(observed.teachers_ready)}/{per_teacher * len(observed.teachers_ready)} "
                "teacher vLLM servers ready",
            )
        )
    rows.append(
        (
            "VerifierReady",
            verifier_ok,
            "ReplicasReady" if verifier_ok else "ReplicasNotReady",
            f"{observed.verifier_ready}/{spec.verifier.replicas} verifier pods ready",
        )
    )
    if observed.environment_ready is not None:
        wanted = (spec.agent or AgentSpec()).replicas
        environment_ok = observed.environment_ready >= wanted
        rows.append(
            (
                "EnvironmentReady",
                environment_ok,
                "ReplicasReady" if environment_ok else "ReplicasNotReady",
                f"{observed.environment_ready}/{wanted} agent environment pods ready",
            )
        )
    if kueue:
        rows.append(
            (
                "Queued",
                queued and not suspended,
                "AwaitingAdmission" if queued else "Admitted" if observed.job is not None else "NotQueued",
                "Kueue has not admitted the trainer Job yet; rollout servers and verifier start once it has"
                if queued
                else "",
            )
        )
    if training:
        training_row = ("Training", True, "TrainerRunning", f"step {step or 0}/{total}")
    elif plan.reason and not plan.terminal and not suspended:
        training_row = ("Training", False, plan.reason, plan.message)
    else:
        training_row = ("Training", False, f"Trainer{state}", f"trainer Job is {state.lower()}")
    rows += [
        training_row,
        (
            "Suspended",
            suspended,
            "SpecSuspend" if suspended else "NotSuspended",
            "spec.suspend is true: pods stopped, checkpoints kept" if suspended else "",
        ),
        (
            "Succeeded",
            succeeded,
            "TrainingComplete" if succeeded else "NotComplete",
            f"trained {total} steps; final model {final_model}" if succeeded else "",
        ),
        (
            "Failed",
            failed,
            (plan.reason or "TrainerFailed") if failed else "NotFailed",
            plan.message if failed else "",
        ),
    ]
    c += [condition(old, type_, ok, reason, message, generation, now) for type_, ok, reason, message in rows]
    if rlvrrun_references(spec):  # the teachers' runs and merges succeeded: the run started
        c = [*dependency_conditions(old, [], [], generation, now), *c]
    status: Status = {
        "phase": phase,
        "conditions": c,
        "observedGeneration": generation,
        "totalSteps": total,
        "restarts": plan.restarts,
        "attempt": plan.attempt,
        "startTime": old.get("startTime") or now,
    }
    if step is not None:
        status["step"] = step
    ckpt = latest_checkpoint_step(observed.progress, old, succeeded, total)
    if ckpt is not None:
        status["latestCheckpoint"] = {"uri": checkpoint_uri(ckpt), "step": ckpt}
    if observed.progress and observed.progress.domains:
        status["domains"] = [{"name": n, **v} for n, v in sorted(observed.progress.domains.items())]
    elif old.get("domains"):
        status["domains"] = old["domains"]
    if phase in ("Succeeded", "Failed"):
        status["completionTime"] = old.get("completionTime") or now
    if phase == "Succeeded":
        status["finalModel"] = final_model
    if teacher_models is not None:
        status["teacherModels"] = list(teacher_models)
    if rlvrrun_references(spec):
        status["waitingFor"] = []
    return status


def waiting_status(
    old: Status, waiting: list[str], failed: list[str], generation: int | None, now: str
) -> Status:
    """The status of a resource whose references have not all succeeded (an MT-OPD run, a MergeJob,
    an EvalSuite): Waiting, or Failed (DependencyFailed) once one failed; Pending when none is
    missing (a local runner's job waiting for a slot)."""
    status: Status = {
        "phase": "Failed" if failed else "Waiting" if waiting else "Pending",
        "observedGeneration": generation,
        "waitingFor": waiting,
        "startTime": old.get("startTime") or now,
        "conditions": dependency_conditions(old, waiting, failed, generation, now),
    }
    if failed:
        status["completionTime"] = old.get("completionTime") or now
    return status


def dependency_conditions(
    old: Status, waiting_for: list[str], failed: list[str], generation: int | None, now: str
) -> list[dict[str, Any]]:
    """The WaitingForDependencies condition of a MergeJob, an EvalSuite or an MT-OPD run."""
    if failed:
        return [condition(old, "WaitingForDependencies", False, "DependencyFailed",
                          f"referenced {', '.join(failed)} failed", generation, now)]  # fmt: skip
    waiting = bool(waiting_for)
    message = f"waiting for {', '.join(waiting_for)} to succeed" if waiting else "all references succeeded"
    return [condition(old, "WaitingForDependencies", waiting, "Waiting" if waiting else "DependenciesReady",
                      message, generation, now)]  # fmt: skip


def job_phase_status(
    job: Mapping[str, Any] | None,
    *,
    old: Status,
    generation: int | None,
    now: str,
    output: str | None,
    what: str,
    suspend: bool = False,
    create_error: str | None = None,
    pod_failures: tuple[str, ...] = (),
) -> Status:
    """Status of a MergeJob/EvalSuite whose dependencies are resolved, from its one Job.

    The Job is created only once every reference resolved, so WaitingForDependencies is derived
    here (False, DependenciesReady) rather than carried over from an older status. A suspended
    Job is Queued when Kueue manages it (its queue label), Suspended when the spec asks.
    """
    state = job_state(job)
    labels = ((job or {}).get("metadata") or {}).get("labels") or {}
    if state == "Suspended":
        phase = "Suspended" if suspend else "Queued" if labels.get(KUEUE_QUEUE_LABEL) else "Pending"
    else:
        phase = {"Missing": "Pending", "Pending": "Pending"}.get(state, state)
    done = phase in ("Succeeded", "Failed")
    failed = next(
        (c for c in ((job or {}).get("status") or {}).get("conditions") or [] if c.get("type") == "Failed"),
        {},
    )
    deadline = failed.get("reason") == "DeadlineExceeded"
    status: Status = {
        "phase": phase,
        "observedGeneration": generation,
        "startTime": old.get("startTime") or now,
        "conditions": [
            *dependency_conditions(old, [], [], generation, now),
            *creation_conditions(
                old,
                create_error,
                pod_failures,
                job is not None,
                f"the {what.lower()} Job and its config",
                generation,
                now,
            ),
            condition(
                old,
                "Succeeded",
                phase == "Succeeded",
                f"{what}Complete" if phase == "Succeeded" else "NotComplete",
                f"output {output}" if phase == "Succeeded" and output else "",
                generation,
                now,
            ),
            condition(
                old,
                "Failed",
                phase == "Failed",
                ("DeadlineExceeded" if deadline else f"{what}Failed") if phase == "Failed" else "NotFailed",
                (failed.get("message") or f"the {what.lower()} Job failed") if phase == "Failed" else "",
                generation,
                now,
            ),
        ],
        "waitingFor": [],
    }
    if done:
        status["completionTime"] = old.get("completionTime") or now
    return status


def merge_analysis(results: list[Status], output_uri: str) -> Status | None:
    """status.analysis of a MergeJob from its pod's result ({"analysis": {..., "reportFile": name}})."""
    analysis = next((r["analysis"] for r in results if isinstance(r.get("analysis"), dict)), None)
    if analysis is None:
        return None
    summary = {k: v for k, v in analysis.items() if k != "reportFile"}
    if report := analysis.get("reportFile"):
        summary["reportUri"] = f"{output_uri.rstrip('/')}/{report}"
    return summary


def eval_analysis(results: list[Status], output_uri: str | None) -> Status | None:
    """status.analysis of an EvalSuite from its analysis pod's result ({"analysis": {..., "reportFile"}})."""
    analysis = next((r["analysis"] for r in results if isinstance(r.get("analysis"), dict)), None)
    if analysis is None:
        return None
    summary = {k: v for k, v in analysis.items() if k != "reportFile"}
    if (report := analysis.get("reportFile")) and output_uri:
        summary["reportUri"] = f"{output_uri.rstrip('/')}/{report}"
    return summary


def eval_results_table(
    models: list[str],
    benchmarks: list[tuple[str, list[str]]],
    results: list[Status],
    *,
    job_phase: str,
    old: Status,
    now: str,
) -> list[Status]:
    """The models x benchmarks table of an EvalSuite, from its pods' results.

    Each pod reports one model, positionally (m2rl_trainer.eval.cli.termination_result):
    {"model": name, "cells": [[prompts, value, ...]]}, a row per (name, metric names) of
    `benchmarks`, in order. A row that does not match its benchmark's metrics is not used. A cell
    without a result is Pending or Running with the Job, and Failed once the Job failed or finished
    without it.
    """
    reported: dict[tuple[str, str], Status] = {}
    for result in results:
        rows = result.get("cells")
        if not isinstance(rows, list) or len(rows) != len(benchmarks):
            continue
        for (benchmark, metrics), row in zip(benchmarks, rows, strict=True):
            if isinstance(row, list) and len(row) == 1 + len(metrics):
                reported[(str(result.get("model")), benchmark)] = {
                    "prompts": int(row[0]),
                    "metrics": {name: float(value) for name, value in zip(metrics, row[1:], strict=True)},
                }
    old_cells = {(c.get("model"), c.get("benchmark")): c for c in old.get("results") or []}
    unreported = {"Pending": "Pending", "Running": "Running"}.get(job_phase, "Failed")
    table = []
    for model in models:
        for benchmark, _ in benchmarks:
            cell = reported.get((model, benchmark))
            if cell is None:
                table.append({"model": model, "benchmark": benchmark, "phase": unreported})
                continue
            previous = old_cells.get((model, benchmark)) or {}
            table.append(
                {
                    "model": model,
                    "benchmark": benchmark,
                    "phase": "Succeeded",
                    **cell,
                    "completionTime": previous.get("completionTime") or now,
                }
            )
    return table


def results_needed(kind: str, job: Mapping[str, Any] | None) -> bool:
    """Whether `dependent_status` reads the pods' results: a merge's once its Job succeeded, an
    evaluation's always (its table fills as each model's pod finishes)."""
    return kind == "EvalSuite" or job_state(job) == "Succeeded"


def dependent_status(
    kind: str,
    spec: MergeJobSpec | EvalSuiteSpec,
    job: Mapping[str, Any] | None,
    results: list[Status],
    *,
    old: Status,
    generation: int | None,
    now: str,
    suspend: bool = False,
    create_error: str | None = None,
    pod_failures: tuple[str, ...] = (),
) -> Status:
    """The status of a MergeJob or EvalSuite whose references resolved, from its Job and the
    results its pods reported (termination messages; see `results_needed`). The operator and the
    local runner (`m2rl run`) both compute it here."""
    output = spec.output.uri if isinstance(spec, MergeJobSpec) else None
    what = "Merge" if kind == "MergeJob" else "Evaluation"
    status = job_phase_status(
        job,
        old=old,
        generation=generation,
        now=now,
        output=output,
        what=what,
        suspend=suspend,
        create_error=create_error,
        pod_failures=pod_failures,
    )
    if isinstance(spec, MergeJobSpec) and status["phase"] == "Succeeded":
        status["outputModel"] = output
        if (analysis := merge_analysis(results, output or "")) is not None:
            status["analysis"] = analysis
    if isinstance(spec, EvalSuiteSpec):
        table = eval_results_table(
            [m.name for m in spec.models],
            [(b.name, list(b.metrics)) for b in spec.benchmarks],
            results,
            job_phase=status["phase"],
            old=old,
            now=now,
        )
        if (analysis := eval_analysis(results, spec.output.uri if spec.output else None)) is not None:
            status["analysis"] = analysis
        status["results"] = table
        status["cellsTotal"] = len(table)
        status["cellsSucceeded"] = sum(c["phase"] == "Succeeded" for c in table)
    return status
