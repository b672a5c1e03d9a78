"""Every pod the operator renders against the Pod Security Standards (tests/support/pod_security.py,
written from Kubernetes' pod-security-admission/policy/check_*.go), and the check itself against
cases and messages of those files' own tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from m2rl_operator.api.yaml_io import iter_documents
from m2rl_operator.render import render_objects
from m2rl_operator.settings import OperatorOptions
from tests.support import pod_security as pss
from tests.support.paths import REPO_ROOT

HERE = Path(__file__).parent
OPTIONS = OperatorOptions(metrics_port=None)


# ---- the check, on upstream's own test cases (check_*_test.go, expected reason and detail) --------


def _c(name: str, **security: Any) -> dict[str, Any]:
    return {"name": name, "securityContext": security} if security else {"name": name}


UPSTREAM_CASES: list[tuple[str, Any, dict[str, Any], tuple[str, str] | None]] = [
    # check_runAsNonRoot_test.go
    ("runAsNonRoot: no explicit", pss.run_as_non_root, {"containers": [_c("a")]},
     ("runAsNonRoot != true", 'pod or container "a" must set securityContext.runAsNonRoot=true')),
    ("runAsNonRoot: pod false", pss.run_as_non_root,
     {"securityContext": {"runAsNonRoot": False}, "containers": [_c("a")]},
     ("runAsNonRoot != true", "pod must not set securityContext.runAsNonRoot=false")),
    ("runAsNonRoot: containers false", pss.run_as_non_root,
     {"securityContext": {"runAsNonRoot": True}, "containers": [
         _c("a"), {"name": "b", "securityContext": {}}, _c("c", runAsNonRoot=False),
         _c("d", runAsNonRoot=False),
         _c("e", runAsNonRoot=True), _c("f", runAsNonRoot=True)]},
     ("runAsNonRoot != true", 'containers "c", "d" must not set securityContext.runAsNonRoot=false')),
    ("runAsNonRoot: container fallthrough", pss.run_as_non_root,
     {"containers": [_c("a"), {"name": "b", "securityContext": {}}, _c("d", runAsNonRoot=True),
                     _c("e", runAsNonRoot=True)]},
     ("runAsNonRoot != true", 'pod or containers "a", "b" must set securityContext.runAsNonRoot=true')),
    ("runAsNonRoot: hostUsers false allowed", pss.run_as_non_root, {"hostUsers": False}, None),
    # check_capabilities_restricted_test.go
    ("capabilities: multiple containers", pss.capabilities_restricted,
     {"containers": [
         _c("a", capabilities={"add": ["FOO", "BAR"]}), _c("b", capabilities={"add": ["BAR", "BAZ"]}),
         _c("c", capabilities={"add": ["NET_BIND_SERVICE", "CHOWN"], "drop": ["ALL", "FOO"]})]},
     ("unrestricted capabilities",
      'containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; containers "a", "b", "c" must '
      'not include "BAR", "BAZ", "CHOWN", "FOO" in securityContext.capabilities.add')),
    # check_seccompProfile_restricted_test.go
    ("seccomp: no explicit", pss.seccomp_restricted, {"containers": [_c("a")]},
     ("seccompProfile",
      'pod or container "a" must set securityContext.seccompProfile.type to '
      '"RuntimeDefault" or "Localhost"')),
    ("seccomp: pod invalid", pss.seccomp_restricted,
     {"securityContext": {"seccompProfile": {"type": "Unconfined"}}, "containers": [_c("a")]},
     ("seccompProfile", 'pod must not set securityContext.seccompProfile.type to "Unconfined"')),
    ("seccomp: containers invalid", pss.seccomp_restricted,
     {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "containers": [
         _c("a"), {"name": "b", "securityContext": {}}, _c("c", seccompProfile={"type": "Unconfined"}),
         _c("d", seccompProfile={"type": "Unconfined"}), _c("e", seccompProfile={"type": "RuntimeDefault"}),
         _c("f", seccompProfile={"type": "RuntimeDefault"})]},
     ("seccompProfile",
      'containers "c", "d" must not set securityContext.seccompProfile.type to "Unconfined"')),
    ("seccomp: container fallthrough", pss.seccomp_restricted,
     {"containers": [_c("a"), {"name": "b", "securityContext": {}},
                     _c("d", seccompProfile={"type": "RuntimeDefault"}),
                     _c("e", seccompProfile={"type": "RuntimeDefault"})]},
     ("seccompProfile",
      'pod or containers "a", "b" must set securityContext.seccompProfile.type to '
      '"RuntimeDefault" or "Localhost"')),
    # check_restrictedVolumes_test.go
    ("volumes", pss.restricted_volumes,
     {"volumes": [
         *({"name": f"a{i}", kind: {}} for i, kind in enumerate(pss.ALLOWED_VOLUMES, start=1)),
         *({"name": f"b{i}", kind: {}} for i, kind in enumerate(pss.RESTRICTED_VOLUMES, start=1)),
         {"name": "c1"}]},
     ("restricted volume types",
      'volumes "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "b9", "b10", "b11", "b12", "b13", "b14", '
      '"b15", '
      '"b16", "b17", "b18", "b19", "b20", "b21", "c1" use restricted volume types "awsElasticBlockStore", '
      '"azureDisk", "azureFile", "cephfs", "cinder", "fc", "flexVolume", "flocker", "gcePersistentDisk", '
      '"gitRepo", "glusterfs", "hostPath", "iscsi", "nfs", "photonPersistentDisk", "portworxVolume", '
      '"quobyte", "rbd", "scaleIO", "storageos", "unknown", "vsphereVolume"')),
    # check_allowPrivilegeEscalation.go, check_privileged.go, check_hostNamespaces.go, check_procMount*.go
    ("allowPrivilegeEscalation", pss.allow_privilege_escalation,
     {"containers": [_c("a"), _c("b", allowPrivilegeEscalation=True),
                     _c("c", allowPrivilegeEscalation=False)]},
     ("allowPrivilegeEscalation != false",
      'containers "a", "b" must set securityContext.allowPrivilegeEscalation=false')),
    ("privileged", pss.privileged, {"containers": [_c("a", privileged=True), _c("b", privileged=False)]},
     ("privileged", 'container "a" must not set securityContext.privileged=true')),
    ("host namespaces", pss.host_namespaces, {"hostPID": True, "hostNetwork": True},
     ("host namespaces", "hostNetwork, hostPID")),
    ("procMount baseline, hostUsers false", pss.proc_mount_baseline,
     {"hostUsers": False, "containers": [_c("a", procMount="Unmasked")]}, None),
    ("procMount restricted, hostUsers false", pss.proc_mount_restricted,
     {"hostUsers": False, "containers": [_c("a", procMount="Unmasked")]},
     ("procMount", 'container "a" must not set securityContext.procMount to "Unmasked"')),
    ("runAsUser 0", pss.run_as_user,
     {"securityContext": {"runAsUser": 0}, "containers": [_c("a", runAsUser=0), _c("b", runAsUser=1000)]},
     ("runAsUser=0", 'pod and container "a" must not set runAsUser=0')),
]  # fmt: skip


@pytest.mark.parametrize(
    ("check", "pod", "expected"), [c[1:] for c in UPSTREAM_CASES], ids=[c[0] for c in UPSTREAM_CASES]
)
def test_check_matches_upstream_cases(
    check: Any, pod: dict[str, Any], expected: tuple[str, str] | None
) -> None:
    result = check({}, pod)
    assert (None if result is None else (result.reason, result.detail)) == expected


def test_levels_compose_like_the_registry() -> None:
    """Restricted replaces the baseline checks it overrides; a clean restricted pod passes both."""
    assert set(pss.checks("restricted")) == (set(pss.BASELINE) - set(pss.OVERRIDES.values())) | set(
        pss.RESTRICTED
    )
    good = {
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_c("a", allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]})],
        "volumes": [{"name": "v", "emptyDir": {}}],
    }
    assert pss.evaluate("restricted", good) == pss.evaluate("baseline", good) == []
    bad = copy.deepcopy(good)
    bad["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert pss.evaluate("baseline", bad) == ['hostPath volumes (volume "h")']
    assert pss.evaluate("restricted", bad) == [
        'restricted volume types (volume "h" uses restricted volume type "hostPath")'
    ]


# ---- every rendered pod ----------------------------------------------------------------------------


def _objects(*paths: Path) -> list[dict[str, Any]]:
    return [doc.content for path in paths for doc in iter_documents(path)]


def _pods(objects: list[dict[str, Any]]) -> list[tuple[str, Any, Any]]:
    rendered = render_objects(objects, OPTIONS)
    assert rendered.problems == []
    return [
        (f"{m['kind']}/{m['metadata']['name']}", meta, spec)
        for m in rendered.manifests
        for meta, spec in pss.pod_templates(m)
    ]


def _with_code_verifier(isolation: str, runtime_class: str | None = None) -> list[dict[str, Any]]:
    (run,) = _objects(HERE / "cases" / "tiny-cpu.yaml")
    run["spec"]["domains"][0]["verifier"] = {"type": "code"}
    run["spec"]["verifier"] = {
        "isolation": isolation,
        **({"runtimeClassName": runtime_class} if runtime_class else {}),
    }
    run["spec"]["pod"] = {"serviceAccountName": "trainer-identity", "imagePullSecrets": ["registry"]}
    return [run]


def test_every_pod_of_the_examples_and_cases_is_restricted_except_the_stated_verifier_pods() -> None:
    """The only exceptions are pods that run model-written code under isolation UserNamespace (the
    default without a runtimeClassName): procMount Unmasked, allowed by baseline for hostUsers false."""
    pods = _pods(_objects(REPO_ROOT / "examples", HERE / "cases"))
    assert len(pods) > 40
    exceptions = {}
    for identity, meta, spec in pods:
        violations = pss.evaluate("restricted", spec, meta)
        if violations:
            exceptions[identity] = violations
            assert pss.evaluate("baseline", spec, meta) == [], identity
    sandbox_pods = {identity for identity, _, spec in pods if spec.get("hostUsers") is False}
    assert sandbox_pods and set(exceptions) == sandbox_pods
    for identity in sandbox_pods:
        (name,) = {c["name"] for c in next(s for i, _, s in pods if i == identity)["containers"]}
        assert exceptions[identity] == [
            f'procMount (container "{name}" must not set securityContext.procMount to "Unmasked")'
        ]


@pytest.mark.parametrize(
    ("isolation", "runtime_class", "restricted", "baseline"),
    [
        ("RuntimeClass", "gvisor", [], []),
        ("Auto", "gvisor", [], []),
        ("UserNamespace", None,
         ['procMount (container "verifier" must not set securityContext.procMount to "Unmasked")'], []),
        ("Privileged", None, None,
         ['privileged (container "verifier" must not set securityContext.privileged=true)',
          'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")']),
    ],
)  # fmt: skip
def test_verifier_isolation_modes_and_their_exceptions(
    isolation: str, runtime_class: str | None, restricted: list[str] | None, baseline: list[str]
) -> None:
    pods = dict((i, (m, s)) for i, m, s in _pods(_with_code_verifier(isolation, runtime_class)))
    meta, verifier = pods["Deployment/tiny-verifier"]
    if restricted is not None:
        assert pss.evaluate("restricted", verifier, meta) == restricted
    assert pss.evaluate("baseline", verifier, meta) == baseline
    # No service account token in the pod that runs model code, whatever `pod` asks for.
    assert verifier["automountServiceAccountToken"] is False and "serviceAccountName" not in verifier
    _, trainer = pods["Job/tiny-trainer"]
    assert pss.evaluate("restricted", trainer) == []
    assert (
        trainer["serviceAccountName"] == "trainer-identity" and "automountServiceAccountToken" not in trainer
    )
    assert trainer["imagePullSecrets"] == [{"name": "registry"}]
