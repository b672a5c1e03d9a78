"""End-to-end on a real cluster: install the chart, apply the tiny CPU run, watch the operator act.

Marked `cluster`: skipped (with the reason) unless a kubeconfig is configured. Needs the project's
helm and kubectl (scripts/setup.sh) and the operator image the chart names to be pullable.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO_ROOT, tool

KUBECONFIG = Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
NAMESPACE = "m2rl-e2e"
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not KUBECONFIG.exists(), reason=f"no kubeconfig at {KUBECONFIG}: needs a real cluster"
    ),
]


def kubectl(*args: str, stdin: str | None = None) -> str:
    return subprocess.run(
        [str(tool("kubectl")), "-n", NAMESPACE, *args],
        check=True,
        capture_output=True,
        text=True,
        input=stdin,
    ).stdout


def wait_for(check: Any, timeout_s: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(5)
    raise AssertionError(f"not reached within {timeout_s} s")


def test_chart_installs_and_the_operator_reconciles_the_tiny_run() -> None:
    helm = str(tool("helm"))
    subprocess.run(
        [helm, "upgrade", "--install", "m2rl", str(REPO_ROOT / "charts" / "m2rl"), "-n", NAMESPACE,
         "--create-namespace", "--set", f"watch.scope=namespace,watch.namespace={NAMESPACE}", "--wait"],
        check=True,
    )  # fmt: skip
    try:
        run = yaml.safe_load(
            (REPO_ROOT / "tests" / "unit" / "operator" / "cases" / "tiny-cpu.yaml").read_text()
        )
        run["metadata"].pop("namespace")
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump(run))
        job = wait_for(lambda: kubectl("get", "jobs", "-l", "m2rl.io/rlvrrun=tiny", "-o", "name").strip())
        assert job == "job.batch/tiny-trainer"
        run = json.loads(kubectl("get", "rlvrrun", "tiny", "-o", "json"))
        owner = json.loads(kubectl("get", "job", "tiny-trainer", "-o", "json"))["metadata"][
            "ownerReferences"
        ][0]
        assert owner["uid"] == run["metadata"]["uid"]
        wait_for(
            lambda: json.loads(kubectl("get", "rlvrrun", "tiny", "-o", "json")).get("status", {}).get("phase")
        )
    finally:
        subprocess.run([str(tool("kubectl")), "delete", "namespace", NAMESPACE, "--wait=false"], check=False)
