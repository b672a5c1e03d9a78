"""The code sandbox: bubblewrap namespaces around a warm runner process, plus per-run rlimits.

Each warm sandbox is one `bwrap` process with new user, PID, network, IPC, UTS and cgroup
namespaces, no capabilities, no further user namespaces, a read-only root made only of /usr (the
interpreter and its libraries: no /etc, /home, /root, /proc of the host, project files or
secrets), a fresh /proc, a minimal read-only /dev, a size-limited tmpfs at /sandbox (the only
writable place), an empty environment, and --die-with-parent. Inside runs `_sandbox_runner.py`,
which forks one confined child per program run through a fork server that never sees a run's data,
and checks assert-style tests in a separate checker process (see that module).

When we run as root (here, in CI), bwrap is started as an unprivileged uid (65534, "nobody") so
that the kernel enforces RLIMIT_NPROC (root's processes are exempt from it, which would let a fork
bomb through) and the user namespace is an unprivileged one, as it is for the non-root pod.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from m2rl_trainer.rewards.workers import WorkerPool, WorkerSpec

HERE = Path(__file__).parent
# The runner and the two modules it shares with the host (standard library only); the bootstrap
# below makes them a package inside the sandbox, where nothing of this project is installed.
RUNNER_MODULES = ("_values.py", "_checker.py", "_sandbox_runner.py")
BOOTSTRAP = """
import sys, types
package = types.ModuleType("m2rl_sandbox")
package.__path__ = []
sys.modules["m2rl_sandbox"] = package
for name, source in (("_values", sys.argv[2]), ("_checker", sys.argv[3])):
    module = types.ModuleType("m2rl_sandbox." + name)
    module.__package__ = "m2rl_sandbox"
    sys.modules[module.__name__] = module
    setattr(package, name, module)
    exec(compile(source, name + ".py", "exec"), module.__dict__)
runner = sys.argv[4]
del sys.argv[2:]
exec(compile(runner, "_sandbox_runner.py", "exec"), {"__name__": "__main__", "__package__": "m2rl_sandbox"})
"""
SANDBOX_UID = 1000  # uid/gid inside the sandbox's user namespace
NOBODY = 65534


class SandboxUnavailable(RuntimeError):
    """bubblewrap or a usable Python for the sandbox is missing."""


def repo_root() -> Path | None:
    """The source checkout this package is imported from (editable install), if any."""
    candidate = Path(__file__).resolve().parents[3]
    return candidate if (candidate / "scripts" / "setup.sh").exists() else None


def find_bwrap() -> Path:
    """bubblewrap: <repo>/.tools/bin/bwrap (installed by scripts/setup.sh), then $M2RL_BWRAP, then PATH."""
    root = repo_root()
    candidates: list[Path] = []
    if root is not None:
        candidates.append(root / ".tools" / "bin" / "bwrap")
    if os.environ.get("M2RL_BWRAP"):
        candidates.append(Path(os.environ["M2RL_BWRAP"]))
    on_path = shutil.which("bwrap")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise SandboxUnavailable(
        "bubblewrap (bwrap) not found in <repo>/.tools/bin, $M2RL_BWRAP or PATH: run `bash scripts/setup.sh` "
        "(or install the Debian package bubblewrap)"
    )


def find_sandbox_python() -> Path:
    """An interpreter that lives under /usr, the only tree the sandbox sees.

    $M2RL_SANDBOX_PYTHON wins; then this interpreter's base executable if it is under /usr (the
    container image); then /usr/bin/python3 or /usr/local/bin/python3 (a pyenv or venv Python under
    /root or /home is not visible inside the sandbox, and must not be: those trees hold secrets).
    """
    if os.environ.get("M2RL_SANDBOX_PYTHON"):
        return Path(os.environ["M2RL_SANDBOX_PYTHON"])
    base = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    candidates = [base, Path("/usr/local/bin/python3"), Path("/usr/bin/python3")]
    for path in candidates:
        resolved = path.resolve()
        if resolved.is_file() and str(resolved).startswith("/usr/"):
            return resolved
    raise SandboxUnavailable("no python3 under /usr for the sandbox; set M2RL_SANDBOX_PYTHON")


@dataclass(frozen=True)
class SandboxConfig:
    """Settings of the sandbox pool (per-run limits are code-verifier options, see code_verifier).

    bwrap / python: binaries (None: found by find_bwrap / find_sandbox_python).
    tmpfs_mb: size of the writable /sandbox tmpfs of one sandbox; it holds one run's files at a time.
    run_as_uid: host uid bwrap runs as; None means 65534 when we are root (so RLIMIT_NPROC binds)
    and our own uid otherwise.
    extra_ro_binds: host paths made visible read-only at the same place (e.g. a site-packages
    with numpy for the programs); nothing else of the host is visible.
    low_priority: programs yield the CPU to every other process: SCHED_IDLE, nice 19, and the
    sandbox session's scheduler autogroup at nice 19 (kernels with autogroups share the CPU between
    sessions first, so that, not a process's own priority, is what counts). The service turns it on,
    so hostile code cannot slow other requests; the library leaves it off, because on a machine busy
    with training or generation low-priority programs would mostly wait (the time they wait does not
    count against their limit, but a run is still capped at max_wall_factor x timeout_s).
    host_grace_s: how long past a run's hard wall-clock cap the host waits for the runner before it
    kills the sandbox; generous, because a runner at low priority may wait for a CPU on a busy
    machine, and only a frozen runner (SIGSTOPped by a program) ever needs it.
    """

    bwrap: str | None = None
    python: str | None = None
    tmpfs_mb: int = 64
    run_as_uid: int | None = None
    extra_ro_binds: tuple[str, ...] = field(default_factory=tuple)
    low_priority: bool = False
    host_grace_s: float = 10.0


def runner_argv(python: Path, low_priority: bool) -> list[str]:
    """The sandbox's command: its Python, isolated (-I -S -B), running the bootstrap."""
    sources = [(HERE / name).read_text(encoding="utf-8") for name in RUNNER_MODULES]
    return [str(python), "-I", "-S", "-B", "-c", BOOTSTRAP, "low" if low_priority else "normal", *sources]


def bwrap_argv(
    config: SandboxConfig, bwrap: Path, python: Path, command: list[str] | None = None
) -> list[str]:
    """bwrap's arguments around `command` (default: the runner, runner_argv)."""
    argv = [
        str(bwrap),
        "--unshare-all",
        "--unshare-user",  # required, unlike --unshare-all's "try": no user namespace, no sandbox
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("bin", "lib", "lib32", "lib64", "libx32", "sbin"):
        host = Path("/") / top
        if host.is_symlink():  # merged-/usr systems: /lib -> usr/lib
            argv += ["--symlink", os.readlink(host), f"/{top}"]
        elif host.is_dir():
            argv += ["--ro-bind", str(host), f"/{top}"]
    python_home = Path(python).resolve().parents[1]
    if not str(python_home).startswith("/usr"):
        argv += ["--ro-bind", str(python_home), str(python_home)]
    for extra in config.extra_ro_binds:
        argv += ["--ro-bind", extra, extra]
    argv += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--remount-ro",
        "/dev",  # no writable /dev/shm
        "--size",
        str(config.tmpfs_mb * 1024 * 1024),
        "--tmpfs",
        "/sandbox",
        "--remount-ro",
        "/",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--setenv",
        "LANG",
        "C.UTF-8",
        "--chdir",
        "/sandbox",
    ]
    return argv + (command if command is not None else runner_argv(python, config.low_priority))


def sandbox_worker_spec(config: SandboxConfig, on_kill: Callable[[str], None] | None = None) -> WorkerSpec:
    bwrap = Path(config.bwrap) if config.bwrap else find_bwrap()
    if not (bwrap.is_file() and os.access(bwrap, os.X_OK)):
        raise SandboxUnavailable(f"bwrap not executable at {bwrap}: run `bash scripts/setup.sh`")
    python = Path(config.python) if config.python else find_sandbox_python()
    uid = config.run_as_uid if config.run_as_uid is not None else (NOBODY if os.geteuid() == 0 else None)
    # The runner's own stderr is dropped: a program's output goes to its run's pipes, never there.
    popen: dict[str, object] = {"cwd": "/", "stderr": subprocess.DEVNULL, "env": {}}
    if uid is not None and uid != os.geteuid():
        popen.update(user=uid, group=uid, extra_groups=[])
    return WorkerSpec(
        name="sandbox",
        argv=bwrap_argv(config, bwrap, python),
        ready_timeout_s=30.0,
        popen_kwargs=popen,
        on_kill=on_kill,
    )


def start_sandbox_pool(
    config: SandboxConfig, size: int, on_kill: Callable[[str], None] | None = None
) -> WorkerPool:
    """Start `size` warm sandboxes; raises SandboxUnavailable / WorkerStartError when they cannot run."""
    pool = WorkerPool(sandbox_worker_spec(config, on_kill), size)
    try:
        pool.wait_started()
    except Exception:
        pool.close()
        raise
    return pool
