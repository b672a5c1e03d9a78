"""The operator's view of its children, filled by the watch streams instead of GETs per event.

kopf indexes (`@kopf.index` in handlers.py) keep a compact copy of every managed Job, StatefulSet,
Deployment and Pod, and of FailedCreate Events, as the watches deliver them; the watches carry a
label selector the API server applies (`app.kubernetes.io/managed-by=m2rl-operator`, set in
handlers.startup), so other workloads of the cluster never reach the operator. A refresh then
reads its children here: one GET (its own resource) per refresh instead of one per child.

Reads can lag the API server by a watch event. What the operator creates is noted at once (the
API server's answer to the create), so it is not created twice; otherwise the reconcile tolerates
the lag: creates are idempotent (409 is "exists"), deletes of a gone object are no-ops, and the
event that brings the new state triggers another refresh. Only the children whose state the
status reads are watched (Jobs, StatefulSets, Deployments, Pods): Services, ConfigMaps,
NetworkPolicies and claims are created once per operator process (reconcile.Context.known).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from m2rl_operator import naming

Key = tuple[str, str, str]  # kind, namespace, name


def _meta(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    return {
        key: meta[key]
        for key in (
            "name",
            "namespace",
            "uid",
            "labels",
            "annotations",
            "creationTimestamp",
            "deletionTimestamp",
        )
        if meta.get(key) is not None
    }


def compact_child(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the reconcile reads of a Job, StatefulSet or Deployment: metadata, the spec fields it
    compares (suspend, replicas), the status. Not pod templates."""
    spec = body.get("spec") or {}
    kept = {k: spec[k] for k in ("suspend", "replicas") if k in spec}
    return {"kind": kind, "metadata": _meta(body), "spec": kept, "status": dict(body.get("status") or {})}


def compact_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the reconcile reads of a pod: its labels, phase, and (once it succeeded) the
    termination messages that carry a merge's or an evaluation's result."""
    status = body.get("status") or {}
    out: dict[str, Any] = {"metadata": _meta(body), "status": {"phase": status.get("phase")}}
    if status.get("phase") == "Succeeded":
        out["status"]["containerStatuses"] = [
            {
                "state": {
                    "terminated": {"message": ((c.get("state") or {}).get("terminated") or {}).get("message")}
                }
            }
            for c in status.get("containerStatuses") or []
        ]
    return out


def owner_of(labels: Mapping[str, str]) -> tuple[str, str] | None:
    """(kind, name) of the M2RL resource a child or pod belongs to, from its owner label."""
    for kind in naming.PLURALS:
        if owner := labels.get(naming.owner_label(kind)):
            return kind, owner
    return None


def _newest(items: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Of several objects of one name (an old one being deleted, a new one), the newest."""
    best = None
    for item in items:
        created = str((item.get("metadata") or {}).get("creationTimestamp") or "")
        if best is None or created >= str((best.get("metadata") or {}).get("creationTimestamp") or ""):
            best = dict(item)
    return best


class Children:
    """Reads over the indexes: `children` maps (kind, namespace, name) to compact children, `pods`
    maps (namespace, owner kind, owner) to compact pods, `failures` maps (namespace, kind, name) of
    an involved object to its FailedCreate events (kopf indexes: key -> collection of values)."""

    def __init__(
        self,
        children: Mapping[Any, Iterable[Any]],
        pods: Mapping[Any, Iterable[Any]],
        failures: Mapping[Any, Iterable[Any]],
    ) -> None:
        self._children, self._pods, self._failures = children, pods, failures
        self._created: dict[Key, dict[str, Any]] = {}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The child as last watched, else as the operator just created it (until the watch
        brings it), else None."""
        key = (kind, namespace, name)
        watched = _newest(self._children.get(key, ()))
        if watched is not None:
            self._created.pop(key, None)
            return watched
        return self._created.get(key)

    def created(self, kind: str, obj: Mapping[str, Any]) -> None:
        """Note a child the API server just created (its answer to the create), so the refresh
        that created it, and the next ones, see it before its watch event arrives."""
        meta = obj.get("metadata") or {}
        self._created[(kind, meta.get("namespace") or "", meta.get("name") or "")] = compact_child(kind, obj)

    def deleted(self, kind: str, namespace: str, name: str) -> None:
        self._created.pop((kind, namespace, name), None)

    def pods(
        self, namespace: str, owner_kind: str, owner: str, component: str | None = None
    ) -> list[dict[str, Any]]:
        pods = [dict(p) for p in self._pods.get((namespace, owner_kind, owner), ())]
        if component is None:
            return pods
        return [
            p
            for p in pods
            if (p["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == component
        ]

    def failed_create(self, child: Mapping[str, Any] | None) -> str | None:
        """The newest FailedCreate message about this very object (its uid: not an earlier one of
        the same name), or None."""
        if child is None:
            return None
        meta = child.get("metadata") or {}
        events = [
            e
            for e in self._failures.get((meta.get("namespace"), child.get("kind"), meta.get("name")), ())
            if e.get("uid") == meta.get("uid")
        ]
        if not events:
            return None
        return str(max(events, key=lambda e: str(e.get("time") or ""))["message"])
