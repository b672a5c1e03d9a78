"""Process-tree scanning for the sandbox tests: what is running, whose child it is."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from m2rl_trainer.rewards.sandbox import SandboxUnavailable, find_bwrap


def require_bwrap() -> Path:
    """bwrap, or a failure (never a skip) that says how to install it."""
    import pytest

    try:
        return find_bwrap()
    except SandboxUnavailable as exc:
        pytest.fail(f"{exc}. The sandbox tests need it: run `bash scripts/setup.sh`.")


def _parents() -> dict[int, int]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:  # exited while we looked
                continue
            table[int(name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return table


def children(pid: int) -> list[int]:
    """The direct children of `pid` in the host's process tree."""
    return sorted(child for child, parent in _parents().items() if parent == pid)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` in the host's process tree."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def processes_with(marker: str) -> list[int]:
    """PIDs (anywhere on the host) whose command line contains `marker`."""
    hits = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if marker.encode() in cmdline:
                hits.append(int(name))
    return hits


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
