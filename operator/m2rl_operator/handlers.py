"""The kopf handlers: thin. Each reads, calls `reconcile`, and lets kopf retry on errors.

Loaded by the chart with `kopf run -m m2rl_operator.handlers`. Settings come from the environment
once (`OperatorOptions.from_env`) into `memo.options`; tests may put their own `options`,
`kube_server` and `trainer_metrics_url` into the memo.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from m2rl_operator import metrics, naming
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


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    settings.posting.level = logging.INFO
    options = memo.get("options") or _OPTIONS
    # Not closed in an on.cleanup handler: kopf runs those before timers stop, which would then fail.
    # The client lives as long as the operator process.
    api = await make_api_client(memo.get("kube_server"))
    memo.api = api
    memo.ctx = Context(
        kube=Kube(api),
        options=options,
        metrics_url=memo.get("trainer_metrics_url") or default_metrics_url(options),
    )
    if options.metrics_port:
        metrics.serve(options.metrics_port)


@kopf.on.resume(G, V, "rlvrruns")
@kopf.on.create(G, V, "rlvrruns")
@kopf.on.update(G, V, "rlvrruns", field="spec")
async def reconcile_run(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    with metrics.reconcile("RLVRRun"):
        await ensure_run(memo.ctx, dict(body))


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
@kopf.on.update(G, V, "evalsuites", field="spec.models")
async def reconcile_eval(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    with metrics.reconcile("EvalSuite"):
        await ensure_dependent(memo.ctx, "EvalSuite", dict(body))


@kopf.on.delete(G, V, "rlvrruns", optional=True)
@kopf.on.delete(G, V, "mergejobs", optional=True)
@kopf.on.delete(G, V, "evalsuites", optional=True)
def forget(name: str, namespace: str | None, body: kopf.Body, **_: Any) -> None:
    """Children go with owner references; only the phase gauge needs updating (no finalizer)."""
    metrics.set_phase(str(body["kind"]), namespace or "", name, None)


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
@kopf.on.event("apps", "v1", "statefulsets", labels=MANAGED)
@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def child_changed(
    body: kopf.Body, labels: kopf.Labels, namespace: str | None, memo: Any, **_: Any
) -> None:
    """A child's status moved: refresh its owner's status (level-based: read everything again)."""
    if not body.get("status"):
        return  # a child just created (by the reconcile that refreshes the status itself)
    for kind in ("RLVRRun", "MergeJob", "EvalSuite"):
        owner = labels.get(naming.owner_label(kind))
        if owner is None:
            continue
        with metrics.reconcile(kind):
            if kind == "RLVRRun":
                await refresh_run(memo.ctx, namespace or "", owner)
            else:
                await refresh_dependent(memo.ctx, kind, namespace or "", owner)
