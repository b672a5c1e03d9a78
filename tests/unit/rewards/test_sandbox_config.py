"""Sandbox set-up as pure functions: where bwrap comes from, which flags confine the programs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from m2rl_trainer.rewards import sandbox
from m2rl_trainer.rewards.sandbox import SandboxConfig, SandboxUnavailable, bwrap_argv, find_bwrap


def fake_binary(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_bwrap_resolution_order(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    monkeypatch.setattr(sandbox, "repo_root", lambda: repo)
    on_path = fake_binary(tmp_path / "path" / "bwrap")
    monkeypatch.setenv("PATH", str(on_path.parent))
    monkeypatch.delenv("M2RL_BWRAP", raising=False)
    assert find_bwrap() == on_path
    from_env = fake_binary(tmp_path / "env" / "bwrap")
    monkeypatch.setenv("M2RL_BWRAP", str(from_env))
    assert find_bwrap() == from_env
    in_repo = fake_binary(repo / ".tools" / "bin" / "bwrap")
    assert find_bwrap() == in_repo


def test_missing_bwrap_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "repo_root", lambda: tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("M2RL_BWRAP", raising=False)
    with pytest.raises(SandboxUnavailable, match=r"run `bash scripts/setup\.sh`"):
        find_bwrap()


def test_the_repo_checkout_provides_bwrap():
    """This checkout's tool (installed by scripts/setup.sh) is the one found first."""
    root = sandbox.repo_root()
    assert root is not None
    path = root / ".tools" / "bin" / "bwrap"
    assert path.exists(), f"{path} is missing: run `bash scripts/setup.sh`"
    assert find_bwrap() == path


def test_bwrap_argv_confines_the_runner():
    argv = bwrap_argv(SandboxConfig(tmpfs_mb=32), Path("/opt/bwrap"), Path("/usr/bin/python3"))
    joined = " ".join(argv[:-2])  # then the runner's source and its argument
    for flag in (
        "--unshare-all",
        "--unshare-user",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop ALL",
        "--ro-bind /usr /usr",
        "--proc /proc",
        "--dev /dev",
        "--remount-ro /dev",
        f"--size {32 * 1024 * 1024} --tmpfs /sandbox",
        "--remount-ro /",
        "--clearenv",
    ):
        assert flag in joined, flag
    # nothing of the host but /usr (and the merged-/usr symlinks) is bound
    binds = [argv[i + 1] for i, a in enumerate(argv) if a in ("--ro-bind", "--bind")]
    assert all(b.startswith("/usr") or b in ("/bin", "/lib", "/lib64", "/sbin") for b in binds), binds
    # the isolated interpreter runs the bootstrap, then its priority and the three module sources
    command = argv[argv.index("/usr/bin/python3") :]
    assert command[1:6] == ["-I", "-S", "-B", "-c", sandbox.BOOTSTRAP]
    assert (
        "def strict_equal" in command[7]
        and "def run_check" in command[8]
        and "def fork_server_loop" in command[9]
    )
    assert command[6] == "normal"  # the library's default; the service runs programs at "low" priority
    low = bwrap_argv(SandboxConfig(low_priority=True), Path("/b"), Path("/usr/bin/python3"))
    assert low[low.index("/usr/bin/python3") + 6] == "low"


def test_sandbox_python_is_under_usr(monkeypatch):
    monkeypatch.delenv("M2RL_SANDBOX_PYTHON", raising=False)
    python = sandbox.find_sandbox_python()
    assert str(python).startswith("/usr/") and os.access(python, os.X_OK)
