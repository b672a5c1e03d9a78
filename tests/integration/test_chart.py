"""The Helm chart, rendered by the real helm binary and checked against the official Kubernetes
schemas (kubernetes-validate, offline) in its default and non-default configurations."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from m2rl_operator.api.crd import crd_manifests
from m2rl_operator.api.validation import SchemaValidator
from m2rl_operator.render import render_objects
from m2rl_operator.settings import OperatorOptions
from tests.support.helm import CHART, KUBE_VERSION, Rendered, helm, render
from tests.support.helm import helm_env as make_helm_env
from tests.support.paths import REPO_ROOT
from tests.support.prometheus import pod_monitor_targets, running_pods

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


def _monitoring_kind(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A monitoring.coreos.com/v1 object of `kind` whose spec follows `spec`."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"type": "string", "enum": ["monitoring.coreos.com/v1"]},
            "kind": {"type": "string", "enum": [kind]},
            "metadata": {"type": "object"},
            "spec": spec,
        },
    }


def _scraped_by(endpoints: str, **more: Any) -> dict[str, Any]:
    """A ServiceMonitor's or PodMonitor's spec: selectors and the `endpoints` list (`more`: extra
    endpoint fields)."""
    return {
        "type": "object",
        "required": ["selector"],
        "properties": {
            "selector": {
                "type": "object",
                "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
            },
            "namespaceSelector": {
                "type": "object",
                "properties": {
                    "any": {"type": "boolean"},
                    "matchNames": {"type": "array", "items": {"type": "string"}},
                },
            },
            endpoints: {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "interval": _DURATION,
                        "scrapeTimeout": _DURATION,
                        **more,
                    },
                },
            },
        },
    }


SERVICE_MONITOR_SUBSET = _monitoring_kind(
    "ServiceMonitor", _scraped_by("endpoints", honorLabels={"type": "boolean"})
)
# The same for the PodMonitors and the PrometheusRule (fields and patterns as in prometheus-operator
# v0.93's CRDs, example/prometheus-operator-crd/monitoring.coreos.com_{podmonitors,prometheusrules}.yaml).
_RELABELING = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["replace", "keep", "drop", "labelmap"]},
        "sourceLabels": {"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
        "targetLabel": {"type": "string"},
        "replacement": {"type": "string"},
        "regex": {"type": "string"},
    },
}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
POD_MONITOR_SUBSET = _monitoring_kind(
    "PodMonitor",
    _scraped_by("podMetricsEndpoints", relabelings={"type": "array", "items": _RELABELING}),
)
PROMETHEUS_RULE_SUBSET = _monitoring_kind(
    "PrometheusRule",
    {
        "type": "object",
        "properties": {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["expr"],
                                "properties": {
                                    "alert": {"type": "string"},
                                    "expr": {"type": "string"},
                                    "for": _DURATION,
                                    "labels": _STRING_MAP,
                                    "annotations": _STRING_MAP,
                                },
                            },
                        },
                    },
                },
            }
        },
    },
)
SUBSETS = {
    "ServiceMonitor": SERVICE_MONITOR_SUBSET,
    "PodMonitor": POD_MONITOR_SUBSET,
    "PrometheusRule": PROMETHEUS_RULE_SUBSET,
}
# Everything the chart can add for monitoring, switched on (cluster scope).
MONITORING_VALUES: dict[str, Any] = {
    "serviceMonitor": {"enabled": True},
    "podMonitors": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "kube-prometheus-stack"},
        "alertLabels": {"team": "ml-platform"},
    },
    "grafanaDashboard": {
        "enabled": True,
        "namespace": "monitoring",
        "annotations": {"grafana_folder": "M2RL"},
    },
}


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm with its own config/cache dirs and no kubeconfig: everything offline and hermetic."""
    return make_helm_env(tmp_path_factory.mktemp("helm-home"))


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


@pytest.fixture(scope="module")
def monitoring(helm_env: dict[str, str], tmp: Path) -> Rendered:
    return render(helm_env, tmp, MONITORING_VALUES)


CONFIGS = {
    "default": None,
    "namespaced": NAMESPACED_VALUES,
    "no-crds": NO_CRDS_VALUES,
    "monitoring": MONITORING_VALUES,
}


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
        if manifest["kind"] in SUBSETS:
            result = SchemaValidator(SUBSETS[manifest["kind"]]).validate(manifest)
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
        {
            "port": "metrics",
            "path": "/metrics",
            "interval": "15s",
            "scrapeTimeout": "10s",
            "honorLabels": True,
        }
    ]


def test_monitoring_manifests_are_valid(monitoring):
    assert _validate_all(monitoring) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "ConfigMap",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "PodMonitor",
        "PodMonitor",
        "PodMonitor",
        "PrometheusRule",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    for kind in ("PodMonitor", "PrometheusRule"):
        for manifest in monitoring.of(kind):
            assert manifest["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_pod_monitors_scrape_the_pods_the_operator_creates(monitoring, helm_env, tmp):
    """Each PodMonitor's selector and port, applied as prometheus-operator does to the pods of a real
    rendered run (two trainer nodes, two rollout servers), yields exactly the intended targets with
    the job and run labels the alerts and the dashboard select on."""
    run = yaml.safe_load((REPO_ROOT / "examples" / "expert-run.yaml").read_text())
    run["spec"]["trainer"]["nodes"] = 2
    children = render_objects([run], OperatorOptions(metrics_port=None), namespace="research")
    assert children.problems == []
    pods = list(running_pods(children.manifests, "research"))
    targets = {
        m["metadata"]["name"]: [t for pod in pods for t in pod_monitor_targets(m, pod)]
        for m in monitoring.of("PodMonitor")
    }
    assert targets == {
        "m2rl-trainer": [  # rank 0 only: the other ranks serve no metrics
            {
                "namespace": "research",
                "container": "trainer",
                "pod": "math-expert-trainer-0-x",
                "job": "m2rl-trainer",
                "endpoint": "metrics",
            }
        ],
        "m2rl-verifier": [
            {
                "namespace": "research",
                "container": "verifier",
                "pod": "math-expert-verifier-0",
                "job": "m2rl-verifier",
                "endpoint": "http",
                "run": "math-expert",
            }
        ],
        "m2rl-rollout": [
            {
                "namespace": "research",
                "container": "vllm",
                "pod": f"math-expert-rollout-{i}",
                "job": "m2rl-rollout",
                "endpoint": "http",
                "run": "math-expert",
            }
            for i in range(2)
        ],
    }
    # The alerts select on those jobs.
    rules = monitoring.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    jobs = {job for rule in rules for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert jobs and jobs <= {t["job"] for found in targets.values() for t in found}
    # Namespace scope: only the watched namespace's pods.
    scoped = render(
        helm_env, tmp, {**MONITORING_VALUES, "watch": {"scope": "namespace", "namespace": "research"}}
    )
    for monitor in scoped.of("PodMonitor"):
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["research"]}
        elsewhere = [{**pod, "metadata": {**pod["metadata"], "namespace": "other"}} for pod in pods]
        assert any(pod_monitor_targets(monitor, pod) for pod in pods)
        assert not any(pod_monitor_targets(monitor, pod) for pod in elsewhere)


def _alerts(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rendered.one("PrometheusRule")["spec"]["groups"][0]["rules"]}


def test_monitoring_toggles_and_values(monitoring, helm_env, tmp):
    assert sorted(_alerts(monitoring)) == [
        "M2RLRolloutServerDown",
        "M2RLRunFailed",
        "M2RLSkippedSteps",
        "M2RLStepStalled",
        "M2RLVerifierErrors",
        "M2RLVerifierTimeouts",
    ]
    assert all(rule["labels"]["team"] == "ml-platform" for rule in _alerts(monitoring).values())
    changed = render(
        helm_env,
        tmp,
        {
            **MONITORING_VALUES,
            "podMonitors": {"enabled": True, "rollout": False},
            "prometheusRule": {
                "enabled": True,
                "stepStalled": {"enabled": False, "severity": "warning", "afterSeconds": 60},
                "verifierErrors": {
                    "enabled": True,
                    "severity": "page",
                    "ratio": 0.2,
                    "window": "5m",
                    "for": "1m",
                },
            },
            "grafanaDashboard": {"enabled": False},
        },
    )
    assert sorted(m["metadata"]["name"] for m in changed.of("PodMonitor")) == [
        "m2rl-trainer",
        "m2rl-verifier",
    ]
    alerts = _alerts(changed)
    assert "M2RLStepStalled" not in alerts and len(alerts) == 5
    errors = alerts["M2RLVerifierErrors"]
    assert errors["for"] == "1m" and errors["labels"] == {"severity": "page"}
    assert errors["expr"].count("> 0.2") == 2 and errors["expr"].count("[5m]") == 4
    assert not changed.of("ConfigMap")
    off = render(helm_env, tmp, {"podMonitors": {"enabled": False}, "prometheusRule": {"enabled": False}})
    assert not off.of("PodMonitor") and not off.of("PrometheusRule")


def test_dashboard_configmap(monitoring):
    (config_map,) = monitoring.of("ConfigMap")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"  # the Grafana sidecar's default
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "M2RL"}
    (name,) = config_map["data"]
    assert json.loads(config_map["data"][name]) == json.loads((CHART / "dashboards" / name).read_text())


def test_dashboard_is_well_formed():
    """Grafana's dashboard model: unique ids, panels inside the 24-column grid without overlaps,
    every query on the datasource variable with unique refIds, only defined variables used. That
    each query is valid PromQL with data is tests/integration/monitoring/test_scraped_run.py."""
    dashboard = json.loads((CHART / "dashboards" / "m2rl-training.json").read_text())
    assert dashboard["uid"] == "m2rl-training" and dashboard["title"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    assert defined == {"datasource", "namespace", "run"}
    queries = [p for p in panels if p["type"] != "row"]
    assert queries
    for panel in queries:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= defined, (panel["title"], used - defined)


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
        ({"prometheusRule": {"verifierErrors": {"ratio": 2}}}, "maximum: got 2, want 1"),
        ({"podMonitors": {"interval": "30 seconds"}}, "'30 seconds' does not match pattern"),
        ({"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}, "got number, want string"),
        ({"prometheusRule": {"stepStalled": {"afterSeconds": 5}}}, "minimum: got 5, want 60"),
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
    assert "Monitoring:" not in text
    text = notes({"podMonitors": {"enabled": True}, "grafanaDashboard": {"enabled": True}})
    assert (
        "Monitoring: PodMonitors (jobs m2rl-trainer, m2rl-verifier, m2rl-rollout); Grafana dashboard"
        ' "M2RL training" (ConfigMap m2rl-dashboard in ops);' in text
    )


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
        "templates/podmonitors.yaml",
        "templates/prometheusrule.yaml",
        "templates/dashboard-configmap.yaml",
        "templates/NOTES.txt",
        "templates/crds/rlvrruns.yaml",
        "templates/crds/mergejobs.yaml",
        "templates/crds/evalsuites.yaml",
    } <= names
    assert (CHART / "values.schema.json").exists() and (CHART / "Chart.yaml").exists()
