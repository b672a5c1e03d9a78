"""Local processes: a stopped child takes its whole process group with it, a grandchild that left
the group (setsid) is found by the workdir marker, and a child's CPU time includes its children."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from m2rl_operator.local import processes

# A child that starts a grandchild in its own session (out of the child's process group) and a
# grandchild in the group, writes their PIDs, and waits.
TREE = """
import os, subprocess, sys, time
escaped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
grouped = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(f"{escaped.pid} {grouped.pid}")
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stop_and_sweep_leave_nothing_behind(tmp_path: Path) -> None:
    marker = str(tmp_path / "work")
    env = {**os.environ, processes.MARKER: marker}
    pids_file = tmp_path / "pids"
    child = processes.start(
        "tree", [sys.executable, "-c", TREE, str(pids_file)], log=tmp_path / "tree.log", env=env
    )
    deadline = time.monotonic() + 60
    while not pids_file.exists() or not pids_file.read_text():
        assert time.monotonic() < deadline, (tmp_path / "tree.log").read_text()
        time.sleep(0.05)
    escaped, grouped = map(int, pids_file.read_text().split())
    assert sorted(processes.marked_processes(marker)) == sorted([child.pid, escaped, grouped])

    processes.stop([child], grace_s=5)
    assert child.returncode is not None and not _alive(child.pid)
    assert not _alive(grouped)  # the process group went with the child
    assert _alive(escaped)  # setsid took it out of the group: only the marker finds it
    assert processes.sweep(marker) == [escaped]
    assert not _alive(escaped)
    assert processes.marked_processes(marker) == []


def test_cpu_seconds_include_the_childs_children(tmp_path: Path) -> None:
    busy = "import time; end = time.process_time() + 0.4\nwhile time.process_time() < end: pass"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {busy!r}], check=True)"
    child = processes.start(
        "busy", [sys.executable, "-c", parent], log=tmp_path / "busy.log", env=dict(os.environ)
    )
    while child.poll() is None:
        time.sleep(0.02)
    assert child.returncode == 0
    assert child.cpu_seconds >= 0.4  # the grandchild's 0.4 s of spinning, reaped by its parent


def test_a_service_is_healthy_once_it_answers(tmp_path: Path) -> None:
    port = processes.free_port()
    server = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(tmp_path),
    ]
    child = processes.start("http", server, log=tmp_path / "http.log", env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while not child.healthy(f"http://127.0.0.1:{port}/"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert not child.healthy(f"http://127.0.0.1:{processes.free_port()}/")
    finally:
        processes.stop([child], grace_s=5)
    assert "python" in (tmp_path / "http.log").read_text().splitlines()[1]  # the command line heads the log
