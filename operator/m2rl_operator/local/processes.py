"""Local processes: started in their own session, stopped by process group, swept by a marker.

Every process the local runner starts gets its own session (so Ctrl-C in the terminal reaches only
the runner, which then stops its children in order) and the environment variable MARKER naming the
workdir. Grandchildren inherit both: a trainer's scorer workers, the verifier's bubblewrap
sandboxes, vLLM's engine process, torchrun's ranks. Stopping a child signals its whole process
group; `sweep` then finds anything that left the group (a program that called setsid itself) by
the marker in /proc/PID/environ and kills it, so nothing outlives the runner.

CPU time: the runner reaps each child with `os.wait4`, whose rusage covers the child and every
descendant it waited for (the programs here reap their workers), i.e. the component's CPU-seconds.
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
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "M2RL_LOCAL_WORKDIR"
"""Set to the workdir's absolute path in every process the runner starts (and so their children)."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """One started process: its command, log, and (once reaped) exit code and CPU-seconds."""

    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    returncode: int | None = None
    cpu_seconds: float = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        """The exit code once the process ended (reaped here, with its rusage), else None."""
        if self.returncode is None:
            try:
                pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere (should not happen): no usage to record
                pid, status, usage = self.pid, 0, None
            if pid == 0:
                return None
            self.returncode = os.waitstatus_to_exitcode(status)
            self.popen.returncode = self.returncode  # keep Popen from waiting for it again
            if usage is not None:
                self.cpu_seconds = usage.ru_utime + usage.ru_stime
        return self.returncode

    def healthy(self, url: str) -> bool:
        """Whether `url` answers 200 (a service's /health)."""
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False


def start(
    name: str, argv: Sequence[str], *, log: Path, env: Mapping[str, str], cwd: Path | None = None
) -> Child:
    """Start `argv` in a new session, stdout and stderr appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as handle:
        handle.write(f"\n# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        handle.flush()
        popen = subprocess.Popen(
            list(argv),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return Child(name, list(argv), log, popen)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate(child: Child) -> None:
    """SIGTERM the child's process group (a no-op once it ended)."""
    if child.poll() is None:
        _signal_group(child.pid, signal.SIGTERM)


def kill(child: Child) -> None:
    """SIGKILL the child's process group (also orphans of a leader that already exited) and reap it."""
    _signal_group(child.pid, signal.SIGKILL)
    while child.poll() is None:
        time.sleep(0.01)


def stop(children: Sequence[Child], grace_s: float = 10.0) -> None:
    """SIGTERM every child's process group, wait up to `grace_s` for all, then SIGKILL the groups.

    Programs get the grace period to unwind (close worker pools, remove temporary folders); a
    trainer killed mid-step resumes from its last complete checkpoint either way.
    """
    for child in children:
        terminate(child)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(c.poll() is None for c in children):
        time.sleep(0.05)
    for child in children:
        kill(child)


def marked_processes(value: str) -> list[int]:
    """PIDs (other than this one) whose environment has MARKER=value."""
    wanted = f"{MARKER}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def sweep(value: str, grace_s: float = 2.0) -> list[int]:
    """Kill every process still carrying MARKER=value; returns their PIDs."""
    pids = marked_processes(value)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.02)
    return pids


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, dead but not yet reaped by its parent, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
