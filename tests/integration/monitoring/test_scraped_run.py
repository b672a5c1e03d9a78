"""Observability against real data: a short real GRPO run (the tiny SFT model, colocated generation)
that scores through the real verifier service, both scraped by a real Prometheus whose targets carry
the labels the chart's PodMonitors give the run's pods on a cluster. Every query of the Grafana
dashboard must be valid PromQL and return data; every metric an alert or the dashboard names must
be one the components expose; the exposed names pass `promtool check metrics` (Prometheus' own
naming lint)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

from m2rl_operator import metrics as operator_metrics
from m2rl_operator.render import render_objects
from m2rl_operator.settings import OperatorOptions
from m2rl_trainer.train.metrics import MetricsSink, read_jsonl
from m2rl_trainer.utils.processes import free_port, start_logged_process, stop_process_group, wait_http_ok
from tests.integration.train.conftest import write_config
from tests.support.helm import CHART, Rendered, helm_env, render
from tests.support.paths import REPO_ROOT, tool
from tests.support.prometheus import PrometheusServer, pod_monitor_targets, running_pods

NAMESPACE, RUN = "research", "math-expert"  # examples/expert-run.yaml, rendered into `research`
STEPS = 12
# Grafana's built-in variables and the dashboard's own, as a user would pick them.
VARIABLES = {"$__rate_interval": "1m", "$namespace": NAMESPACE, "$run": RUN}


@dataclass
class ScrapedRun:
    prometheus: PrometheusServer
    at: float  # Unix time of the last scrape of the trainer: queries are evaluated there
    records: list[dict[str, Any]]  # the trainer's metrics.jsonl
    verifier_text: str  # the verifier's /metrics after the run
    chart: Rendered  # the chart with PodMonitors, PrometheusRule and dashboard on


def _target_labels(chart: Rendered) -> dict[str, dict[str, str]]:
    """Labels of the trainer's rank 0 and the verifier under the chart's PodMonitors, as on a cluster."""
    run = yaml.safe_load((REPO_ROOT / "examples" / "expert-run.yaml").read_text())
    pods = list(
        running_pods(
            render_objects([run], OperatorOptions(metrics_port=None), NAMESPACE).manifests, NAMESPACE
        )
    )
    found: dict[str, dict[str, str]] = {}
    for monitor in chart.of("PodMonitor"):
        for pod in pods:
            for labels in pod_monitor_targets(monitor, pod):
                found[labels["job"]] = labels
    return found


@pytest.fixture(scope="module")
def scraped_run(
    tmp_path_factory: pytest.TempPathFactory, max3_sft_model: Path, max3_data: tuple[Path, Path]
) -> Iterator[ScrapedRun]:
    tmp = tmp_path_factory.mktemp("scraped-run")
    chart = render(
        helm_env(tmp / "helm"),
        tmp,
        {
            "podMonitors": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
    )
    labels = _target_labels(chart)
    verifier_port, trainer_port = free_port(), free_port()
    log = tmp / "verifier.log"
    service = start_logged_process(
        [
            sys.executable,
            "-m",
            "m2rl_trainer.rewards.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(verifier_port),
        ],
        log,
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{verifier_port}/health", service, log, 120.0, "verifier service")
        targets = {
            f"127.0.0.1:{trainer_port}": labels["m2rl-trainer"],
            f"127.0.0.1:{verifier_port}": labels["m2rl-verifier"],
        }
        # 100 ms scrapes: the run's steps take a few seconds in all.
        with PrometheusServer(tmp / "prometheus", targets, interval_s=0.1) as prometheus:
            config = write_config(
                tmp / "c.yaml", max3_sft_model, max3_data[0], tmp / "out",
                run_name=RUN,
                algorithm={"steps": STEPS, "kl_coef": 0.01},  # a KL term: the dashboard plots it
                checkpoint={"every_steps": 0, "keep": 1},
                rewards={"service_url": f"http://127.0.0.1:{verifier_port}"},
                # the endpoint waits for the scrape after the last step (as a pod would)
                metrics={"prometheus_port": trainer_port, "final_scrape_timeout_s": 30.0},
            )  # fmt: skip
            done = subprocess.run(
                [sys.executable, "-m", "m2rl_trainer.cli", "--config", str(config)],
                capture_output=True, text=True, timeout=600,
                # One intra-op thread: on busy shared cores torch's spinning thread pool made the
                # tiny model's steps ~30x slower here (10 s instead of 0.3 s).
                env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-4000:]
            with urllib.request.urlopen(f"http://127.0.0.1:{verifier_port}/metrics", timeout=10) as response:
                verifier_text = response.read().decode()
            # The raw samples of the trainer's step gauge (a range selector returns them all).
            (series,) = prometheus.query('m2rl_train_step{job="m2rl-trainer"}[10m]')
            yield ScrapedRun(
                prometheus=prometheus,
                at=max(float(t) for t, _ in series["values"]),
                records=read_jsonl(tmp / "out" / "metrics.jsonl"),
                verifier_text=verifier_text,
                chart=chart,
            )
    finally:
        stop_process_group(service)


def test_trainer_scores_through_the_verifier_service(scraped_run: ScrapedRun) -> None:
    """With rewards.service_url (what the operator sets in pods) the trainer scores through the
    sandboxed service; the service's own metrics count every completion."""
    records = scraped_run.records
    scored = sum(
        float(line.rsplit(" ", 1)[1])
        for line in scraped_run.verifier_text.splitlines()
        if line.startswith("m2rl_verifier_samples_total{") and 'verifier="math"' in line
    )
    assert scored == sum(r["completions"] for r in records) == STEPS * 4 * 4  # steps x prompts x group
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in records)


def _dashboard() -> dict[str, Any]:
    return json.loads((CHART / "dashboards" / "m2rl-training.json").read_text())


def _substitute(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown variable in {expr!r}"
    return expr


def test_every_dashboard_query_returns_data(scraped_run: ScrapedRun) -> None:
    prometheus, at = scraped_run.prometheus, scraped_run.at
    dashboard = _dashboard()
    # Variables: label_values(SELECTOR, LABEL) lists the run's namespace and name.
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        selector, label = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"]["query"]).groups()
        values = {
            r["metric"][label] for r in prometheus.query(f"count by ({label}) ({_substitute(selector)})", at)
        }
        assert VARIABLES[f"${variable['name']}"] in values, (variable["name"], values)
    checked = 0
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = _substitute(target["expr"])
            result = prometheus.query(expr, at)  # invalid PromQL fails here with the server's message
            values = [float(r["value"][1]) for r in result]
            assert any(math.isfinite(v) for v in values), f"{panel['title']}: no data for {expr}: {result}"
            checked += 1
    assert checked >= 20


def test_per_domain_panels_show_the_runs_numbers(scraped_run: ScrapedRun) -> None:
    """The dashboard's numbers are the trainer's: the last step's per-domain accuracy and the step
    count, read back through Prometheus."""
    prometheus, at, last = scraped_run.prometheus, scraped_run.at, scraped_run.records[-1]
    (accuracy,) = prometheus.query(
        _substitute('m2rl_train_domain_accuracy_ratio{namespace=~"$namespace", run=~"$run"}'), at
    )
    assert accuracy["metric"]["domain"] == "math"
    assert float(accuracy["value"][1]) == pytest.approx(last["per_domain"]["math"]["accuracy"])
    (steps,) = prometheus.query(
        _substitute('max by (namespace, run) (m2rl_train_step{namespace=~"$namespace", run=~"$run"})'), at
    )
    assert float(steps["value"][1]) == STEPS
    (completions,) = prometheus.query(f'm2rl_train_completions_total{{run="{RUN}"}}', at)
    assert float(completions["value"][1]) == sum(r["completions"] for r in scraped_run.records)


def _operator_names() -> set[str]:
    """Metric names the operator exposes (one resource's phase set, then removed again)."""
    operator_metrics.set_phase("RLVRRun", "ns", "names-probe", "Failed")
    try:
        text = prometheus_client.generate_latest(operator_metrics.REGISTRY).decode()
    finally:
        operator_metrics.set_phase("RLVRRun", "ns", "names-probe", None)
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_alerts_and_dashboard_name_only_exposed_metrics(scraped_run: ScrapedRun) -> None:
    """No alert or panel can silently read a metric nobody exposes (a rename that missed one)."""
    exposed = scraped_run.prometheus.metric_names() | _operator_names()
    rules = [r["expr"] for r in scraped_run.chart.one("PrometheusRule")["spec"]["groups"][0]["rules"]]
    panels = [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]
    variables = [v["query"]["query"] for v in _dashboard()["templating"]["list"] if v["type"] == "query"]
    named = {name for expr in rules + panels + variables for name in re.findall(r"\bm2rl_\w+", expr)}
    assert len(named) >= 20
    assert named <= exposed, sorted(named - exposed)
    assert "up" in exposed  # M2RLRolloutServerDown's metric: Prometheus' own, per target


def test_exposed_names_follow_prometheus_conventions(scraped_run: ScrapedRun, tmp_path: Path) -> None:
    """`promtool check metrics` (Prometheus' lint: `_total` counters, base units, no abbreviated
    units such as `_s`, help texts) on what the trainer exposes for the run's real records, the
    verifier's endpoint after the run, and the operator's registry."""
    sink = MetricsSink(tmp_path / "m.jsonl", None, RUN)
    for record in scraped_run.records:
        sink.log(record)
    sink.checkpoint_written(STEPS)
    operator_metrics.set_phase("RLVRRun", "ns", "lint-probe", "Running")
    try:
        operator_text = prometheus_client.generate_latest(operator_metrics.REGISTRY).decode()
    finally:
        operator_metrics.set_phase("RLVRRun", "ns", "lint-probe", None)
    texts = {
        "trainer": prometheus_client.generate_latest(sink.registry).decode(),
        "verifier": scraped_run.verifier_text,
        "operator": operator_text,
    }
    for component, text in texts.items():
        done = subprocess.run(
            [str(tool("promtool")), "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{component}:\n{done.stdout}{done.stderr}"
    # The lint itself catches the names this replaced.
    bad = "# HELP m2rl_train_time_step_s x\n# TYPE m2rl_train_time_step_s gauge\nm2rl_train_time_step_s 1\n"
    done = subprocess.run(
        [str(tool("promtool")), "check", "metrics"], input=bad, capture_output=True, text=True
    )
    assert done.returncode != 0 and "abbreviated units" in done.stdout + done.stderr
