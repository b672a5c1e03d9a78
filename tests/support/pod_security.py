"""The Pod Security Standards (baseline, restricted) at policy version "latest" (v1.35 semantics),
written from their definition: Kubernetes `staging/src/k8s.io/pod-security-admission/policy/
check_*.go`. Each check returns upstream's ForbiddenReason and ForbiddenDetail for a pod spec
given as a plain dict (the camelCase form a manifest holds); `evaluate` runs a level's checks the
way `registry.go` does (restricted = baseline minus the checks a restricted check overrides, plus
the restricted checks) and formats the result like `AggregateCheckResult.ForbiddenDetail`.

Windows pods (spec.os.name windows) and the pre-1.19 seccomp annotations are out of scope: the
operator creates neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Pod = Mapping[str, Any]  # a PodSpec as a dict
Meta = Mapping[str, Any]  # the pod's metadata (annotations)


@dataclass(frozen=True)
class Result:
    reason: str
    detail: str


Check = Callable[[Meta, Pod], Result | None]


def join_quote(items: list[str]) -> str:
    return '"' + '", "'.join(items) + '"' if items else ""


def pluralize(singular: str, plural: str, count: int) -> str:
    return singular if count == 1 else plural


def containers(pod: Pod) -> Iterator[Mapping[str, Any]]:
    """visitor.go visitContainers: init containers, containers, ephemeral containers."""
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def security(container: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return container.get("securityContext")


def relax_for_user_namespace(pod: Pod) -> bool:
    """helpers.go relaxPolicyForUserNamespacePod (unconditional from policy v1.35)."""
    return pod.get("hostUsers") is False


# ---- baseline -------------------------------------------------------------------------------------


def host_process(meta: Meta, pod: Pod) -> Result | None:
    """check_windowsHostProcess.go"""
    bad = [
        c["name"]
        for c in containers(pod)
        if ((security(c) or {}).get("windowsOptions") or {}).get("hostProcess")
    ]
    pod_level = ((pod.get("securityContext") or {}).get("windowsOptions") or {}).get("hostProcess")
    if not bad and not pod_level:
        return None
    setters = (["pod"] if pod_level else []) + (
        [f"{pluralize('container', 'containers', len(bad))} {join_quote(bad)}"] if bad else []
    )
    return Result(
        "hostProcess", f"{' and '.join(setters)} must not set securityContext.windowsOptions.hostProcess=true"
    )


def host_namespaces(meta: Meta, pod: Pod) -> Result | None:
    """check_hostNamespaces.go"""
    found = sorted(k for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k))
    return Result("host namespaces", ", ".join(found)) if found else None


def privileged(meta: Meta, pod: Pod) -> Result | None:
    """check_privileged.go"""
    bad = [c["name"] for c in containers(pod) if (security(c) or {}).get("privileged")]
    if not bad:
        return None
    return Result(
        "privileged",
        f"{pluralize('container', 'containers', len(bad))} {join_quote(bad)} "
        "must not set securityContext.privileged=true",
    )


BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip


def capabilities_baseline(meta: Meta, pod: Pod) -> Result | None:
    """check_capabilities_baseline.go"""
    bad, caps = [], set()
    for c in containers(pod):
        added = ((security(c) or {}).get("capabilities") or {}).get("add") or []
        extra = [a for a in added if a not in BASELINE_CAPABILITIES]
        if extra:
            bad.append(c["name"])
            caps.update(extra)
    if not bad:
        return None
    return Result(
        "non-default capabilities",
        f"{pluralize('container', 'containers', len(bad))} {join_quote(bad)} must not include "
        f"{join_quote(sorted(caps))} in securityContext.capabilities.add",
    )


def host_path_volumes(meta: Meta, pod: Pod) -> Result | None:
    """check_hostPathVolumes.go"""
    bad = [v["name"] for v in pod.get("volumes") or [] if "hostPath" in v]
    if not bad:
        return None
    return Result("hostPath volumes", f"{pluralize('volume', 'volumes', len(bad))} {join_quote(bad)}")


def host_ports(meta: Meta, pod: Pod) -> Result | None:
    """check_hostPorts.go"""
    bad, ports = [], set()
    for c in containers(pod):
        used = [p["hostPort"] for p in c.get("ports") or [] if p.get("hostPort")]
        if used:
            bad.append(c["name"])
            ports.update(str(p) for p in used)
    if not bad:
        return None
    return Result(
        "hostPort",
        f"{pluralize('container', 'containers', len(bad))} {join_quote(bad)} "
        f"{pluralize('uses', 'use', len(bad))} {pluralize('hostPort', 'hostPorts', len(ports))} "
        f"{', '.join(sorted(ports))}",
    )


def app_armor(meta: Meta, pod: Pod) -> Result | None:
    """check_appArmorProfile.go: field type RuntimeDefault or Localhost (pod and containers), and
    the container.apparmor.security.beta.kubernetes.io/* annotations runtime/default or localhost/*."""
    bad: list[str] = []
    prefix = "container.apparmor.security.beta.kubernetes.io/"
    for key, value in sorted((meta.get("annotations") or {}).items()):
        if key.startswith(prefix) and not (value == "runtime/default" or value.startswith("localhost/")):
            bad.append(f"{key}={value!r}".replace("'", '"'))
    profiles = [((pod.get("securityContext") or {}).get("appArmorProfile"), "pod")]
    profiles += [
        ((security(c) or {}).get("appArmorProfile"), f'container "{c["name"]}"') for c in containers(pod)
    ]
    for profile, owner in profiles:
        if profile and profile.get("type") not in ("RuntimeDefault", "Localhost"):
            bad.append(
                f'{owner} must not set securityContext.appArmorProfile.type to "{profile.get("type")}"'
            )
    return Result("forbidden AppArmor profile", ", ".join(bad)) if bad else None


SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def selinux_options(meta: Meta, pod: Pod) -> Result | None:
    """check_seLinuxOptions.go (v1.31 type list); user and role must be empty."""
    options = [(pod.get("securityContext") or {}).get("seLinuxOptions")]
    options += [(security(c) or {}).get("seLinuxOptions") for c in containers(pod)]
    bad_types, bad_user_role = set(), False
    for opts in options:
        if not opts:
            continue
        if opts.get("type", "") not in SELINUX_TYPES:
            bad_types.add(opts["type"])
        if opts.get("user") or opts.get("role"):
            bad_user_role = True
    if not bad_types and not bad_user_role:
        return None
    parts = []
    if bad_types:
        parts.append(f"{pluralize('type', 'types', len(bad_types))} {join_quote(sorted(bad_types))}")
    if bad_user_role:
        parts.append("user may not be set, role may not be set")
    return Result("seLinuxOptions", "; ".join(parts))


def _proc_mount(pod: Pod) -> Result | None:
    bad, types = [], set()
    for c in containers(pod):
        value = (security(c) or {}).get("procMount")
        if value is not None and value != "Default":
            bad.append(c["name"])
            types.add(value)
    if not bad:
        return None
    return Result(
        "procMount",
        f"{pluralize('container', 'containers', len(bad))} {join_quote(bad)} must not set "
        f"securityContext.procMount to {join_quote(sorted(types))}",
    )


def proc_mount_baseline(meta: Meta, pod: Pod) -> Result | None:
    """check_procMount_baseline.go (v1.35: allowed for user-namespaced pods)."""
    return None if relax_for_user_namespace(pod) else _proc_mount(pod)


def _seccomp(pod: Pod, *, required: bool) -> Result | None:
    valid = ("RuntimeDefault", "Localhost")
    setters, values, pod_set = [], set(), False
    pod_profile = (pod.get("securityContext") or {}).get("seccompProfile")
    if pod_profile is not None:
        if pod_profile.get("type") not in valid:
            setters.append("pod")
            values.add(pod_profile.get("type"))
        else:
            pod_set = True
    explicit, implicit = [], []
    for c in containers(pod):
        profile = (security(c) or {}).get("seccompProfile")
        if profile is not None:
            if profile.get("type") not in valid:
                explicit.append(c["name"])
                values.add(profile.get("type"))
        elif not pod_set:
            implicit.append(c["name"])
    if explicit:
        setters.append(f"{pluralize('container', 'containers', len(explicit))} {join_quote(explicit)}")
    if setters:
        return Result(
            "seccompProfile",
            f"{' and '.join(setters)} must not set securityContext.seccompProfile.type to "
            f"{join_quote(sorted(values))}",
        )
    if required and implicit:
        return Result(
            "seccompProfile",
            f"pod or {pluralize('container', 'containers', len(implicit))} {join_quote(implicit)} must set "
            'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"',
        )
    return None


def seccomp_baseline(meta: Meta, pod: Pod) -> Result | None:
    """check_seccompProfile_baseline.go (v1.19: the field must not be Unconfined)."""
    return _seccomp(pod, required=False)


SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
}  # fmt: skip  (v1.32 list)


def sysctls(meta: Meta, pod: Pod) -> Result | None:
    """check_sysctls.go"""
    bad = [
        s["name"]
        for s in (pod.get("securityContext") or {}).get("sysctls") or []
        if s["name"] not in SAFE_SYSCTLS
    ]
    return Result("forbidden sysctls", ", ".join(bad)) if bad else None


def host_probes(meta: Meta, pod: Pod) -> Result | None:
    """check_hostProbesAndhostLifecycle.go (v1.34)."""
    bad, hosts = set(), set()
    for c in containers(pod):
        handlers = [c.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [(c.get("lifecycle") or {}).get(h) for h in ("postStart", "preStop")]
        for handler in handlers:
            for kind in ("httpGet", "tcpSocket"):
                host = ((handler or {}).get(kind) or {}).get("host")
                if host:
                    bad.add(c["name"])
                    hosts.add(host)
    if not bad:
        return None
    return Result(
        "probe or lifecycle host",
        f"{pluralize('container', 'containers', len(bad))} {join_quote(sorted(bad))} "
        f"{pluralize('uses', 'use', len(bad))} "
        f"{pluralize('probe or lifecycle host', 'probe or lifecycle hosts', len(hosts))} "
        f"{join_quote(sorted(hosts))}",
    )


# ---- restricted -----------------------------------------------------------------------------------

ALLOWED_VOLUMES = (
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim",
    "projected", "secret",
)  # fmt: skip
RESTRICTED_VOLUMES = (
    "hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi", "glusterfs", "rbd",
    "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile", "vsphereVolume", "quobyte", "azureDisk",
    "photonPersistentDisk", "portworxVolume", "scaleIO", "storageos",
)  # fmt: skip


def restricted_volumes(meta: Meta, pod: Pod) -> Result | None:
    """check_restrictedVolumes.go"""
    bad, types = [], set()
    for volume in pod.get("volumes") or []:
        if any(key in volume for key in ALLOWED_VOLUMES):
            continue
        bad.append(volume["name"])
        types.add(next((key for key in RESTRICTED_VOLUMES if key in volume), "unknown"))
    if not bad:
        return None
    return Result(
        "restricted volume types",
        f"{pluralize('volume', 'volumes', len(bad))} {join_quote(bad)} {pluralize('uses', 'use', len(bad))} "
        f"{pluralize('restricted volume type', 'restricted volume types', len(types))} "
        f"{join_quote(sorted(types))}",
    )


def allow_privilege_escalation(meta: Meta, pod: Pod) -> Result | None:
    """check_allowPrivilegeEscalation.go: must be explicitly false."""
    bad = [
        c["name"] for c in containers(pod) if (security(c) or {}).get("allowPrivilegeEscalation") is not False
    ]
    if not bad:
        return None
    return Result(
        "allowPrivilegeEscalation != false",
        f"{pluralize('container', 'containers', len(bad))} {join_quote(bad)} must set "
        "securityContext.allowPrivilegeEscalation=false",
    )


def run_as_non_root(meta: Meta, pod: Pod) -> Result | None:
    """check_runAsNonRoot.go (v1.35: skipped for user-namespaced pods)."""
    if relax_for_user_namespace(pod):
        return None
    setters, pod_ok = [], False
    value = (pod.get("securityContext") or {}).get("runAsNonRoot")
    if value is False:
        setters.append("pod")
    elif value is True:
        pod_ok = True
    explicit, implicit = [], []
    for c in containers(pod):
        own = (security(c) or {}).get("runAsNonRoot")
        if own is False:
            explicit.append(c["name"])
        elif own is None and not pod_ok:
            implicit.append(c["name"])
    if explicit:
        setters.append(f"{pluralize('container', 'containers', len(explicit))} {join_quote(explicit)}")
    if setters:
        return Result(
            "runAsNonRoot != true", f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false"
        )
    if implicit:
        return Result(
            "runAsNonRoot != true",
            f"pod or {pluralize('container', 'containers', len(implicit))} {join_quote(implicit)} must set "
            "securityContext.runAsNonRoot=true",
        )
    return None


def run_as_user(meta: Meta, pod: Pod) -> Result | None:
    """check_runAsUser.go (v1.35: skipped for user-namespaced pods)."""
    if relax_for_user_namespace(pod):
        return None
    setters = ["pod"] if (pod.get("securityContext") or {}).get("runAsUser") == 0 else []
    bad = [c["name"] for c in containers(pod) if (security(c) or {}).get("runAsUser") == 0]
    if bad:
        setters.append(f"{pluralize('container', 'containers', len(bad))} {join_quote(bad)}")
    return Result("runAsUser=0", f"{' and '.join(setters)} must not set runAsUser=0") if setters else None


def seccomp_restricted(meta: Meta, pod: Pod) -> Result | None:
    """check_seccompProfile_restricted.go"""
    return _seccomp(pod, required=True)


def capabilities_restricted(meta: Meta, pod: Pod) -> Result | None:
    """check_capabilities_restricted.go: drop ALL; add at most NET_BIND_SERVICE."""
    missing_drop, adding, forbidden = [], [], set()
    for c in containers(pod):
        caps = (security(c) or {}).get("capabilities")
        if caps is None:
            missing_drop.append(c["name"])
            continue
        if "ALL" not in (caps.get("drop") or []):
            missing_drop.append(c["name"])
        extra = [a for a in caps.get("add") or [] if a != "NET_BIND_SERVICE"]
        if extra:
            adding.append(c["name"])
            forbidden.update(extra)
    details = []
    if missing_drop:
        details.append(
            f"{pluralize('container', 'containers', len(missing_drop))} {join_quote(missing_drop)} must set "
            'securityContext.capabilities.drop=["ALL"]'
        )
    if adding:
        details.append(
            f"{pluralize('container', 'containers', len(adding))} {join_quote(adding)} must not include "
            f"{join_quote(sorted(forbidden))} in securityContext.capabilities.add"
        )
    return Result("unrestricted capabilities", "; ".join(details)) if details else None


def proc_mount_restricted(meta: Meta, pod: Pod) -> Result | None:
    """check_procMount_restricted.go (v1.35): Default only, user namespace or not."""
    return _proc_mount(pod)


BASELINE: dict[str, Check] = {
    "windowsHostProcess": host_process,
    "hostNamespaces": host_namespaces,
    "privileged": privileged,
    "capabilities_baseline": capabilities_baseline,
    "hostPathVolumes": host_path_volumes,
    "hostPorts": host_ports,
    "appArmorProfile": app_armor,
    "seLinuxOptions": selinux_options,
    "procMount": proc_mount_baseline,
    "seccompProfile_baseline": seccomp_baseline,
    "sysctls": sysctls,
    "hostProbesAndHostLifecycle": host_probes,
}
RESTRICTED: dict[str, Check] = {
    "restrictedVolumes": restricted_volumes,
    "allowPrivilegeEscalation": allow_privilege_escalation,
    "runAsNonRoot": run_as_non_root,
    "runAsUser": run_as_user,
    "seccompProfile_restricted": seccomp_restricted,
    "capabilities_restricted": capabilities_restricted,
    "procMount_restricted": proc_mount_restricted,
}
OVERRIDES = {  # restricted check -> the baseline check it replaces (OverrideCheckIDs)
    "restrictedVolumes": "hostPathVolumes",
    "seccompProfile_restricted": "seccompProfile_baseline",
    "capabilities_restricted": "capabilities_baseline",
    "procMount_restricted": "procMount",
}


def checks(level: str) -> dict[str, Check]:
    if level == "baseline":
        return dict(BASELINE)
    if level == "restricted":
        kept = {k: v for k, v in BASELINE.items() if k not in OVERRIDES.values()}
        return {**kept, **RESTRICTED}
    raise ValueError(f"level must be baseline or restricted, got {level!r}")


def evaluate(level: str, pod: Pod, meta: Meta | None = None) -> list[str]:
    """The forbidden reasons with details (`reason (detail)`), one per failing check; [] = allowed."""
    out = []
    for check in checks(level).values():
        result = check(meta or {}, pod)
        if result is not None:
            out.append(f"{result.reason} ({result.detail})" if result.detail else result.reason)
    return out


def pod_templates(manifest: Mapping[str, Any]) -> list[tuple[Meta, Pod]]:
    """(metadata, spec) of the pod a workload manifest creates (Job, Deployment, StatefulSet, Pod)."""
    kind = manifest.get("kind")
    if kind == "Pod":
        return [(manifest.get("metadata") or {}, manifest["spec"])]
    if kind in ("Job", "Deployment", "StatefulSet", "ReplicaSet", "DaemonSet"):
        template = manifest["spec"]["template"]
        return [(template.get("metadata") or {}, template["spec"])]
    return []
