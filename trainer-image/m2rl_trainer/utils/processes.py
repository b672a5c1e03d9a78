"""Start, wait for and stop long-running child processes (vLLM servers, Prometheus, workers).

Each child runs in its own session (process group), so stopping it also stops whatever it
forked; its output goes to a log file that callers can show when something fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_logged_process(
    command: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `command` in a new session with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the child's whole process group, then SIGKILL what is left after `grace_s`."""
    if process.poll() is not None:
        _kill_group(process.pid, signal.SIGKILL)  # orphans of an exited leader
        return
    _kill_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        _kill_group(process.pid, signal.SIGKILL)
        process.wait(timeout=grace_s)
    _kill_group(process.pid, signal.SIGKILL)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def tail(path: Path, lines: int = 60) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class ProcessStartError(RuntimeError):
    """A child process exited or did not become healthy in time; the message holds its log tail."""


def wait_http_ok(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout_s: float, what: str
) -> float:
    """Poll `url` until it answers 200; fail early if `process` exits. Returns seconds waited."""
    start = time.monotonic()
    while True:
        code = process.poll()
        if code is not None:
            raise ProcessStartError(
                f"{what} exited with code {code} before {url} answered:\n{tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - start > timeout_s:
            raise ProcessStartError(
                f"{what} did not answer {url} within {timeout_s:.0f} s:\n{tail(log_path)}"
            )
        time.sleep(0.5)
