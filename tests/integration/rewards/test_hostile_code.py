"""Hostile programs against the real sandbox pool: each is contained, gets the right verdict and
leaves no process behind (checked by scanning the host's process table)."""

from __future__ import annotations

import contextlib
import socket
import textwrap
import threading
import time
from pathlib import Path

import pytest

from m2rl_trainer.rewards import Scorer, ScorerConfig
from m2rl_trainer.rewards.sandbox import SandboxConfig
from tests.integration.rewards.conftest import SECRET_ENV, SECRET_VALUE
from tests.integration.rewards.helpers import alive, descendants, processes_with, wait_until

pytestmark = pytest.mark.usefixtures("clean_sandboxes")

# A 1 s limit, and a hard wall-clock cap of 2.5 s for programs kept waiting by other processes (they
# run at the lowest priority, and this machine may be busy).
FAST = {"timeout_s": 1.0, "max_wall_factor": 2.0, "memory_mb": 256}


def run(scorer: Scorer, code: str, expected_stdout: str = "done", **options: object) -> dict:
    sample = {
        "verifier": "code",
        "response": f"```python\n{textwrap.dedent(code)}\n```",
        "reference": {"tests": [{"stdin": "", "stdout": expected_stdout}]},
        "options": {**FAST, **options},
    }
    return scorer.score([sample])[0].to_dict()


def first_test(result: dict) -> dict:
    return result["details"]["tests"][0]


def test_fork_bomb_is_capped_by_nproc_and_cleaned_up(scorer):
    marker = "31337.101"
    result = run(
        scorer,
        f"""
        import os
        while True:
            try:
                if os.fork() == 0:
                    os.execv("/bin/sleep", ["sleep", "{marker}"])
            except OSError:
                pass
    """,
        max_processes=6,
    )
    assert result["verdict"] == "timeout" and result["reward"] == 0.0
    killed = first_test(result)["killed_processes"]
    assert 1 <= killed <= 6  # RLIMIT_NPROC held: never more processes than allowed
    assert processes_with(marker) == []


def test_infinite_loop_times_out_on_time(scorer):
    start = time.monotonic()
    result = run(scorer, "while True: pass")
    assert result["verdict"] == "timeout"
    # 1 s of CPU; waiting for a CPU held by other processes may stretch it to the 2.5 s cap
    assert time.monotonic() - start < 4.0


def test_sleeping_past_the_timeout(scorer):
    start = time.monotonic()
    result = run(scorer, "import time\ntime.sleep(60)\nprint('done')")
    assert result["verdict"] == "timeout"
    assert 0.9 <= first_test(result)["time_s"] < 1.5  # sleeping waits for no CPU: the plain 1 s limit
    assert time.monotonic() - start < 2.5


def test_memory_bomb_hits_the_address_space_limit(scorer):
    result = run(scorer, "blocks = []\nwhile True:\n    blocks.append(bytearray(100_000_000))")
    assert result["verdict"] == "memory_limit"
    assert "MemoryError" in first_test(result)["stderr_tail"]


def test_huge_output_is_cut_at_the_cap(scorer):
    start = time.monotonic()
    result = run(scorer, "while True:\n    print('x' * 10000)", output_limit_kb=64)
    assert result["verdict"] == "output_limit"
    assert time.monotonic() - start < 2.0  # killed at the cap, not at the timeout


def test_network_is_unreachable(scorer):
    accepted = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.settimeout(0.1)
    finished = threading.Event()

    def accept() -> None:
        while not finished.is_set():
            with contextlib.suppress(OSError):
                accepted.append(listener.accept())

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        result = run(
            scorer,
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=0.5)
                print("connected")
            except OSError as exc:
                print("blocked", exc)
        """,
            expected_stdout="connected",
        )
    finally:
        finished.set()
        thread.join()
        listener.close()
    assert result["verdict"] == "incorrect"
    assert first_test(result)["stdout_head"].startswith("blocked")
    assert accepted == []  # the host's listener never saw the sandbox


def test_writes_outside_the_work_dir_fail(scorer, tmp_path):
    target = tmp_path / "escaped.txt"
    result = run(
        scorer,
        f"""
        import os
        wrote = []
        for path in [{str(target)!r}, "/usr/escaped.txt", "/escaped.txt", "/tmp/escaped.txt", "/dev/shm/x",
                     "/proc/sys/kernel/hostname"]:
            try:
                with open(path, "w") as handle:
                    handle.write("x")
                wrote.append(path)
            except OSError:
                pass
        open("inside-work-dir.txt", "w").write("fine")  # the work dir itself is writable
        print("wrote", wrote)
    """,
        expected_stdout="wrote everything",
    )
    assert result["verdict"] == "incorrect"
    assert first_test(result)["stdout_head"].strip() == "wrote []"
    assert not target.exists() and not Path("/usr/escaped.txt").exists()


def test_files_written_in_the_sandbox_do_not_persist_to_the_next_run(scorer):
    """A later sample must not read what an earlier one stored (a cross-sample cache is a reward hack)."""
    writer = run(
        scorer,
        """
        import os
        for path in ["/sandbox/cache.txt", "cache.txt", os.path.expanduser("~/cache.txt")]:
            open(path, "w").write("answer")
        os.makedirs("/sandbox/locked/deeper")
        open("/sandbox/locked/deeper/f", "w").write("x")
        os.chmod("/sandbox/locked/deeper", 0)
        os.chmod("/sandbox/locked", 0)
        os.symlink("/usr/bin", "/sandbox/link")
        print("done")
    """,
    )
    reader = run(scorer, "import os\nprint(sorted(os.listdir('/sandbox')))", expected_stdout="[]")
    assert writer["verdict"] == "correct"
    assert reader["verdict"] == "incorrect" and first_test(reader)["stdout_head"].startswith("['run-")
    assert (
        "cache" not in first_test(reader)["stdout_head"] and "locked" not in first_test(reader)["stdout_head"]
    )


def test_environment_and_host_files_are_invisible(scorer, tmp_path):
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET_VALUE)
    secret_file.chmod(0o644)
    result = run(
        scorer,
        f"""
        import os
        found = [k for k, v in os.environ.items() if "{SECRET_ENV}" in k or "s3cr3t" in v]
        for path in ["/proc/self/environ", "/proc/1/environ", "/proc/2/environ"]:
            try:
                if b"s3cr3t" in open(path, "rb").read():
                    found.append(path)
            except OSError:
                pass
        for path in [{str(secret_file)!r}, "/etc/passwd", "/etc/hostname", "/root/.bashrc",
                     "/proc/1/root/etc/passwd", {str(Path.cwd() / "ruff.toml")!r}]:
            try:
                found.append(path + ":" + open(path).read()[:40])
            except OSError:
                pass
        print("found", found, sorted(os.environ))
    """,
        expected_stdout=SECRET_VALUE,
    )
    assert result["verdict"] == "incorrect"
    head = first_test(result)["stdout_head"]
    assert head.startswith("found []"), head
    assert SECRET_VALUE not in str(result)


def test_killing_its_parent_is_contained_and_the_sandbox_replaced(scorer):
    pool = scorer.sandbox_pool
    before = {pid: descendants(pid) for pid in pool.pids()}
    result = run(scorer, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint('done')")
    assert result["verdict"] == "sandbox_error" and result["reward"] == 0.0
    result = run(scorer, "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('done')")
    assert result["verdict"] == "sandbox_error"
    # the killed sandboxes' processes are all gone, replacements are warm, and the next program passes
    gone = [pid for pid, kids in before.items() if not alive(pid)]
    assert gone  # the namespace dies with its bwrap, asynchronously: give the kernel a moment
    assert wait_until(lambda: all(not alive(kid) for pid in gone for kid in before[pid]), 3.0)
    assert run(scorer, "print('done')")["verdict"] == "correct"


def test_freezing_its_parent_is_caught_by_the_host_deadline():
    # its own one-sandbox scorer with a short host grace (the default waits 10 s past the cap)
    config = ScorerConfig(verifiers={"code": {}}, sandbox_workers=1, sandbox=SandboxConfig(host_grace_s=1.0))
    with Scorer(config) as scorer:
        bwrap = scorer.sandbox_pool.pids()[0]
        frozen = descendants(bwrap)
        start = time.monotonic()
        # its parent is the sandbox's fork server, whose parent is the runner: stop both
        code = (
            "import os, signal, time\npid = os.getpid()\nfor _ in range(2):\n"
            "    pid = int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])\n"
            "    os.kill(pid, signal.SIGSTOP)\ntime.sleep(60)"
        )
        result = run(scorer, code, timeout_s=0.5, max_wall_factor=1.0)
        assert result["verdict"] == "timeout"
        assert "killed and replaced" in first_test(result)["reason"]
        assert time.monotonic() - start < 4.0  # cap 1 s + grace 1 s + replacing the sandbox
        assert wait_until(lambda: not any(alive(pid) for pid in [bwrap, *frozen]), 3.0)
        assert run(scorer, "print('done')")["verdict"] == "correct"


def test_background_processes_do_not_outlive_the_run(scorer):
    marker = "31337.202"
    result = run(
        scorer,
        f"""
        import os
        for _ in range(3):
            if os.fork() == 0:          # child: detach like a daemon (own process group), then linger
                os.setpgid(0, 0)
                if os.fork() == 0:
                    os.execv("/bin/sleep", ["sleep", "{marker}"])
                os._exit(0)
        print("done")
    """,
    )
    assert result["verdict"] == "correct"  # the program itself did its job
    assert first_test(result)["killed_processes"] >= 3
    assert wait_until(lambda: processes_with(marker) == [], 2.0)


def test_a_daemon_cannot_touch_the_next_run(scorer):
    """A leftover writer aimed at the next run's stdout is killed before that run starts."""
    first = run(
        scorer,
        """
        import os, sys, time
        if os.fork() == 0:
            os.setpgid(0, 0)
            for _ in range(200):
                try:
                    sys.stdout.write("INJECTED\\n"); sys.stdout.flush()
                except OSError:
                    pass
                time.sleep(0.01)
            os._exit(0)
        print("done")
    """,
    )
    second = run(scorer, "print('done')")
    assert first_test(first)["killed_processes"] >= 1  # the writer was killed when its run ended
    assert second["verdict"] == "correct" and "INJECTED" not in str(second)


def test_early_exit_does_not_pass_assert_or_call_tests(scorer):
    sample = {
        "verifier": "code",
        "response": "```python\nimport os\ndef f(x):\n    return 0\nos._exit(0)\n```",
        "reference": {"tests": [{"assert": "assert f(1) == 2"}, {"call": "f", "args": [1], "expected": 2}]},
        "options": {**FAST, "scoring": "fraction"},
    }
    result = scorer.score([sample])[0]
    assert result.reward == 0.0
    assert [t["status"] for t in result.details["tests"]] == ["runtime_error", "runtime_error"]


def test_a_new_session_is_refused(scorer):
    """setsid() would give the program its own scheduler autogroup, as strong as the whole service."""
    result = run(
        scorer,
        """
        import os, subprocess
        try:
            os.setsid()
            print("new session")
        except PermissionError:
            print("refused")
        print(subprocess.run(["/bin/echo", "subprocesses still work"], capture_output=True, text=True).stdout)
    """,
        expected_stdout="refused\nsubprocesses still work",
    )
    assert result["verdict"] == "correct", result
