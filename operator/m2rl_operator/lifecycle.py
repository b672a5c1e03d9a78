"""What an RLVRRun's children should be doing now: pure decisions from the observed state.

`plan_run` looks at the trainer Job, its pods, the run's spec and its last status, and returns what
to change (create, delete or keep the trainer Job; how many rollout and verifier replicas) and the
bookkeeping (attempt, counted restarts, why). `reconcile.refresh_run` observes, calls it, executes.

The rules, and where they come from:
- Kueue owns `suspend` of a Job with its queue label (jobframework reconciler: it unsuspends an
  admitted Job and suspends one that is not admitted); the operator creates such a Job suspended
  and never writes `suspend` again. Suspending the run deletes the trainer Job instead (Kueue
  frees the quota with its Workload); resuming creates it again, and the trainer continues from its
  latest checkpoint.
- Restarts as JobSet does them (pkg/controllers/jobset_controller.go deleteJobs): the failed Job
  is deleted with Foreground propagation and a new one is created only when no trainer pod is left;
  the Service selects only the new attempt's pods (its restart-attempt label).
- A Job that failed by its disruption rule (podFailurePolicy FailJob on DisruptionTarget: reason
  PodFailurePolicy, "rule at index 0") restarts without counting against maxRestarts (JobSet's
  RestartJobSetAndIgnoreMaxRestarts); DeadlineExceeded is final.
- The trainer reads its config once: a Job started with another config (a mutable field changed,
  e.g. rollout.replicas) is restarted, not counted.
- With Kueue, rollout servers, teacher servers, the verifier and the agent environment start only
  once the trainer is admitted, so a queued run holds no GPUs; a finished, failed or suspended run
  keeps none either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from m2rl_operator import naming

TrainerAction = Literal["keep", "create", "delete", "wait"]
DISRUPTION_RULE_MESSAGE = re.compile(r"matching FailJob rule at index 0\b")


@dataclass(frozen=True)
class Trainer:
    """The observed trainer Job and pods."""

    job: Mapping[str, Any] | None
    pods_left: int = 0
    """Trainer pods of the run that still exist (any attempt), deleting or not."""


@dataclass(frozen=True)
class RunPlan:
    action: TrainerAction
    attempt: int
    """The attempt the trainer Job has (keep) or gets (create) or the next one (delete, wait)."""
    restarts: int
    """Restarts counted against maxRestarts."""
    rollout_replicas: int
    verifier_replicas: int
    teacher_replicas: int = 0
    """Replicas of each MT-OPD teacher's vLLM StatefulSet (server mode)."""
    environment_replicas: int = 0
    """Replicas of the agent environment Deployment."""
    terminal: str | None = None
    """Succeeded or Failed once the run is over (the trainer Job completed or failed for good)."""
    reason: str = ""
    """Why: TrainerFailed, DeadlineExceeded, Disruption, ConfigChanged, Restarting... ("" = nothing)."""
    message: str = ""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message) Events to post: Normal or Warning."""


def job_condition(job: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    for c in ((job or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_ and c.get("status") == "True":
            return c  # type: ignore[no-any-return]
    return None


def job_attempt(job: Mapping[str, Any]) -> int:
    meta = job.get("metadata") or {}
    value = (meta.get("labels") or {}).get(naming.ATTEMPT) or (meta.get("annotations") or {}).get(
        naming.ATTEMPT
    )
    return int(value or 0)


def kueue_managed(job: Mapping[str, Any] | None) -> bool:
    """Kueue owns the Job's suspend: it has a queue label (ours, or its default LocalQueue's)."""
    return bool(((job or {}).get("metadata") or {}).get("labels", {}).get(naming.KUEUE_QUEUE_LABEL))


def admitted(job: Mapping[str, Any] | None) -> bool:
    """The trainer may run: the Job exists and is not suspended (by Kueue, awaiting admission)."""
    return job is not None and not (job.get("spec") or {}).get("suspend")


def plan_run(
    *,
    trainer: Trainer,
    suspend: bool,
    queued: bool,
    max_restarts: int,
    rollout_replicas: int,
    verifier_replicas: int,
    config_hash: str,
    old: Mapping[str, Any],
    teacher_replicas: int = 0,
    environment_replicas: int = 0,
) -> RunPlan:
    """The decision for one refresh. `queued`: the run uses Kueue (spec.queueName); `old`: the
    last published status (phase, attempt, restarts). The servers beside the trainer (rollout,
    teachers, verifier, environment) follow the same rule: on while the trainer may run, else 0."""
    attempt = int(old.get("attempt") or 0)
    restarts = int(old.get("restarts") or 0)
    job = trainer.job

    def plan(action: TrainerAction, *, running: bool, **kw: Any) -> RunPlan:
        gated = queued and not admitted(job)
        on = running and not gated
        return RunPlan(
            action=action,
            attempt=kw.pop("attempt", attempt),
            restarts=kw.pop("restarts", restarts),
            rollout_replicas=rollout_replicas if on else 0,
            verifier_replicas=verifier_replicas if on else 0,
            teacher_replicas=teacher_replicas if on else 0,
            environment_replicas=environment_replicas if on else 0,
            **kw,
        )

    if old.get("phase") in ("Succeeded", "Failed") and old.get("completionTime"):
        # Over: nothing is created again; what still runs is stopped; the outcome stays as it was.
        outcome = next((c for c in old.get("conditions") or [] if c.get("type") == old["phase"]), {})
        why = {"reason": outcome.get("reason", ""), "message": outcome.get("message", "")}
        return plan(
            "keep", running=False, terminal=str(old["phase"]), **(why if old["phase"] == "Failed" else {})
        )
    if suspend:
        if job is not None and not (job.get("metadata") or {}).get("deletionTimestamp"):
            return plan("delete", running=False, reason="Suspended", message="spec.suspend is true")
        return plan("keep", running=False)
    if job is None:
        if trainer.pods_left:
            return plan(
                "wait",
                running=True,
                reason="Restarting",
                message=f"waiting for {trainer.pods_left} trainer pod(s) of an earlier attempt to terminate",
            )
        return plan("create", running=True)
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return plan(
            "wait", running=True, reason="Restarting", message="waiting for the old trainer Job to go"
        )
    current = job_attempt(job)
    if current < attempt:  # a Job of an earlier attempt, not deleted yet (an interrupted restart)
        return plan("delete", running=True, reason="Restarting", message=f"replacing attempt {current}")
    attempt = current
    if job_condition(job, "Complete"):
        return plan("keep", running=False, attempt=attempt, terminal="Succeeded")
    failed = job_condition(job, "Failed")
    if failed:
        reason, message = str(failed.get("reason") or ""), str(failed.get("message") or "")
        if reason == "DeadlineExceeded":
            return plan(
                "keep", running=False, attempt=attempt, terminal="Failed", reason="DeadlineExceeded",
                message=f"trainer Job exceeded activeDeadlineSeconds: {message}".rstrip(": "),
            )  # fmt: skip
        if reason == "PodFailurePolicy" and DISRUPTION_RULE_MESSAGE.search(message):
            note = f"trainer disrupted ({message}); restart {attempt + 1} from the latest checkpoint"
            note += ", not counted"
            return plan(
                "delete", running=True, attempt=attempt + 1, reason="Disruption", message=note,
                events=[("Warning", "Restarting", note)],
            )  # fmt: skip
        if restarts < max_restarts:
            note = f"trainer failed; restart {restarts + 1}/{max_restarts} from the latest checkpoint"
            return plan(
                "delete", running=True, attempt=attempt + 1, restarts=restarts + 1, reason="TrainerFailed",
                message=note, events=[("Warning", "Restarting", note)],
            )  # fmt: skip
        return plan(
            "keep", running=False, attempt=attempt, terminal="Failed", reason="TrainerFailed",
            message=f"trainer Job failed after {restarts} restart(s) (maxRestarts {max_restarts})",
        )  # fmt: skip
    started_with = ((job.get("metadata") or {}).get("annotations") or {}).get(f"{naming.GROUP}/config-hash")
    if started_with is not None and started_with != config_hash:
        note = "the trainer's config changed (a spec update): restarting it to read the new one, not counted"
        return plan(
            "delete", running=True, attempt=attempt + 1, reason="ConfigChanged", message=note,
            events=[("Normal", "Restarting", note)],
        )  # fmt: skip
    return plan("keep", running=True, attempt=attempt)


def scale_step(current: int, desired: int, *, kueue: bool, pods_gone: bool) -> int | None:
    """The replicas to write now, or None. Kueue's StatefulSet webhook (statefulset_webhook.go
    ValidateUpdate) allows only scaling to zero and from zero, and from zero only once the earlier
    pods are gone (`pods_gone`): with Kueue a change between two non-zero counts goes through zero."""
    if current == desired:
        return None
    if not kueue or desired == 0:
        return desired
    if current != 0:
        return 0
    return desired if pods_gone else None
