"""What the handlers do, as plain async functions over `Kube` and the children cache.

Every function reads the current state and converges towards the spec (level-based), so running
one twice, or after an operator restart half-way, creates nothing twice: child names are fixed
(naming), a create that meets an existing child is a no-op, and a missing child is created again.
Children are read from the watch-fed cache (cache.Children); the resource itself is read with one
GET per refresh, so decisions always start from its latest status.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf
from kubernetes_asyncio.client.exceptions import ApiException

from m2rl_operator import metrics, naming
from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.rlvrrun import AgentSpec, RLVRRunSpec, TeacherServerSpec
from m2rl_operator.builders import build_evalsuite, build_mergejob, build_rlvrrun, rlvrrun_problems
from m2rl_operator.builders.references import (
    BASE_SUFFIX,
    FORMAT_SUFFIX,
    Resolved,
    evalsuite_references,
    merge_prompt_format,
    mergejob_references,
    resolved_teachers,
    rlvrrun_references,
    run_prompt_format,
    teacher_models,
)
from m2rl_operator.builders.rlvrrun import build_trainer_job, config_hash, trainer_selector
from m2rl_operator.builders.trainer_config import (
    checkpoint_uri,
    final_model_uri,
    has_agent_domain,
    serves_teachers,
)
from m2rl_operator.cache import Children
from m2rl_operator.kube import Kube, api_message, is_refusal, results_of_pods
from m2rl_operator.lifecycle import Trainer, kueue_managed, plan_run, scale_step
from m2rl_operator.progress import scrape
from m2rl_operator.settings import OperatorOptions
from m2rl_operator.status import (
    RunObservation,
    condition,
    dependent_status,
    job_state,
    results_needed,
    run_status,
    waiting_status,
)

MetricsURL = Callable[[str, str], str]
WATCHED = {"Job", "StatefulSet", "Deployment"}  # children the cache holds (handlers.CHILDREN)
Key = tuple[str, str, str]  # kind, namespace, name
log = logging.getLogger(__name__)


def as_body(obj: dict[str, Any]) -> kopf.Body:
    """kopf's event and adopt helpers read only apiVersion/kind/metadata: a plain dict serves."""
    return cast(kopf.Body, obj)


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Context:
    """What every reconcile needs: the API facade, the children cache, the options, per-object
    locks and the refreshes scheduled by watch events."""

    kube: Kube
    options: OperatorOptions
    metrics_url: MetricsURL
    children: Children
    locks: dict[Key, asyncio.Lock] = field(default_factory=dict)
    pending: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    known: dict[tuple[str, str], set[Key]] = field(default_factory=dict)
    """(namespace, owner) -> unwatched children (Services, ConfigMaps, NetworkPolicies, claims)
    created or found (409) by this process: not created again while it runs. A restarted operator
    creates them again on resume (409 for those that exist)."""
    desired: dict[tuple[str, str], tuple[Any, list[dict[str, Any]], str]] = field(default_factory=dict)
    """(namespace, run) -> ((uid, generation, attempt), its children, its config hash): rendering
    (YAML of the trainer config) costs more than the rest of a refresh, and the spec changes only
    with the generation."""

    def lock(self, kind: str, namespace: str, name: str) -> asyncio.Lock:
        return self.locks.setdefault((kind, namespace, name), asyncio.Lock())

    def forget(self, kind: str, namespace: str, name: str) -> None:
        """A resource is gone: drop its lock and any scheduled refresh (Context.locks stays bounded)."""
        key = (kind, namespace, name)
        lock = self.locks.get(key)
        if lock is not None and not lock.locked():
            del self.locks[key]
        task = self.pending.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.known.pop((namespace, name), None)
        if kind == "RLVRRun":
            self.desired.pop((namespace, name), None)

    def run_children(
        self, run: dict[str, Any], spec: RLVRRunSpec, attempt: int, resolved: Resolved
    ) -> tuple[list[dict[str, Any]], str]:
        """The run's children for `attempt` and its trainer config hash, rendered once per spec
        generation and attempt (callers copy what they change). `resolved`: its teachers' models,
        fixed once the run started (status.teacherModels)."""
        meta = run["metadata"]
        key = (meta.get("uid"), meta.get("generation"), attempt)
        cached = self.desired.get((meta["namespace"], meta["name"]))
        if cached is None or cached[0] != key:
            name, namespace = meta["name"], meta["namespace"]
            children = build_rlvrrun(
                spec, name=name, namespace=namespace, options=self.options, attempt=attempt,
                resolved=resolved,
            )  # fmt: skip
            config = next(c for c in children if c["kind"] == "ConfigMap")
            if not any(c["kind"] == "Job" for c in children):  # a suspended run's build has none
                children.append(
                    build_trainer_job(
                        spec, name=name, namespace=namespace, options=self.options, attempt=attempt,
                        config_map=config, resolved=resolved,
                    )
                )  # fmt: skip
            digest = config_hash(config)
            cached = (key, children, digest)
            self.desired[(meta["namespace"], meta["name"])] = cached
        return cached[1], cached[2]

    def refresh_soon(self, kind: str, namespace: str, name: str, delay_s: float) -> None:
        """Refresh a resource once after `delay_s`, however many child events ask for it meanwhile
        (a new run's children arrive as a burst of ADDED events)."""
        key = (kind, namespace, name)
        if key in self.pending and not self.pending[key].done():
            return

        async def later() -> None:
            await asyncio.sleep(delay_s)
            self.pending.pop(key, None)
            try:
                with metrics.reconcile(kind):
                    if kind == "RLVRRun":
                        await refresh_run(self, namespace, name)
                    else:
                        await refresh_dependent(self, kind, namespace, name)
            except Exception:  # the status timer or the next event retries
                log.exception("refresh of %s %s/%s failed", kind, namespace, name)

        self.pending[key] = asyncio.create_task(later())


def default_metrics_url(options: OperatorOptions) -> MetricsURL:
    return lambda namespace, name: (
        f"http://{naming.trainer_host(name, namespace)}:{options.ports.trainer_metrics}/metrics"
    )


# ---- children ----------------------------------------------------------------------------------------


async def create_missing(
    ctx: Context,
    owner: dict[str, Any],
    children: list[dict[str, Any]],
    replicas: dict[str, int] | None = None,
) -> tuple[list[str], str | None]:
    """Create the children the cache does not hold (owned by `owner`, except those annotated
    naming.KEEP, which outlive it), `replicas` by child name overriding the manifests' (a run gated
    by Kueue or finished starts its servers at zero). Returns the children created now and, when the
    API server refused one (admission, quota, validation), which one and its message."""
    created: list[str] = []
    refused: str | None = None
    known = ctx.known.setdefault((owner["metadata"]["namespace"], owner["metadata"]["name"]), set())
    for child in children:
        kind, meta = child["kind"], child["metadata"]
        key = (kind, meta["namespace"], meta["name"])
        if (ctx.children.get(*key) is not None) if kind in WATCHED else key in known:
            continue
        child = copy.deepcopy(child)  # manifests may be shared (Context.run_children)
        meta = child["metadata"]
        if replicas and meta["name"] in replicas:
            child["spec"]["replicas"] = replicas[meta["name"]]
        if (meta.get("annotations") or {}).get(naming.KEEP) != "true":
            kopf.adopt(child, owner=as_body(owner))
        try:
            obj = await ctx.kube.create(child)
        except ApiException as error:
            if not is_refusal(error):
                raise
            refused = refused or f"{kind}/{meta['name']}: {api_message(error)}"
            continue
        if obj is not None:
            created.append(f"{kind}/{meta['name']}")
            if kind in WATCHED:
                ctx.children.created(kind, obj)
        if kind not in WATCHED:
            known.add(key)
    return created, refused


async def sync_config(ctx: Context, children: list[dict[str, Any]]) -> None:
    """A spec update or a resume: rewrite ConfigMaps whose content changed (the trainer reads its
    new config when lifecycle.plan_run restarts it; the verifier on its next start)."""
    for child in children:
        if child["kind"] != "ConfigMap":
            continue
        meta = child["metadata"]
        existing = await ctx.kube.get("ConfigMap", meta["namespace"], meta["name"])
        if existing is not None and existing.get("data") != child["data"]:
            await ctx.kube.patch("ConfigMap", meta["namespace"], meta["name"], {"data": child["data"]})


def pod_failures(ctx: Context, children: list[dict[str, Any] | None]) -> tuple[str, ...]:
    """Children that cannot create their pods, with the API server's message: a Job's or a
    StatefulSet's FailedCreate Event, a Deployment's ReplicaFailure condition (which the deployment
    controller copies from its ReplicaSet). Cleared once the child has its pods."""
    out = []
    for child in children:
        if child is None:
            continue
        status, kind, name = child.get("status") or {}, child["kind"], child["metadata"]["name"]
        if kind == "Deployment":
            failure = next(
                (
                    c
                    for c in status.get("conditions") or []
                    if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
                ),
                None,
            )
            if failure:
                out.append(f"{kind}/{name}: {failure.get('message') or failure.get('reason')}")
            continue
        message = ctx.children.failed_create(child)
        if message is None:
            continue
        if kind == "Job" and (status.get("active") or status.get("succeeded") or status.get("failed")):
            continue  # the Job has pods now
        if kind == "StatefulSet" and int(status.get("replicas") or 0) >= int(
            (child.get("spec") or {}).get("replicas") or 0
        ):
            continue
        out.append(f"{kind}/{name}: {message}")
    return tuple(out)


# ---- RLVRRun -------------------------------------------------------------------------------------------


async def ensure_run(ctx: Context, body: dict[str, Any], *, sync: bool = True) -> None:
    """Create, update or resume: rewrite changed config (`sync`: not on create, where nothing
    exists yet), then converge (refresh_run creates what is missing). InvalidSpec problems fail
    the run until the spec is fixed."""
    meta = body["metadata"]
    spec = RLVRRunSpec.model_validate(body["spec"])
    status = body.get("status") or {}
    resolved = resolved_teachers(spec, status.get("teacherModels"))
    if sync and not rlvrrun_problems(spec) and resolved is not None:  # nothing exists while it waits
        attempt = int(status.get("attempt") or 0)
        desired, _ = ctx.run_children(body, spec, attempt, resolved)
        await sync_config(ctx, desired)
    await refresh_run(ctx, meta["namespace"], meta["name"])


async def refresh_run(ctx: Context, namespace: str, name: str, *, scrape_progress: bool = False) -> None:
    """Observe, decide (lifecycle.plan_run), act on the children, publish the status."""
    async with ctx.lock("RLVRRun", namespace, name):
        run = await ctx.kube.get_custom("RLVRRun", namespace, name)
        if run is None:
            metrics.set_phase("RLVRRun", namespace, name, None)
            ctx.forget("RLVRRun", namespace, name)
            return
        await _refresh_run(ctx, run, scrape_progress)


async def _refresh_run(ctx: Context, run: dict[str, Any], scrape_progress: bool) -> None:
    namespace, name = run["metadata"]["namespace"], run["metadata"]["name"]
    generation = run["metadata"].get("generation")
    old = dict(run.get("status") or {})
    spec = RLVRRunSpec.model_validate(run["spec"])
    problems = rlvrrun_problems(spec)
    if problems:
        message = "; ".join(problems)
        status = {
            "phase": "Failed",
            "observedGeneration": generation,
            "conditions": [condition(old, "Failed", True, "InvalidSpec", message, generation, now_iso())],
        }
        await _publish(ctx, "RLVRRun", run, old, status)
        return
    if any(c.get("reason") == "InvalidSpec" for c in old.get("conditions") or []):
        old = {}  # the spec was fixed: start over (the InvalidSpec status is not an outcome)
    resolved = await _run_references(ctx, run, spec, old)
    if resolved is None:
        return
    models = teacher_models(spec, resolved) if spec.algorithm.teachers else None

    children, kube = ctx.children, ctx.kube
    trainer = naming.trainer(name)
    job = children.get("Job", namespace, trainer)
    pods_left = len(children.pods(namespace, "RLVRRun", name, naming.TRAINER))
    attempt_now = int(old.get("attempt") or 0)
    _, wanted_hash = ctx.run_children(run, spec, attempt_now, resolved)
    served = serves_teachers(spec)
    teacher_sets = [naming.teacher(name, i) for i in range(len(models or []))] if served else []
    plan = plan_run(
        trainer=Trainer(job=job, pods_left=pods_left),
        suspend=spec.suspend,
        queued=bool(spec.queue_name) or kueue_managed(job),
        max_restarts=spec.max_restarts,
        rollout_replicas=spec.rollout.replicas,
        verifier_replicas=spec.verifier.replicas,
        config_hash=wanted_hash,
        old=old,
        teacher_replicas=(spec.teacher_servers or TeacherServerSpec()).replicas,
        environment_replicas=(spec.agent or AgentSpec()).replicas,
    )
    if (plan.attempt, plan.restarts) != (int(old.get("attempt") or 0), int(old.get("restarts") or 0)):
        # Persist the decision before acting on it: a refresh that stops half-way resumes from here.
        await kube.patch_status(
            "RLVRRun", namespace, name, {"attempt": plan.attempt, "restarts": plan.restarts}
        )
        old.update(attempt=plan.attempt, restarts=plan.restarts)
    for type_, reason, message in plan.events:
        (kopf.warn if type_ == "Warning" else kopf.info)(as_body(run), reason=reason, message=message)

    refused = None
    if not plan.terminal:
        desired, _ = ctx.run_children(run, spec, plan.attempt, resolved)
        wanted = [c for c in desired if not (c["kind"] == "Job" and c["metadata"]["name"] == trainer)]
        if plan.action == "create":
            wanted += [c for c in desired if c["kind"] == "Job" and c["metadata"]["name"] == trainer]
        replicas = {
            naming.rollout(name): plan.rollout_replicas,
            naming.verifier(name): plan.verifier_replicas,
            naming.environment(name): plan.environment_replicas,
            **{teacher: plan.teacher_replicas for teacher in teacher_sets},
        }
        created, refused = await create_missing(ctx, run, wanted, replicas)
        if plan.action == "delete" or (plan.action == "create" and plan.attempt > 0):
            # A restart: the Service selects the new attempt's pods only, from now on.
            selector = trainer_selector(name, plan.attempt)
            await kube.patch("Service", namespace, trainer, {"spec": {"selector": selector}})
        if created:
            kopf.info(as_body(run), reason="Created", message=f"created {', '.join(created)}")
    if plan.action == "delete" and job is not None:
        # Foreground: the Job stays (with a deletionTimestamp) until its pods are gone, so the
        # new attempt's Job, of the same name, cannot be created before (JobSet deleteJobs).
        await kube.delete("Job", namespace, trainer, propagation="Foreground")
        children.deleted("Job", namespace, trainer)
    sts = (
        children.get("StatefulSet", namespace, naming.rollout(name))
        if spec.rollout.mode == "server"
        else None
    )
    deployment = children.get("Deployment", namespace, naming.verifier(name))
    teachers = [children.get("StatefulSet", namespace, t) for t in teacher_sets]
    environment = (
        children.get("Deployment", namespace, naming.environment(name)) if has_agent_domain(spec) else None
    )
    await _scale(ctx, sts, plan.rollout_replicas, kueue=bool(spec.queue_name))
    await _scale(ctx, deployment, plan.verifier_replicas, kueue=False)
    for teacher_set in teachers:
        await _scale(ctx, teacher_set, plan.teacher_replicas, kueue=bool(spec.queue_name))
    await _scale(ctx, environment, plan.environment_replicas, kueue=False)

    progress = None
    if scrape_progress and job_state(job) == "Running":
        progress = await scrape(ctx.metrics_url(namespace, name), name, ctx.options.scrape_timeout_s)
    observed = RunObservation(
        job=job if plan.action != "delete" else None,
        rollout_ready=int(((sts or {}).get("status") or {}).get("readyReplicas") or 0)
        if spec.rollout.mode == "server"
        else None,
        verifier_ready=_ready(deployment),
        progress=progress,
        create_error=refused,
        pod_failures=pod_failures(ctx, [job, sts, deployment, *teachers, environment]),
        teachers_ready=tuple(_ready(t) for t in teachers) if teacher_sets else None,
        environment_ready=_ready(environment) if has_agent_domain(spec) else None,
    )
    status = run_status(
        spec,
        observed,
        old=old,
        generation=generation,
        now=now_iso(),
        plan=plan,
        final_model=final_model_uri(name, spec),
        checkpoint_uri=lambda step: checkpoint_uri(name, spec, step),
        teacher_models=models,
    )
    await _publish(ctx, "RLVRRun", run, old, status)
    await expire(ctx, "RLVRRun", run, status)


def _ready(child: dict[str, Any] | None) -> int:
    return int(((child or {}).get("status") or {}).get("readyReplicas") or 0)


async def _run_references(
    ctx: Context, run: dict[str, Any], spec: RLVRRunSpec, old: dict[str, Any]
) -> Resolved | None:
    """The models of an MT-OPD run's teacher references, or None when the run waits for them (its
    status then says Waiting, or Failed with DependencyFailed when one failed; the status timer
    checks again). Resolved once, as a MergeJob's: a run that started keeps status.teacherModels
    whatever later happens to the referenced resources (a TTL deleting an expert run)."""
    known = resolved_teachers(spec, old.get("teacherModels"))
    if known is not None:
        return known
    if old.get("phase") in ("Succeeded", "Failed") and old.get("completionTime"):
        await expire(ctx, "RLVRRun", run, old)  # it failed waiting (DependencyFailed): only the TTL is left
        return None
    found = await resolve(ctx.kube, run["metadata"]["namespace"], rlvrrun_references(spec))
    if not found.failed and not found.waiting:
        return found.resolved
    status = waiting_status(old, found.waiting, found.failed, run["metadata"].get("generation"), now_iso())
    await _publish(ctx, "RLVRRun", run, old, status)
    return None


async def _scale(ctx: Context, child: dict[str, Any] | None, desired: int, *, kueue: bool) -> None:
    if child is None:
        return
    spec, status = child.get("spec") or {}, child.get("status") or {}
    step = scale_step(
        int(spec.get("replicas") or 0), desired, kueue=kueue, pods_gone=int(status.get("replicas") or 0) == 0
    )
    if step is not None:
        meta = child["metadata"]
        await ctx.kube.patch(child["kind"], meta["namespace"], meta["name"], {"spec": {"replicas": step}})


def ttl_expired(spec: dict[str, Any], status: dict[str, Any], now: datetime) -> bool:
    """Whether a finished resource outlived spec.ttlSecondsAfterFinished (unset: never)."""
    ttl, done = spec.get("ttlSecondsAfterFinished"), status.get("completionTime")
    if ttl is None or not done or status.get("phase") not in ("Succeeded", "Failed"):
        return False
    finished = datetime.strptime(done, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (now - finished).total_seconds() >= ttl


async def expire(ctx: Context, kind: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
    """Delete a finished resource after its TTL; its owned children go with their owner references
    (claims it created are not owned unless the spec asked: they stay)."""
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
    current = dict(obj.get("status") or {})
    if all(current.get(k) == v for k, v in status.items()):
        return
    await ctx.kube.patch_status(kind, namespace, name, status)
    if current.get("phase") != status.get("phase"):
        post = kopf.warn if status["phase"] == "Failed" else kopf.info
        post(
            as_body(obj),
            reason=str(status["phase"]),
            message=f"phase {current.get('phase') or '-'} -> {status['phase']}",
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


def _job_name(kind: str, name: str) -> str:
    return naming.merge_job(name) if kind == "MergeJob" else naming.eval_job(name)


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
    """MergeJob/EvalSuite: wait for the references, then create the Job (and its config).

    References are resolved only while the Job does not exist yet: a merge or evaluation that has
    its Job, or has finished, never looks at them again (a referenced run deleted by its TTL
    must not turn a finished merge back into Waiting)."""
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    generation = body["metadata"].get("generation")
    old = dict(body.get("status") or {})
    job = ctx.children.get("Job", namespace, _job_name(kind, name))
    finished = old.get("phase") in ("Succeeded", "Failed") and old.get("completionTime")
    if job is not None or finished:
        await refresh_dependent(ctx, kind, namespace, name)
        return
    if kind == "MergeJob":
        merge_spec = MergeJobSpec.model_validate(body["spec"])
        keys = mergejob_references(merge_spec)
    else:
        eval_spec = EvalSuiteSpec.model_validate(body["spec"])
        keys = evalsuite_references(eval_spec)
    found = await resolve(ctx.kube, namespace, keys)
    if found.failed or found.waiting:
        failed = bool(found.failed)
        status = waiting_status(old, found.waiting, found.failed, generation, now_iso())
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
    async with ctx.lock(kind, namespace, name):
        created, refused = await create_missing(ctx, body, children)
    if created:
        kopf.info(as_body(body), reason="Created", message=f"created {', '.join(created)}")
    await refresh_dependent(ctx, kind, namespace, name, create_error=refused)
    if refused:
        raise kopf.TemporaryError(refused, delay=ctx.options.dependency_retry_s)


async def refresh_dependent(
    ctx: Context, kind: str, namespace: str, name: str, *, create_error: str | None = None
) -> None:
    """Status of a MergeJob/EvalSuite from its Job (nothing to do while it waits).

    Serialized per object: a Job event and the create handler both land here, and a status computed
    from a stale read must not overwrite a newer one.
    """
    async with ctx.lock(kind, namespace, name):
        obj = await ctx.kube.get_custom(kind, namespace, name)
        if obj is None:
            metrics.set_phase(kind, namespace, name, None)
            ctx.forget(kind, namespace, name)
            return
        await _refresh_dependent(ctx, kind, obj, create_error)


async def _refresh_dependent(ctx: Context, kind: str, obj: dict[str, Any], create_error: str | None) -> None:
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    job_name = _job_name(kind, name)
    job = ctx.children.get("Job", namespace, job_name)
    old = dict(obj.get("status") or {})
    if job is None and not create_error:
        if old.get("phase") in ("Succeeded", "Failed"):
            await expire(ctx, kind, obj, old)  # finished, its Job gone: only the TTL is left to do
        return
    suspend = bool(obj["spec"].get("suspend"))
    # EvalSuite.suspend on a Job Kueue does not manage (a queued suite refuses suspend at
    # admission: Kueue alone writes a queued Job's `suspend`).
    if (
        job is not None
        and not kueue_managed(job)
        and bool((job.get("spec") or {}).get("suspend")) != suspend
        and job_state(job) not in ("Succeeded", "Failed")
    ):
        await ctx.kube.patch("Job", namespace, job_name, {"spec": {"suspend": suspend}})
    spec = (MergeJobSpec if kind == "MergeJob" else EvalSuiteSpec).model_validate(obj["spec"])
    # Results are read from the cached pods: a merge's once it succeeded, an evaluation's on every
    # refresh (its table fills as each model's pod finishes).
    pods = ctx.children.pods(namespace, kind, name)
    results = results_of_pods(pods, job_name) if results_needed(kind, job) else []
    status = dependent_status(
        kind,
        spec,
        job,
        results,
        old=old,
        generation=obj["metadata"].get("generation"),
        now=now_iso(),
        suspend=suspend,
        create_error=create_error,
        pod_failures=pod_failures(ctx, [job]),
    )
    await _publish(ctx, kind, obj, old, status)
    await expire(ctx, kind, obj, status)
