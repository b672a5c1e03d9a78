"""The operator's own Prometheus metrics (served on M2RL_METRICS_PORT, 9090, at /metrics).

Names follow Prometheus' conventions (counters written out with their exposed `_total`). The
per-resource phase gauge has kube-state-metrics' shape (`kube_pod_status_phase`): one series per
resource and phase it is in, value 1, with `namespace` and `name` labels, so the chart's
ServiceMonitor sets honorLabels (as kube-state-metrics' does) to keep them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import prometheus_client

REGISTRY = prometheus_client.CollectorRegistry()
RECONCILES = prometheus_client.Counter(
    "m2rl_operator_reconciles_total", "Reconciles (create/update/resume/status refresh) by kind and result.",
    ("kind", "result"), registry=REGISTRY,
)  # fmt: skip
ERRORS = prometheus_client.Counter(
    "m2rl_operator_reconcile_errors_total", "Reconciles that raised, by kind and error class.",
    ("kind", "error"), registry=REGISTRY,
)  # fmt: skip
DURATION = prometheus_client.Histogram(
    "m2rl_operator_reconcile_duration_seconds", "Wall-clock time of one reconcile, by kind.", ("kind",),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY,
)  # fmt: skip
BY_PHASE = prometheus_client.Gauge(
    "m2rl_operator_resources", "Resources the operator manages, by kind and phase.", ("kind", "phase"),
    registry=REGISTRY,
)  # fmt: skip
RESOURCE_PHASE = prometheus_client.Gauge(
    "m2rl_operator_resource_phase", "1 for the phase each resource is in (the chart's M2RLRunFailed alert).",
    ("kind", "namespace", "name", "phase"), registry=REGISTRY,
)  # fmt: skip

_phases: dict[tuple[str, str, str], str] = {}  # (kind, namespace, name) -> phase


def set_phase(kind: str, namespace: str, name: str, phase: str | None) -> None:
    """Record a resource's phase (None: it is gone); the by-phase gauge moves by one, not recounted
    (status refreshes call this for every resource, so a recount would be quadratic)."""
    key = (kind, namespace, name)
    previous = _phases.pop(key, None)
    if previous is not None:
        BY_PHASE.labels(kind, previous).dec()
        RESOURCE_PHASE.remove(kind, namespace, name, previous)
    if phase is not None:
        _phases[key] = phase
        BY_PHASE.labels(kind, phase).inc()
        RESOURCE_PHASE.labels(kind, namespace, name, phase).set(1)


@contextmanager
def reconcile(kind: str) -> Iterator[None]:
    """Count and time one reconcile; exceptions are counted by class and re-raised."""
    start = time.perf_counter()
    try:
        yield
    except BaseException as error:
        # kopf's TemporaryError is control flow (waiting), not a failure.
        result = "requeued" if type(error).__name__ == "TemporaryError" else "error"
        RECONCILES.labels(kind, result).inc()
        if result == "error":
            ERRORS.labels(kind, type(error).__name__).inc()
        raise
    else:
        RECONCILES.labels(kind, "ok").inc()
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - start)


def serve(port: int) -> None:
    prometheus_client.start_http_server(port, registry=REGISTRY)
