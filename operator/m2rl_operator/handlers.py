"""The kopf handlers: thin. Each reads, calls `reconcile`, and lets kopf retry on errors.

Loaded by the chart with `kopf run -m m2rl_operator.handlers`. Settings come from the environment
once (`OperatorOptions.from_env`) into `memo.options`; tests may put their own `options`,
`kube_server`, `trainer_metrics_url` and `on_leadership_lost` into the memo.

Watches: the three kinds, and the children whose state the status reads (Jobs, StatefulSets,
Deployments, Pods) with a label selector the API server applies (kopf's
`settings.watching.label_selectors`; a handler's own `labels=` filter is only checked in the
operator, after every object of the cluster has been sent to it), plus Events with reason
FailedCreate (a field selector). Indexes keep what the reconcile reads of them.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from m2rl_operator import leader, metrics, naming
from m2rl_operator.cache import Children, compact_child, compact_pod, owner_of
from m2rl_operator.kube import Kube, make_api_client
from m2rl_operator.reconcile import (
    Context,
    default_metrics_url,
    ensure_dependent,
    ensure_run,
    refresh_dependent,
    refresh_run,
)
from m2rl_operator.settings import OperatorOptions

_OPTIONS = OperatorOptions.from_env()  # read at import: kopf fixes timer intervals at registration
G, V = naming.GROUP, naming.VERSION
MANAGED = {"app.kubernetes.io/managed-by": naming.MANAGED_BY}
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={naming.MANAGED_BY}"
FAILED_CREATE = "reason=FailedCreate"
# The children whose state the status reads: watched and cached (reconcile.WATCHED). Services,
# ConfigMaps, NetworkPolicies and claims are only created: watching them would cost an event per
# child and nothing read.
CHILDREN: dict[tuple[str, str, str], str] = {
    ("batch", "v1", "jobs"): "Job",
    ("apps", "v1", "statefulsets"): "StatefulSet",
    ("apps", "v1", "deployments"): "Deployment",
}
COALESCE_S = 0.2  # child events within this window lead to one refresh of their owner


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **indexes: Any) -> None:
    # kopf's defaults leave watches open without a client timeout: a silently dropped connection
    # would stall the operator. Set bounds unless the caller (tests) set them already.
    if settings.watching.server_timeout is None:
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.watching.connect_timeout = 30
        settings.networking.request_timeout = 60
        # How long kopf waits for its own patch to come back in the watch before it acts on the
        # older version it holds. The 5 s default re-ran the create handler for half of 500 runs
        # created at once (bench/bench_operator.py); the patched version always arrives.
        settings.persistence.consistency_timeout = 60
        # A deleted run's status timer may be mid-call (it deleted the run for its TTL): kopf polls
        # for it to stop before removing its finalizer, every 60 s by default.
        settings.background.cancellation_polling = 5
    # Server-side filters: the API server sends only our children, and only FailedCreate Events.
    for resource in [*CHILDREN, ("", "v1", "pods")]:
        settings.watching.label_selectors[resource] = MANAGED_SELECTOR
    settings.watching.field_selectors[("", "v1", "events")] = FAILED_CREATE
    settings.posting.level = logging.INFO
    options = memo.get("options") or _OPTIONS
    # Not closed in an on.cleanup handler: kopf runs those before timers stop, which would then fail.
    # The client lives as long as the operator process.
    api = await make_api_client(memo.get("kube_server"))
    memo.api = api
    if options.metrics_port:
        metrics.serve(options.metrics_port)
    if options.leader_election.enabled:
        # Blocks until this replica holds the Lease: a standby never starts kopf's watches.
        memo.elector = await leader.lead(api, options.leader_election, memo.get("on_leadership_lost"))
    memo.ctx = Context(
        kube=Kube(api),
        options=options,
        metrics_url=memo.get("trainer_metrics_url") or default_metrics_url(options),
        children=Children(indexes["m2rl_children"], indexes["m2rl_pods"], indexes["m2rl_failed_creates"]),
    )


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Give the Lease up at once, so a standby takes over without waiting for it to expire."""
    if (elector := memo.get("elector")) is not None:
        await elector.release()


# ---- indexes (filled from the watch streams before any handler runs) ----------------------------------


def _child_index(kind: str) -> Any:
    def index(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
        return {(kind, namespace or "", name): compact_child(kind, body)}

    return index


for _resource, _kind in CHILDREN.items():
    kopf.index(*_resource, id="m2rl_children", labels=MANAGED)(_child_index(_kind))


@kopf.index("", "v1", "pods", id="m2rl_pods", labels=MANAGED)
def pods_index(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    owner = owner_of(labels)
    return {} if owner is None else {(namespace or "", *owner): compact_pod(body)}


@kopf.index("", "v1", "events", id="m2rl_failed_creates", field="reason", value="FailedCreate")
def failed_creates_index(namespace: str | None, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    involved = body.get("involvedObject") or {}
    time = body.get("lastTimestamp") or body.get("eventTime") or body.get("firstTimestamp") or ""
    entry = {"uid": involved.get("uid"), "message": body.get("message") or "", "time": time}
    return {(involved.get("namespace") or namespace or "", involved.get("kind"), involved.get("name")): entry}


# ---- the three kinds -----------------------------------------------------------------------------------


@kopf.on.resume(G, V, "rlvrruns")
@kopf.on.create(G, V, "rlvrruns")
@kopf.on.update(G, V, "rlvrruns", field="spec")
async def reconcile_run(body: kopf.Body, reason: kopf.Reason, memo: kopf.Memo, **_: Any) -> None:
    with metrics.reconcile("RLVRRun"):
        await ensure_run(memo.ctx, dict(body), sync=reason != kopf.Reason.CREATE)


@kopf.timer(
    G,
    V,
    "rlvrruns",
    interval=_OPTIONS.status_interval_s,
    initial_delay=_OPTIONS.status_interval_s,
    backoff=_OPTIONS.status_interval_s,
)
async def run_progress(name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    with metrics.reconcile("RLVRRun"):
        await refresh_run(memo.ctx, namespace or "", name, scrape_progress=True)


@kopf.on.resume(G, V, "mergejobs")
@kopf.on.create(G, V, "mergejobs")
async def reconcile_merge(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    with metrics.reconcile("MergeJob"):
        await ensure_dependent(memo.ctx, "MergeJob", dict(body))


@kopf.on.resume(G, V, "evalsuites")
@kopf.on.create(G, V, "evalsuites")
@kopf.on.update(G, V, "evalsuites", field="spec")
async def reconcile_eval(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    with metrics.reconcile("EvalSuite"):
        await ensure_dependent(memo.ctx, "EvalSuite", dict(body))


def _ttl_pending(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return spec.get("ttlSecondsAfterFinished") is not None and status.get("phase") in ("Succeeded", "Failed")


@kopf.timer(G, V, "mergejobs", interval=_OPTIONS.status_interval_s, when=_ttl_pending)
@kopf.timer(G, V, "evalsuites", interval=_OPTIONS.status_interval_s, when=_ttl_pending)
async def finished_ttl(name: str, namespace: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """A finished merge or evaluation has no more child events: its TTL is checked by this timer."""
    await refresh_dependent(memo.ctx, str(body["kind"]), namespace or "", name)


@kopf.on.delete(G, V, "rlvrruns", optional=True)
@kopf.on.delete(G, V, "mergejobs", optional=True)
@kopf.on.delete(G, V, "evalsuites", optional=True)
async def forget(name: str, namespace: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Owned children go with owner references (no finalizer of ours); the phase gauge and the
    per-object lock go now."""
    metrics.set_phase(str(body["kind"]), namespace or "", name, None)
    memo.ctx.forget(str(body["kind"]), namespace or "", name)


# ---- children: their changes refresh their owner ----------------------------------------------------


def _refresh_owner(memo: Any, labels: kopf.Labels, namespace: str | None) -> None:
    owner = owner_of(labels)
    if owner is not None:
        memo.ctx.refresh_soon(owner[0], namespace or "", owner[1], COALESCE_S)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("apps", "v1", "statefulsets", labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def child_changed(
    event: kopf.RawEvent, labels: kopf.Labels, namespace: str | None, memo: Any, **_: Any
) -> None:
    """A child's status moved, or it was deleted: refresh its owner (level-based). A child just
    created has no status yet: the refresh that created it already counted it."""
    if event.get("type") == "DELETED" or (event.get("object") or {}).get("status"):
        _refresh_owner(memo, labels, namespace)


@kopf.on.event("", "v1", "pods", labels=MANAGED)
async def pod_changed(
    event: kopf.RawEvent, labels: kopf.Labels, namespace: str | None, memo: Any, **_: Any
) -> None:
    """A pod went (a restart waits for the old trainer pods) or succeeded (a merge's or an
    evaluation's result is in its termination message)."""
    phase = ((event.get("object") or {}).get("status") or {}).get("phase")
    if event.get("type") == "DELETED" or phase == "Succeeded":
        _refresh_owner(memo, labels, namespace)


@kopf.on.event("", "v1", "events", field="reason", value="FailedCreate")
async def failed_create(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> None:
    """A child could not create its pods: its owner's status shows the API server's message."""
    involved = body.get("involvedObject") or {}
    child = memo.ctx.children.get(
        involved.get("kind"), involved.get("namespace") or namespace or "", involved.get("name")
    )
    if child is not None:
        _refresh_owner(memo, (child.get("metadata") or {}).get("labels") or {}, namespace)
