"""Pod templates: security contexts, the resource-wide pod options, default requests.

Every pod the operator creates passes the `restricted` Pod Security Standard (Kubernetes
`pod-security-admission/policy/check_*.go`: runAsNonRoot, seccomp RuntimeDefault or Localhost,
allowPrivilegeEscalation false, capabilities drop ALL, only configMap/emptyDir/PVC/... volumes),
except a pod that runs model-written code under isolation UserNamespace or Privileged, whose
exceptions `sandbox_security` states (docs/operations.md#code-sandbox). Tests check every rendered
pod against the standard (tests/support/pod_security.py).
"""

from __future__ import annotations

import copy
from typing import Any

from m2rl_operator import naming
from m2rl_operator.api.common import PodOptions, PodTemplateOptions, SandboxIsolation, SchedulingOptions
from m2rl_operator.builders.common import Manifest, dump, metadata
from m2rl_operator.settings import Requests

VERIFIER_UID = 65532
"""The verifier's user: not the image's (10001), whose home it has no business reading."""


def restricted_container_security() -> dict[str, Any]:
    """A container's part of the restricted standard (no privilege escalation, no capabilities)."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def restricted_pod_security() -> dict[str, Any]:
    """The pod's part: non-root (the image's numeric USER 10001 satisfies the kubelet's check, and
    its HOME stays writable), the runtime's default seccomp profile."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


def resolve_isolation(isolation: SandboxIsolation, runtime_class_name: str | None) -> str:
    """Auto -> RuntimeClass when a runtimeClassName is given, else UserNamespace."""
    if isolation == "Auto":
        return "RuntimeClass" if runtime_class_name else "UserNamespace"
    return isolation


def sandbox_security(
    isolation: SandboxIsolation, runtime_class_name: str | None, seccomp_profile: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod fields, container securityContext) of a pod whose bubblewrap sandbox runs model code.

    bubblewrap (rewards/sandbox.py) needs, inside the pod: a new user namespace (unshare or clone
    with CLONE_NEWUSER, which containerd's RuntimeDefault profile allows only to holders of
    CAP_SYS_ADMIN: contrib/seccomp/seccomp_default.go), mount (for its tmpfs and a fresh /proc),
    and a /proc without masked paths (the kernel refuses a new proc mount inside a user namespace
    while the container's /proc has locked over-mounts: fs/namespace.c mnt_already_visible).
    no_new_privs (allowPrivilegeEscalation false) is fine: bwrap is not setuid here.

    - RuntimeClass: a sandboxed runtime (gVisor's runsc) implements those calls itself and does
      not load the OCI seccomp profile inside its sandbox (runsc flag oci-seccomp, default off):
      the pod stays restricted.
    - UserNamespace: hostUsers false (capabilities and uid 0 exist only in the pod's user
      namespace), procMount Unmasked (Kubernetes allows it only with hostUsers false), and a
      Localhost seccomp profile that allows the namespace and mount calls. Exception to restricted:
      procMount (procMount_restricted, policy v1.35+); baseline allows it for hostUsers false.
    - Privileged: the container is privileged (unmasked /proc, no seccomp) but runs as a non-root
      user without capabilities; needs a privileged namespace.
    """
    mode = resolve_isolation(isolation, runtime_class_name)
    container = restricted_container_security()
    pod: dict[str, Any] = {"securityContext": restricted_pod_security()}
    if mode == "RuntimeClass":
        if not runtime_class_name:
            raise ValueError("isolation RuntimeClass needs runtimeClassName")
        pod["runtimeClassName"] = runtime_class_name
    elif mode == "UserNamespace":
        pod["hostUsers"] = False
        pod["securityContext"]["seccompProfile"] = {"type": "Localhost", "localhostProfile": seccomp_profile}
        container["procMount"] = "Unmasked"
    elif mode == "Privileged":
        # allowPrivilegeEscalation false is invalid next to privileged (API validation).
        container = {"privileged": True, "capabilities": {"drop": ["ALL"]}}
        pod["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
    else:
        raise ValueError(f"unknown isolation {isolation!r}")
    if runtime_class_name and mode != "RuntimeClass":
        pod["runtimeClassName"] = runtime_class_name
    return pod, container


def requests_for(pod: PodOptions, default: Requests, gpus: int) -> dict[str, Any]:
    """The container's `resources`: the spec's, default requests for keys it leaves unset (unless
    it sets a limit there), `nvidia.com/gpu` from the component's GPU count."""
    result: dict[str, Any] = copy.deepcopy(dump(pod.resources)) if pod.resources else {}
    requests = result.setdefault("requests", {})
    limits = result.get("limits") or {}
    for key, value in (("cpu", default.cpu), ("memory", default.memory)):
        if key not in requests and key not in limits:
            requests[key] = value
    if gpus > 0:
        result.setdefault("limits", {})["nvidia.com/gpu"] = gpus
        requests["nvidia.com/gpu"] = gpus
    return result


def pod_metadata(own_labels: dict[str, str], options: PodTemplateOptions | None) -> dict[str, Any]:
    """A pod template's metadata: the resource's pod labels and annotations, ours winning."""
    meta: dict[str, Any] = {"labels": {**((options and options.labels) or {}), **own_labels}}
    if options and options.annotations:
        meta["annotations"] = dict(options.annotations)
    return meta


def pod_options(
    component: PodOptions,
    options: PodTemplateOptions | None,
    priority_class_name: str | None,
    *,
    service_account: bool = True,
) -> dict[str, Any]:
    """Pod-level fields from the resource's `pod` block and the component's own placement.

    nodeSelector: the resource's, then the component's (which wins on a key). Tolerations: the
    resource's, then the component's. `service_account` False (the verifier): no account of the
    user's and no token, whatever `pod.serviceAccountName` says.
    """
    spec: dict[str, Any] = {}
    selector = {**((options and options.node_selector) or {}), **(component.node_selector or {})}
    if selector:
        spec["nodeSelector"] = selector
    tolerations = [*((options and options.tolerations) or []), *(component.tolerations or [])]
    if tolerations:
        spec["tolerations"] = [dump(t) for t in tolerations]
    if options and options.affinity and (affinity := dump(options.affinity)):
        spec["affinity"] = affinity
    if options and options.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in options.image_pull_secrets]
    if service_account and options and options.service_account_name:
        spec["serviceAccountName"] = options.service_account_name
    else:
        # No API credentials in pods that do not ask for them (none of ours calls the API server).
        spec["automountServiceAccountToken"] = False
    if priority_class_name:
        spec["priorityClassName"] = priority_class_name
    return spec


def worker_job(
    kind: str,
    owner: str,
    namespace: str,
    spec: SchedulingOptions,
    *,
    job_name: str,
    component: str,
    worker: PodOptions,
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    job_spec: dict[str, Any],
    sandbox: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Manifest:
    """A Job of one container that reports its result in the termination message (merge, eval).

    `job_spec` holds the Job-level fields (completions, retries); the pod template is built here:
    restricted security, or `sandbox` (pod fields, container securityContext) for a pod that runs
    model-written code; the resource's pod options; Kueue's queue label on the Job (Kueue then owns
    its `suspend`, so the Job is created suspended).
    """
    pod_fields, security = sandbox or ({"securityContext": restricted_pod_security()}, {})
    container = {
        **container,
        "securityContext": security or restricted_container_security(),
        # The summary is the termination message (m2rl_trainer.utils.results); a pod that fails
        # before writing one shows the tail of its log there instead.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    suspended = bool(spec.queue_name) or bool(getattr(spec, "suspend", False))
    job: dict[str, Any] = {"suspend": True} if suspended else {}
    if spec.active_deadline_seconds:
        job["activeDeadlineSeconds"] = spec.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(job_name, namespace, kind, owner, component, spec.queue_name),
        "spec": {
            **job_spec,
            **job,
            "template": {
                "metadata": pod_metadata(naming.labels(kind, owner, component), spec.pod),
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [container],
                    "volumes": volumes,
                    **pod_options(worker, spec.pod, spec.priority_class_name),
                    **pod_fields,
                },
            },
        },
    }
