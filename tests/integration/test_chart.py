"""The Helm chart, rendered by the real helm binary and checked against the official Kubernetes
schemas (kubernetes-validate, offline) in its default and non-default configurations."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from m2rl_operator.api.crd import crd_manifests
from m2rl_operator.api.validation import SchemaValidator
from tests.support.paths import REPO_ROOT, tool

CHART = REPO_ROOT / "charts" / "m2rl"
KUBE_VERSION = "1.33.0"  # validated against this version's official schemas (and rendered for it)
OLDEST_KUBE = "1.29"  # the chart's kubeVersion floor: CEL fieldPath/reason/messageExpression

NAMESPACED_VALUES: dict[str, Any] = {
    "watch": {"scope": "namespace", "namespace": "research"},
    "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus-stack"}},
    "crds": {"enabled": True, "keep": False},
    "image": {"repository": "registry.example.com/m2rl/operator", "tag": "0.2.0-rc1", "pullPolicy": "Always"},
    "images": {"trainer": "registry.example.com/m2rl/trainer:0.2.0", "rollout": "vllm/vllm-openai:v0.32.0"},
    "operator": {
        "logLevel": "debug",
        "extraArgs": ["--peering=none"],
        "extraEnv": [{"name": "X", "value": "1"}],
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
    "priorityClassName": "system-cluster-critical",
}
NO_CRDS_VALUES: dict[str, Any] = {"crds": {"enabled": False}, "metrics": {"service": {"enabled": False}}}

# ServiceMonitor is not a built-in kind, so kubernetes-validate has no schema for it. This is the
# subset of monitoring.coreos.com/v1 ServiceMonitor the chart uses, written from prometheus-operator's
# API reference; the structural validator rejects any field outside it.
_DURATION = {"type": "string", "pattern": "^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR_SUBSET: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"type": "string", "enum": ["monitoring.coreos.com/v1"]},
        "kind": {"type": "string", "enum": ["ServiceMonitor"]},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["selector"],
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {
                        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}
                    },
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                        },
                    },
                },
            },
        },
    },
}


@dataclass
class Rendered:
    """`helm template` output of one configuration, by kind."""

    manifests: list[dict[str, Any]]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        (found,) = self.of(kind)
        return found


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm with its own config/cache dirs and no kubeconfig: everything offline and hermetic."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELM_")}
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-kubeconfig"),
    )
    return env


def helm(
    env: dict[str, str],
    *args: str,
    values: dict[str, Any] | None = None,
    tmp: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    command = [str(tool("helm")), *args]
    if values is not None:
        assert tmp is not None
        path = tmp / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
        path.write_text(yaml.safe_dump(values))
        command += ["-f", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done


def render(
    env: dict[str, str], tmp: Path, values: dict[str, Any] | None = None, namespace: str = "m2rl-system"
) -> Rendered:
    done = helm(
        env,
        "template",
        "m2rl",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        values=values or {},
        tmp=tmp,
    )
    return Rendered([d for d in yaml.safe_load_all(done.stdout) if d])


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chart")


@pytest.fixture(scope="module")
def default(helm_env: dict[str, str], tmp: Path) -> Rendered:
    return render(helm_env, tmp)


@pytest.fixture(scope="module")
def namespaced(helm_env: dict[str, str], tmp: Path) -> Rendered:
    return render(helm_env, tmp, NAMESPACED_VALUES, namespace="m2rl")


@pytest.fixture(scope="module")
def minimal(helm_env: dict[str, str], tmp: Path) -> Rendered:
    return render(helm_env, tmp, NO_CRDS_VALUES)


CONFIGS = {"default": None, "namespaced": NAMESPACED_VALUES, "no-crds": NO_CRDS_VALUES}


@pytest.mark.parametrize("config", CONFIGS)
def test_helm_lint_strict(helm_env, tmp, config):
    done = helm(
        helm_env,
        "lint",
        "--strict",
        str(CHART),
        "--kube-version",
        KUBE_VERSION,
        values=CONFIGS[config] or {},
        tmp=tmp,
    )
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def _validate_all(rendered: Rendered) -> list[str]:
    kinds = []
    for manifest in rendered.manifests:
        kinds.append(manifest["kind"])
        if manifest["kind"] == "ServiceMonitor":
            result = SchemaValidator(SERVICE_MONITOR_SUBSET).validate(manifest)
            assert result.violations == [], [str(v) for v in result.violations]
            continue
        for version in (KUBE_VERSION, OLDEST_KUBE):
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{manifest['kind']}/{manifest['metadata']['name']} invalid for {version}: "
                    f"{'.'.join(map(str, exc.path))}: {exc.message}"
                )
    return sorted(kinds)


def test_default_manifests_are_valid_kubernetes(default):
    assert _validate_all(default) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "Role",  # the leader-election Lease
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]


def test_namespaced_manifests_are_valid_kubernetes(namespaced):
    assert _validate_all(namespaced) == [
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_minimal_manifests_are_valid_kubernetes(minimal):
    assert _validate_all(minimal) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]


def _strip_keep(crd: dict[str, Any]) -> dict[str, Any]:
    crd = copy.deepcopy(crd)
    crd["metadata"]["annotations"].pop("helm.sh/resource-policy", None)
    return crd


def test_chart_crds_equal_the_generated_crds(default, namespaced):
    generated = {c["metadata"]["name"]: c for c in crd_manifests()}
    committed = {}
    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        committed[crd["metadata"]["name"]] = crd
    assert committed == generated
    for crd in default.of("CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # crds.keep defaults on
        assert _strip_keep(crd) == generated[crd["metadata"]["name"]]
    for crd in namespaced.of("CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in crd["metadata"]["annotations"]  # crds.keep: false
        assert crd == generated[crd["metadata"]["name"]]


def _container(rendered: Rendered) -> dict[str, Any]:
    (container,) = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_deployment_is_hardened_and_elects_a_leader(default):
    deployment = default.one("Deployment")
    spec = deployment["spec"]
    # One replica by default; a rolling update's new pod waits for the Lease as a standby.
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "RollingUpdate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    container = _container(default)
    assert container["image"] == "ghcr.io/m2rl/operator:0.1.0"
    security = container["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {"name": "health", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    assert container["command"][:4] == [
        "kopf",
        "run",
        "--standalone",
        "--liveness=http://0.0.0.0:8080/healthz",
    ]
    assert "--all-namespaces" in container["command"]
    assert container["command"][-2:] == ["-m", "m2rl_operator.handlers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["M2RL_IMAGE_TRAINER"] == env["M2RL_IMAGE_ROLLOUT"] == "ghcr.io/m2rl/trainer:0.1.0"
    assert env["M2RL_METRICS_PORT"] == "9090"
    assert (env["M2RL_LEADER_ELECTION"], env["M2RL_LEASE_NAME"], env["M2RL_HEALTH_PORT"]) == (
        "true",
        "m2rl",
        "8080",
    )
    pod_name = next(e for e in container["env"] if e["name"] == "POD_NAME")
    assert pod_name["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert "M2RL_METRICS_FROM" not in env
    assert pod["serviceAccountName"] == default.one("ServiceAccount")["metadata"]["name"]


def test_two_replicas_need_leader_election_and_metrics_peers_reach_the_operator(helm_env, tmp):
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    rendered = render(helm_env, tmp, {"operator": {"replicas": 2}, "networkPolicy": {"metricsFrom": peers}})
    assert rendered.one("Deployment")["spec"]["replicas"] == 2
    env = {e["name"]: e.get("value") for e in _container(rendered)["env"]}
    assert json.loads(env["M2RL_METRICS_FROM"]) == peers
    lease_role = next(r for r in rendered.of("Role") if r["metadata"]["name"] == "m2rl-leader-election")
    assert lease_role["metadata"]["namespace"] == "m2rl-system"
    assert _permissions(lease_role["rules"]) == {
        ("coordination.k8s.io", "leases", v) for v in ("get", "create", "patch")
    }
    values = {"operator": {"replicas": 2, "leaderElection": {"enabled": False}}}
    done = helm(helm_env, "template", "m2rl", str(CHART), values=values, tmp=tmp, check=False)
    assert done.returncode != 0 and "needs operator.leaderElection.enabled" in done.stderr
    single = render(helm_env, tmp, {"operator": {"leaderElection": {"enabled": False}}})
    assert single.one("Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not [r for r in single.of("Role") if r["metadata"]["name"].endswith("leader-election")]


def test_namespaced_deployment(namespaced):
    container = _container(namespaced)
    assert container["image"] == "registry.example.com/m2rl/operator:0.2.0-rc1"
    assert container["imagePullPolicy"] == "Always"
    assert "--namespace=research" in container["command"] and "--all-namespaces" not in container["command"]
    assert "--debug" in container["command"] and container["command"][-1] == "--peering=none"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["M2RL_IMAGE_TRAINER"] == "registry.example.com/m2rl/trainer:0.2.0"
    assert env["M2RL_IMAGE_ROLLOUT"] == "vllm/vllm-openai:v0.32.0"
    assert env["M2RL_IMAGE_VERIFIER"] == "registry.example.com/m2rl/trainer:0.2.0"
    assert env["X"] == "1"
    pod = namespaced.one("Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"


def _permissions(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


REQUIRED = {
    *(
        ("m2rl.io", r, v)
        for r in ("rlvrruns", "mergejobs", "evalsuites")
        for v in ("get", "list", "watch", "patch")
    ),
    *(("m2rl.io", f"{r}/status", "patch") for r in ("rlvrruns", "mergejobs", "evalsuites")),
    *(("", "events", v) for v in ("create", "list", "watch")),  # FailedCreate of children
    *(("batch", "jobs", v) for v in ("create", "get", "list", "watch", "patch", "delete")),
    *(
        ("apps", r, v)
        for r in ("statefulsets", "deployments")
        for v in ("create", "get", "list", "watch", "patch")
    ),
    *(("", r, v) for r in ("services", "configmaps") for v in ("create", "get", "list", "watch", "patch")),
    *(("", "persistentvolumeclaims", v) for v in ("create", "get", "list", "watch")),
    *(("networking.k8s.io", "networkpolicies", v) for v in ("create", "get", "list", "watch")),
    *(("", "pods", v) for v in ("get", "list", "watch")),
}
DISCOVERY = {
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
}


def _assert_least_privilege(permissions: set[tuple[str, str, str]]) -> None:
    assert not any("*" in p for perm in permissions for p in perm), "no wildcards"
    assert not any(r in {"secrets", "pods/exec", "nodes"} for _, r, _ in permissions)
    assert ("", "persistentvolumeclaims", "delete") not in permissions, "checkpoints outlive runs"
    assert not any(r == "pods" and v not in {"get", "list", "watch"} for _, r, v in permissions)
    # The operator patches; `update` only where the API server demands it (blockOwnerDeletion).
    assert {r for _, r, v in permissions if v == "update"} <= {
        f"{kind}/finalizers" for kind in ("rlvrruns", "mergejobs", "evalsuites")
    }


def test_cluster_rbac(default):
    roles = {r["metadata"]["name"]: r for r in default.of("ClusterRole")}
    main, discovery = roles["m2rl"], roles["m2rl-discovery"]
    assert _permissions(main["rules"]) >= REQUIRED
    assert _permissions(discovery["rules"]) == DISCOVERY
    _assert_least_privilege(_permissions(main["rules"]) | _permissions(discovery["rules"]))
    bindings = {b["metadata"]["name"]: b for b in default.of("ClusterRoleBinding")}
    for name in ("m2rl", "m2rl-discovery"):
        assert bindings[name]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": name,
        }
        assert bindings[name]["subjects"] == [
            {"kind": "ServiceAccount", "name": "m2rl", "namespace": "m2rl-system"}
        ]


def test_namespaced_rbac_has_no_cluster_permissions(namespaced):
    assert not namespaced.of("ClusterRole") and not namespaced.of("ClusterRoleBinding")
    (role,) = [r for r in namespaced.of("Role") if not r["metadata"]["name"].endswith("leader-election")]
    (binding,) = [
        b for b in namespaced.of("RoleBinding") if not b["metadata"]["name"].endswith("leader-election")
    ]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "research"
    permissions = _permissions(role["rules"])
    assert permissions >= REQUIRED
    assert not DISCOVERY & permissions
    _assert_least_privilege(permissions)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "m2rl", "namespace": "m2rl"}]


def test_metrics_service_and_service_monitor(default, namespaced, minimal):
    service = default.one("Service")
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    pod_labels = default.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert not default.of("ServiceMonitor") and not minimal.of("Service")
    monitor = namespaced.one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= namespaced.one("Service")["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]


def test_values_schema(helm_env, tmp):
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)
    for values, message in [
        ({"watch": {"scope": "everywhere"}}, "value must be one of 'cluster', 'namespace'"),
        ({"replicaCount": 2}, "additional properties 'replicaCount' not allowed"),
        ({"crds": {"enabled": "yes"}}, "got string, want boolean"),
        ({"metrics": {"port": 8080}}, "metrics.port must not be 8080"),
        (
            {"serviceMonitor": {"enabled": True}, "metrics": {"service": {"enabled": False}}},
            "serviceMonitor.enabled needs metrics.service.enabled",
        ),
    ]:
        done = helm(helm_env, "template", "m2rl", str(CHART), values=values, tmp=tmp, check=False)
        assert done.returncode != 0 and message in done.stderr, (values, done.stderr)


def test_kube_version_floor(helm_env, tmp):
    done = helm(helm_env, "template", "m2rl", str(CHART), "--kube-version", "1.28.0", check=False)
    assert done.returncode != 0
    assert "chart requires kubeVersion: >=1.29.0-0" in done.stderr


def test_notes(helm_env, tmp):
    def notes(values: dict[str, Any]) -> str:
        done = helm(
            helm_env,
            "install",
            "m2rl",
            str(CHART),
            "--dry-run=client",
            "--namespace",
            "ops",
            values=values,
            tmp=tmp,
        )
        return done.stdout.split("NOTES:", 1)[1]

    text = notes({})
    assert "It watches RLVRRuns, MergeJobs and EvalSuites in all namespaces." in text
    assert "kubectl -n ops rollout status deployment/m2rl" in text
    assert "m2rl validate -f examples/mix-vs-merge/" in text
    text = notes({"watch": {"scope": "namespace"}, "crds": {"enabled": False}})
    assert "in namespace ops only" in text and "CRDs were not installed by this release" in text


def iter_templates() -> Iterator[Path]:
    yield from sorted((CHART / "templates").rglob("*"))


def test_chart_files_exist():
    names = {p.relative_to(CHART).as_posix() for p in iter_templates()}
    assert {
        "templates/deployment.yaml",
        "templates/rbac.yaml",
        "templates/service.yaml",
        "templates/servicemonitor.yaml",
        "templates/serviceaccount.yaml",
        "templates/NOTES.txt",
        "templates/crds/rlvrruns.yaml",
        "templates/crds/mergejobs.yaml",
        "templates/crds/evalsuites.yaml",
    } <= names
    assert (CHART / "values.schema.json").exists() and (CHART / "Chart.yaml").exists()
