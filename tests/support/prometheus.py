"""A real Prometheus server (Debian's package, unpacked by scripts/setup.sh) for tests, and the
target labels prometheus-operator gives a pod under a PodMonitor (so a test Prometheus can label
its static targets as the chart's PodMonitors would on a cluster)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from m2rl_trainer.utils.processes import (
    free_port,
    start_logged_process,
    stop_process_group,
    tail,
    wait_http_ok,
)
from tests.support.paths import tool


class PrometheusServer:
    """Prometheus scraping `targets` every `interval_s`; query with `query()`.

    targets: "host:port" strings, or {"host:port": {label: value}} to give each target the labels
    service discovery would (`job` included: a target's own `job` label wins over the job name).
    """

    def __init__(
        self, workdir: Path, targets: list[str] | dict[str, dict[str, str]], interval_s: float = 1.0
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(
            json.dumps(  # YAML is a superset of JSON
                {
                    "global": {
                        "scrape_interval": f"{round(interval_s * 1000)}ms",
                        "evaluation_interval": "1s",
                    },
                    "scrape_configs": [{"job_name": "test", "static_configs": _static_configs(targets)}],
                }
            )
        )
        self.process = start_logged_process(
            [
                str(tool("prometheus")),
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.log_path,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 60.0) -> PrometheusServer:
        wait_http_ok(f"{self.url}/-/ready", self.process, self.log_path, timeout_s, "Prometheus")
        return self

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query through the HTTP API (at Unix time `at`, default now); returns the result
        (a vector, or a matrix for a range selector). Invalid PromQL fails with the server's message."""
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"Prometheus refused {promql!r}: {error.read().decode()}") from error
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def metric_names(self) -> set[str]:
        """Every metric name Prometheus holds."""
        with urllib.request.urlopen(f"{self.url}/api/v1/label/__name__/values", timeout=10) as response:
            return set(json.load(response)["data"])

    def wait_for(self, promql: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Query until the result is non-empty (a scrape has happened)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(
            f"Prometheus returned nothing for {promql!r} in {timeout_s} s:\n{tail(self.log_path)}"
        )

    def stop(self) -> None:
        stop_process_group(self.process)

    def __enter__(self) -> PrometheusServer:
        return self.wait_ready()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _static_configs(targets: list[str] | dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    if isinstance(targets, list):
        return [{"targets": targets}]
    return [{"targets": [address], "labels": labels} for address, labels in targets.items()]


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def running_pods(manifests: list[dict[str, Any]], namespace: str) -> Iterator[dict[str, Any]]:
    """The pods of the Jobs, StatefulSets and Deployments among `manifests`, as their controllers
    create them: names `<job>-<index>-x`, `<statefulset>-<ordinal>`, `<deployment>-<n>`, and the
    Job controller's batch.kubernetes.io/job-completion-index label on each Indexed Job pod
    (kubernetes pkg/controller/job/indexed_job_utils.go, addCompletionIndexLabel, 1.28+)."""
    for workload in manifests:
        kind, name = workload["kind"], workload["metadata"]["name"]
        if kind not in {"Job", "StatefulSet", "Deployment"}:
            continue
        template = workload["spec"]["template"]
        count = workload["spec"].get("completions" if kind == "Job" else "replicas", 1)
        for index in range(count):
            labels = dict(template["metadata"]["labels"])
            if kind == "Job":
                labels["batch.kubernetes.io/job-completion-index"] = str(index)
            pod_name = f"{name}-{index}-x" if kind == "Job" else f"{name}-{index}"
            yield {
                "metadata": {"name": pod_name, "namespace": namespace, "labels": labels},
                "spec": template["spec"],
            }


def pod_monitor_targets(monitor: dict[str, Any], pod: dict[str, Any]) -> list[dict[str, str]]:
    """Target labels of `pod` (a running Pod manifest) under PodMonitor `monitor`: one dict per
    matching endpoint, [] when the monitor does not select the pod.

    Follows prometheus-operator's generatePodMonitorConfig (pkg/prometheus/promcfg.go, v0.93) for
    the features the chart uses: namespaceSelector (any / matchNames), a `keep` per
    selector.matchLabels entry, a `keep` on the endpoint's port name, the namespace / container /
    pod labels, job `<namespace>/<monitor>`, endpoint `<port>`, then the endpoint's relabelings
    (Prometheus' `replace` semantics: source values joined by `;`, fully anchored regex, an empty
    result deletes the label). Anything else in the monitor is refused, so the chart cannot grow a
    feature this stand-in silently ignores.
    """
    spec = monitor["spec"]
    known = {"selector", "namespaceSelector", "podMetricsEndpoints"}
    assert set(spec) <= known, f"not modelled: {sorted(set(spec) - known)}"
    namespace = pod["metadata"]["namespace"]
    selector = spec.get("namespaceSelector", {})
    if not selector.get("any") and namespace not in selector.get(
        "matchNames", [monitor["metadata"]["namespace"]]
    ):
        return []
    assert set(spec["selector"]) <= {"matchLabels"}, "matchExpressions not modelled"
    labels = pod["metadata"].get("labels", {})
    if any(labels.get(k) != v for k, v in spec["selector"].get("matchLabels", {}).items()):
        return []
    found = []
    for endpoint in spec["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}, endpoint
        for container in pod["spec"]["containers"]:
            for port in container.get("ports", []):
                if port.get("name") != endpoint["port"]:
                    continue
                target = {
                    **{f"__meta_kubernetes_pod_label_{_sanitize(k)}": v for k, v in labels.items()},
                    "__meta_kubernetes_namespace": namespace,
                    "__meta_kubernetes_pod_name": pod["metadata"]["name"],
                    "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port["name"],
                    "namespace": namespace,
                    "container": container["name"],
                    "pod": pod["metadata"]["name"],
                    "job": f"{monitor['metadata']['namespace']}/{monitor['metadata']['name']}",
                    "endpoint": endpoint["port"],
                }
                for rule in endpoint.get("relabelings", []):
                    _replace(target, rule)
                found.append({k: v for k, v in target.items() if not k.startswith("__")})
    return found


def _replace(target: dict[str, str], rule: dict[str, Any]) -> None:
    """Prometheus' relabel `replace` action (model/relabel/relabel.go)."""
    assert rule.get("action", "replace").lower() == "replace", f"not modelled: {rule}"
    value = rule.get("separator", ";").join(target.get(name, "") for name in rule.get("sourceLabels", []))
    match = re.fullmatch(rule.get("regex", "(.*)"), value)
    if match is None:
        return
    replacement = re.sub(r"\$\{?(\w+)\}?", r"\\g<\1>", rule.get("replacement", "$1"))
    result = match.expand(replacement)
    if result:
        target[rule["targetLabel"]] = result
    else:
        target.pop(rule["targetLabel"], None)
