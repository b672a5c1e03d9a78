"""`m2rl render -f FILE`: manifests as YAML on stdout, problems on stderr with exit code 1."""

from __future__ import annotations

import pytest
import yaml

from m2rl_operator.cli import main
from tests.support.paths import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"


def test_render_the_mix_vs_merge_pipeline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(EXAMPLES / "mix-vs-merge")]) == 0
    out, err = capsys.readouterr()
    manifests = list(yaml.safe_load_all(out))
    assert err == ""
    jobs = sorted(m["metadata"]["name"] for m in manifests if m["kind"] == "Job")
    owners = {m["metadata"]["labels"]["app.kubernetes.io/instance"] for m in manifests if m["kind"] == "Job"}
    assert len(jobs) == len(owners)  # one Job per RLVRRun, MergeJob and EvalSuite
    assert all(m["metadata"]["namespace"] for m in manifests)


def test_render_reports_references_missing_from_the_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(EXAMPLES / "merge.yaml")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: MergeJob/experts-ties: references RLVRRun/math-expert, which is not in the input\n"


def test_render_resolves_references_across_files(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "render",
        "-f",
        str(EXAMPLES / "expert-run.yaml"),
        "-f",
        str(EXAMPLES / "merge.yaml"),
        "-n",
        "lab",
    ]
    assert main(args) == 0
    manifests = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [f"{m['kind']}/{m['metadata']['name']}" for m in manifests][-2:] == [
        "ConfigMap/experts-ties-config",
        "Job/experts-ties-merge",
    ]
    assert {m["metadata"]["namespace"] for m in manifests} == {"lab"}
