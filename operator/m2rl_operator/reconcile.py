"""What the handlers do, as plain async functions over `Kube`: ensure children, refresh status.

Every function reads the current state and converges towards the spec (level-based), so running
one twice, or after an operator restart half-way, creates nothing twice: child names are fixed
(naming), a create that meets an existing child only syncs the mutable fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from m2rl_operator import metrics, naming
from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.builders import build_evalsuite, build_mergejob, build_rlvrrun, rlvrrun_problems
from m2rl_operator.builders.references import (
    BASE_SUFFIX,
    FORMAT_SUFFIX,
    evalsuite_references,
    merge_prompt_format,
    mergejob_references,
    run_prompt_format,
)
from m2rl_operator.builders.rlvrrun import ATTEMPT_ANNOTATION, build_trainer_job
from m2rl_operator.builders.trainer_config import checkpoint_uri, final_model_uri
from m2rl_operator.kube import Kube
from m2rl_operator.progress import scrape
from m2rl_operator.settings import OperatorOptions
from m2rl_operator.status import (
    RunObservation,
    condition,
    dependency_conditions,
    dependent_status,
    job_state,
    results_needed,
    run_status,
)

MetricsURL = Callable[[str, str], str]


def as_body(obj: dict[str, Any]) -> kopf.Body:
    """kopf's event and adopt helpers read only apiVersion/kind/metadata: a plain dict serves."""
    return cast(kopf.Body, obj)


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Context:
    """What every reconcile needs: the API facade, the options, per-object locks."""

    kube: Kube
    options: OperatorOptions
    metrics_url: MetricsURL
    locks: dict[tuple[str, str, str], asyncio.Lock] = field(default_factory=dict)

    def lock(self, kind: str, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((kind, namespace, name), asyncio.Lock())


def default_metrics_url(options: OperatorOptions) -> MetricsURL:
    return lambda namespace, name: (
        f"http://{naming.trainer_host(name, namespace)}:{options.ports.trainer_metrics}/metrics"
    )


# ---- children ----------------------------------------------------------------------------------------


async def apply_children(kube: Kube, owner: dict[str, Any], children: list[dict[str, Any]]) -> list[str]:
    """Create missing children (owned by `owner`); sync the mutable fields of existing ones.

    Returns the names of the children created now.
    """
    created = []
    for child in children:
        kopf.adopt(child, owner=as_body(owner))
        if await kube.create(child):
            created.append(f"{child['kind']}/{child['metadata']['name']}")
        else:
            await sync_mutable(kube, child)
    return created


async def sync_mutable(kube: Kube, child: dict[str, Any]) -> None:
    """Apply spec changes to an existing child: replicas (scale, suspend), Job suspend, config data."""
    kind, meta = child["kind"], child["metadata"]
    existing = await kube.get(kind, meta["namespace"], meta["name"])
    if existing is None:
        return
    patch: dict[str, Any] = {}
    if (
        kind in ("StatefulSet", "Deployment")
        and existing["spec"].get("replicas") != child["spec"]["replicas"]
    ):
        patch = {"spec": {"replicas": child["spec"]["replicas"]}}
    elif kind == "Job" and bool(existing["spec"].get("suspend")) != bool(child["spec"].get("suspend")):
        patch = {"spec": {"suspend": child["spec"]["suspend"]}}
    elif kind == "ConfigMap" and existing.get("data") != child["data"]:
        patch = {"data": child["data"]}
    if patch:
        await kube.patch(kind, meta["namespace"], meta["name"], patch)


# ---- RLVRRun -------------------------------------------------------------------------------------------


async def ensure_run(ctx: Context, body: dict[str, Any]) -> None:
    """Validate, then create or sync every child; InvalidSpec problems fail the run for good."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    spec = RLVRRunSpec.model_validate(body["spec"])
    problems = rlvrrun_problems(spec)
    old = dict(body.get("status") or {})
    if problems:
        message = "; ".join(problems)
        generation = body["metadata"].get("generation")
        status = {
            "phase": "Failed",
            "observedGeneration": generation,
            "conditions": [condition(old, "Failed", True, "InvalidSpec", message, generation, now_iso())],
        }
        await ctx.kube.patch_status("RLVRRun", namespace, name, status)
        metrics.set_phase("RLVRRun", namespace, name, "Failed")
        raise kopf.PermanentError(message)
    attempt = int(old.get("restarts") or 0)
    async with ctx.lock("RLVRRun", namespace, name):
        created = await apply_children(
            ctx.kube,
            body,
            build_rlvrrun(spec, name=name, namespace=namespace, options=ctx.options, attempt=attempt),
        )
    if created:
        kopf.info(as_body(body), reason="Created", message=f"created {', '.join(created)}")
    await refresh_run(ctx, namespace, name)


async def refresh_run(ctx: Context, namespace: str, name: str, *, scrape_progress: bool = False) -> None:
    """Observe the children, restart a failed trainer if allowed, patch the status if it changed."""
    async with ctx.lock("RLVRRun", namespace, name):
        run = await ctx.kube.get_custom("RLVRRun", namespace, name)
        if run is None:
            metrics.set_phase("RLVRRun", namespace, name, None)
            return
        old = dict(run.get("status") or {})
        if any(c.get("reason") == "InvalidSpec" for c in old.get("conditions") or []):
            return
        spec = RLVRRunSpec.model_validate(run["spec"])
        kube, trainer = ctx.kube, naming.trainer(name)
        job = await kube.get("Job", namespace, trainer)
        restarts = int(old.get("restarts") or 0)
        if (
            job is not None
            and job_state(job) == "Failed"
            and restarts < spec.max_restarts
            and not spec.suspend
        ):
            attempt = int(((job["metadata"].get("annotations") or {}).get(ATTEMPT_ANNOTATION)) or 0)
            if attempt >= restarts:  # not yet restarted for this failure
                restarts += 1
                message = f"trainer failed; restart {restarts}/{spec.max_restarts} from the latest checkpoint"
                kopf.warn(as_body(run), reason="Restarting", message=message)
            await ctx.kube.patch_status("RLVRRun", namespace, name, {"restarts": restarts})
            await kube.delete("Job", namespace, trainer)
            new_job = build_trainer_job(
                spec, name=name, namespace=namespace, options=ctx.options, attempt=restarts
            )
            kopf.adopt(new_job, owner=as_body(run))
            await kube.create(new_job)  # 409 while the old Job terminates: the next refresh retries
            job = await kube.get("Job", namespace, trainer)
        rollout_ready = None
        if spec.rollout.mode == "server":
            sts = await kube.get("StatefulSet", namespace, naming.rollout(name))
            rollout_ready = int(((sts or {}).get("status") or {}).get("readyReplicas") or 0)
        deployment = await kube.get("Deployment", namespace, naming.verifier(name))
        verifier_ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
        progress = None
        if scrape_progress and job_state(job) == "Running":
            progress = await scrape(ctx.metrics_url(namespace, name), name, ctx.options.scrape_timeout_s)
        status = run_status(
            spec,
            RunObservation(
                job=job, rollout_ready=rollout_ready, verifier_ready=verifier_ready, progress=progress
            ),
            old=old,
            generation=run["metadata"].get("generation"),
            now=now_iso(),
            restarts=restarts,
            final_model=final_model_uri(name, spec),
            checkpoint_uri=lambda step: checkpoint_uri(name, spec, step),
        )
        await _publish(ctx, "RLVRRun", run, old, status)
        await expire(ctx, "RLVRRun", run, status)


def ttl_expired(spec: dict[str, Any], status: dict[str, Any], now: datetime) -> bool:
    """Whether a finished resource outlived spec.ttlSecondsAfterFinished (unset: never)."""
    ttl, done = spec.get("ttlSecondsAfterFinished"), status.get("completionTime")
    if ttl is None or not done or status.get("phase") not in ("Succeeded", "Failed"):
        return False
    finished = datetime.strptime(done, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (now - finished).total_seconds() >= ttl


async def expire(ctx: Context, kind: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
    """Delete a finished resource after its TTL; its children go with their owner references."""
    if ttl_expired(obj["spec"], status, datetime.now(UTC)):
        meta = obj["metadata"]
        kopf.info(as_body(obj), reason="Expired", message="ttlSecondsAfterFinished reached: deleting")
        await ctx.kube.delete_custom(kind, meta["namespace"], meta["name"])


async def _publish(
    ctx: Context, kind: str, obj: dict[str, Any], old: dict[str, Any], status: dict[str, Any]
) -> None:
    """Patch the status when it changed; post an Event when the phase changed."""
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    metrics.set_phase(kind, namespace, name, status.get("phase"))
    if all(old.get(k) == v for k, v in status.items()):
        return
    await ctx.kube.patch_status(kind, namespace, name, status)
    if old.get("phase") != status.get("phase"):
        post = kopf.warn if status["phase"] == "Failed" else kopf.info
        post(
            as_body(obj),
            reason=str(status["phase"]),
            message=f"phase {old.get('phase') or '-'} -> {status['phase']}",
        )


# ---- MergeJob and EvalSuite -------------------------------------------------------------------------------


@dataclass
class Resolution:
    resolved: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


async def resolve(kube: Kube, namespace: str, keys: list[str]) -> Resolution:
    """Look up each referenced run/merge: its output URI once Succeeded; waiting or failed otherwise."""
    result = Resolution()
    for key in keys:
        kind, _, rest = key.partition("/")
        name = rest.removesuffix(BASE_SUFFIX)
        obj = await kube.get_custom(kind, namespace, name)
        label = f"{kind}/{name}"
        if obj is None:
            if label not in result.waiting:
                result.waiting.append(label)
            continue
        if key.endswith(BASE_SUFFIX):  # a run's base model exists as soon as the run does
            result.resolved[key] = obj["spec"]["model"]["uri"]
            continue
        status = obj.get("status") or {}
        output = status.get("finalModel") if kind == "RLVRRun" else status.get("outputModel")
        if status.get("phase") == "Failed":
            result.failed.append(label)
        elif status.get("phase") == "Succeeded" and output:
            result.resolved[key] = output
        else:
            result.waiting.append(label)
    return result


async def prompt_formats(kube: Kube, namespace: str, keys: list[str]) -> dict[str, str]:
    """The prompt formats (FORMAT_SUFFIX entries) of the runs and merges named by `keys`: a run's
    from its spec, a merge's from the runs and merges it merged (see merge_prompt_format)."""
    formats: dict[str, str] = {}

    async def visit(key: str, depth: int) -> None:
        kind, _, name = key.partition("/")
        if key + FORMAT_SUFFIX in formats or depth > 16:  # depth: merges of merges, never a cycle
            return
        obj = await kube.get_custom(kind, namespace, name)
        if obj is None:
            return
        if kind == "RLVRRun":
            formats[key + FORMAT_SUFFIX] = run_prompt_format(RLVRRunSpec.model_validate(obj["spec"]))
            return
        spec = MergeJobSpec.model_validate(obj["spec"])
        for ref in mergejob_references(spec):
            if not ref.endswith(BASE_SUFFIX):
                await visit(ref, depth + 1)
        if (fmt := merge_prompt_format(spec, formats)) is not None:
            formats[key + FORMAT_SUFFIX] = fmt

    for key in keys:
        await visit(key, 0)
    return formats


async def ensure_dependent(ctx: Context, kind: str, body: dict[str, Any]) -> None:
    """MergeJob/EvalSuite: wait for the references, then create the Job (and its config)."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    generation = body["metadata"].get("generation")
    old = dict(body.get("status") or {})
    if kind == "MergeJob":
        merge_spec = MergeJobSpec.model_validate(body["spec"])
        keys = mergejob_references(merge_spec)
    else:
        eval_spec = EvalSuiteSpec.model_validate(body["spec"])
        keys = evalsuite_references(eval_spec)
    found = await resolve(ctx.kube, namespace, keys)
    if found.failed or found.waiting:
        failed = bool(found.failed)
        status: dict[str, Any] = {
            "phase": "Failed" if failed else "Waiting",
            "observedGeneration": generation,
            "waitingFor": found.waiting,
            "startTime": old.get("startTime") or now_iso(),
            "conditions": dependency_conditions(old, found.waiting, found.failed, generation, now_iso()),
        }
        if failed:
            status["completionTime"] = now_iso()
        await _publish(ctx, kind, body, old, status)
        if failed:
            raise kopf.PermanentError(f"referenced {', '.join(found.failed)} failed (DependencyFailed)")
        raise kopf.TemporaryError(
            f"waiting for {', '.join(found.waiting)}", delay=ctx.options.dependency_retry_s
        )
    if kind == "MergeJob":
        children = build_mergejob(
            merge_spec, name=name, namespace=namespace, resolved=found.resolved, options=ctx.options
        )
    else:
        found.resolved.update(await prompt_formats(ctx.kube, namespace, keys))
        children = build_evalsuite(
            eval_spec, name=name, namespace=namespace, resolved=found.resolved, options=ctx.options
        )
    created = await apply_children(ctx.kube, body, children)
    if created:
        kopf.info(as_body(body), reason="Created", message=f"created {', '.join(created)}")
    await refresh_dependent(ctx, kind, namespace, name)


async def refresh_dependent(ctx: Context, kind: str, namespace: str, name: str) -> None:
    """Status of a MergeJob/EvalSuite from its Job (nothing to do while it waits).

    Serialized per object: a Job event and the create handler both land here, and a status computed
    from a stale read must not overwrite a newer one.
    """
    async with ctx.lock(kind, namespace, name):
        await _refresh_dependent(ctx, kind, namespace, name)


async def _refresh_dependent(ctx: Context, kind: str, namespace: str, name: str) -> None:
    obj = await ctx.kube.get_custom(kind, namespace, name)
    if obj is None:
        metrics.set_phase(kind, namespace, name, None)
        return
    job_name = naming.merge_job(name) if kind == "MergeJob" else naming.eval_job(name)
    job = await ctx.kube.get("Job", namespace, job_name)
    old = dict(obj.get("status") or {})
    if job is None:
        return
    spec = (MergeJobSpec if kind == "MergeJob" else EvalSuiteSpec).model_validate(obj["spec"])
    # Pods are listed only when their results are read: a merge's once it succeeded, an evaluation's
    # on every refresh (its table fills as each model's pod finishes).
    results = await ctx.kube.job_results(namespace, job_name) if results_needed(kind, job) else []
    status = dependent_status(
        kind, spec, job, results, old=old, generation=obj["metadata"].get("generation"), now=now_iso()
    )
    await _publish(ctx, kind, obj, old, status)
    await expire(ctx, kind, obj, status)
