"""The chart's PrometheusRule in the real Prometheus' promtool (Debian's prometheus package): the
rules load (`promtool check rules`), and alerts_test.yaml fires each alert on synthetic failing
series, with its labels and rendered annotations, and leaves it silent on healthy ones
(`promtool test rules`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm import helm_env, render
from tests.support.paths import tool

HERE = Path(__file__).parent


def write_rules(tmp: Path, values: dict[str, Any]) -> tuple[Path, list[dict[str, Any]]]:
    """Render the chart's PrometheusRule with `values` and write its spec as a Prometheus rules file."""
    rendered = render(helm_env(tmp / "helm"), tmp, {"prometheusRule": {"enabled": True, **values}})
    spec = rendered.one("PrometheusRule")["spec"]
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, [rule for group in spec["groups"] for rule in group["rules"]]


def promtool_test(tmp: Path, rules: Path) -> subprocess.CompletedProcess[str]:
    tests = yaml.safe_load((HERE / "alerts_test.yaml").read_text())
    tests["rule_files"] = [str(rules)]
    path = tmp / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(tests))
    return subprocess.run(
        [str(tool("promtool")), "test", "rules", str(path)], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def default_rules(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    return write_rules(tmp_path_factory.mktemp("rules"), {})


def test_rules_load_in_promtool(default_rules):
    path, rules = default_rules
    done = subprocess.run(
        [str(tool("promtool")), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout
    assert len(rules) == 6


def test_each_alert_fires_and_stays_silent(default_rules, tmp_path):
    path, rules = default_rules
    tests = yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in rules:
        fired = [c for c in cases if c["alertname"] == rule["alert"] and c["exp_alerts"]]
        silent = [c for c in cases if c["alertname"] == rule["alert"] and not c["exp_alerts"]]
        assert fired and silent, f"{rule['alert']} needs a firing and a silent case in alerts_test.yaml"
    done = promtool_test(tmp_path, path)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def test_rule_tests_fail_when_thresholds_change(tmp_path):
    """The values reach the rules, and the unit tests notice: with a higher error ratio and a longer
    stall the same synthetic series no longer fire those two alerts (and only those)."""
    path, _ = write_rules(
        tmp_path,
        {
            "verifierErrors": {"ratio": 0.2},
            "stepStalled": {"afterSeconds": 7200},
        },
    )
    done = promtool_test(tmp_path, path)
    assert done.returncode != 0
    failed = set(re.findall(r"alertname: (\w+), time:", done.stdout + done.stderr))
    assert failed == {"M2RLVerifierErrors", "M2RLStepStalled"}, done.stdout + done.stderr
