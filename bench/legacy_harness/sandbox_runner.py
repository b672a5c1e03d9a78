"""The program that runs inside each bubblewrap sandbox (standard library only, Python >= 3.9).

It is started once per warm sandbox as `python -I -S -B -c <this source>` and then answers frames
(4-byte big-endian length + JSON) on fds 0/1: one frame = one program run against one test.

For each run it forks itself (no new interpreter: about 1 ms instead of 20), and the child, before
running the model's code: starts a new session, lowers its priority, applies rlimits (CPU seconds,
address space, processes, file size, open files, no core dumps), clears the environment, moves into
a fresh work directory on the sandbox's tmpfs and closes every file descriptor but its own stdin,
stdout, stderr and result pipe. The runner enforces the wall-clock limit and the output cap, then
SIGKILLs every other process in the sandbox's PID namespace (kill(-1) reaches exactly those) and
reaps them as the namespace's child subreaper, so nothing outlives a run.

What it never holds: the expected outputs. stdin/stdout and function-call results are compared by
the host, outside the sandbox, so the model's code cannot read the answers from memory.
The runner makes itself non-dumpable, so the code (same uid) cannot ptrace it or open its fds via
/proc; it can still kill the runner, which the host sees as a dead sandbox and replaces.
"""

from __future__ import annotations

import atexit
import builtins
import ctypes
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback
from contextlib import suppress
from typing import Any, NoReturn

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
HEADER = struct.Struct(">I")
WORK_ROOT = "/sandbox"
RESULT_FD = 3
CHILD_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}

_libc = ctypes.CDLL(None, use_errno=True)
# prctl(int option, unsigned long arg2..5): without argtypes ctypes passes 32-bit ints, which would
# truncate the seccomp program's address.
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int


def read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError()
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> Any:
    (size,) = HEADER.unpack(read_exact(fd, HEADER.size))
    return json.loads(read_exact(fd, size))


def write_frame(fd: int, obj: Any) -> None:
    data = json.dumps(obj).encode("utf-8")
    view = memoryview(HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def other_pids() -> list[int]:
    """Processes in this PID namespace other than its init (bwrap, pid 1) and this runner."""
    me = os.getpid()
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) not in (1, me)]


def kill_everything_else() -> int:
    """SIGKILL every other process of the namespace and reap them; returns how many were left."""
    leftovers = len(other_pids())
    deadline = time.monotonic() + 5.0
    while True:
        with suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # all processes we may signal except ourselves and pid 1
        while True:  # as child subreaper, every orphan of the run is ours to reap
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if not other_pids():
            return leftovers
        if time.monotonic() > deadline:
            raise RuntimeError("processes survived SIGKILL")  # the host replaces this sandbox
        time.sleep(0.002)


def start_time(pid: int) -> float | None:
    """When `pid` started, in CLOCK_BOOTTIME seconds (/proc/<pid>/stat field 22), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19]) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def run_delay(pid: int) -> float:
    """Seconds `pid` has spent runnable but waiting for a CPU (/proc/<pid>/schedstat, field 2)."""
    try:
        with open(f"/proc/{pid}/schedstat") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# --- seccomp: deny setsid() ------------------------------------------------------------------------
# With scheduler autogroups (kernel.sched_autogroup_enabled, common), CPU is shared fairly between
# sessions first: a program that calls setsid() gets a fresh nice-0 group as strong as the whole
# service, whatever its own priority. So setsid() fails with EPERM; 32-bit/x32 syscall entry points,
# which could bypass a filter written for the native numbers, fail too.
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
_NATIVE = {"x86_64": (0xC000003E, 112), "aarch64": (0xC00000B7, 157)}  # (AUDIT_ARCH_*, __NR_setsid)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_filter() -> bytes | None:
    """A classic-BPF seccomp program (struct sock_filter[]) for this machine, None if unknown."""
    native = _NATIVE.get(os.uname().machine)
    if native is None:
        return None
    arch, setsid = native
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    deny, allow = 0x00050000 | 1, 0x7FFF0000  # SECCOMP_RET_ERRNO | EPERM, SECCOMP_RET_ALLOW
    program = [
        (ld_abs, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, arch),  # native ABI: go on; anything else: deny
        (ret, 0, 0, deny),
        (ld_abs, 0, 0, 0),  # seccomp_data.nr
        (jge, 2, 0, 0x40000000),  # x32 syscall numbers: deny
        (jeq, 1, 0, setsid),
        (ret, 0, 0, allow),
        (ret, 0, 0, deny),
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def install_seccomp(program: bytes) -> None:
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


SECCOMP_FILTER = seccomp_filter()
# argv[1] "low": programs yield the CPU to everything else (the service's setting); "normal": they
# compete like any process (library use, where a busy trainer must not starve code checks).
LOW_PRIORITY = len(sys.argv) > 1 and sys.argv[1] == "low"


def lower_autogroup(nice: int) -> bool:
    """Put this session's scheduler autogroup at `nice`: kernels with autogroups share the CPU between
    sessions first, so this, not a process's own priority, decides what the sandbox gets."""
    for _ in range(20):  # the kernel rate-limits autogroup changes (EAGAIN): retry briefly
        try:
            with open("/proc/self/autogroup", "w") as handle:
                handle.write(str(nice))
            return True
        except FileNotFoundError:
            return False  # no autogroups on this kernel: priorities alone apply
        except OSError:
            time.sleep(0.05)
    return False


def cpu_of_others(pid: int) -> float:
    """CPU seconds used by the run's processes other than `pid` (zombies included until reaped)."""
    ticks = 0
    for other in other_pids():
        if other == pid:
            continue
        try:
            with open(f"/proc/{other}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return ticks / CLOCK_TICKS


def remove_tree(path: str) -> None:
    """rm -rf that also handles directories the program made unreadable (same uid, so chmod works).

    Symlinks are unlinked, never followed. A tree too deep for recursion raises, and the runner
    then exits: the host replaces the whole sandbox, tmpfs included.
    """
    if os.path.islink(path) or not os.path.isdir(path):
        with suppress(OSError):
            os.unlink(path)
        return
    with suppress(OSError):
        os.chmod(path, 0o700)
    try:
        names = os.listdir(path)
    except OSError:
        names = []
    for name in names:
        remove_tree(os.path.join(path, name))
    with suppress(OSError):
        os.rmdir(path)


def child(
    job: dict[str, Any], workdir: str, fds: tuple[int, int, int, int], token: str, base_processes: int
) -> NoReturn:
    """In the forked child: confine, then run the program; never returns."""
    status = 70
    try:
        stdin_r, stdout_w, stderr_w, result_w = fds
        # No setsid(): the program stays in the runner's session (and its scheduler autogroup, set
        # to nice 19 at low priority); the seccomp filter below keeps it from starting a new one.
        os.dup2(stdin_r, 0)
        os.dup2(stdout_w, 1)
        os.dup2(stderr_w, 2)
        os.dup2(result_w, RESULT_FD)
        os.closerange(RESULT_FD + 1, 1 << 16)  # includes the runner's protocol pipes
        limits = job["limits"]
        if SECCOMP_FILTER is not None:
            install_seccomp(SECCOMP_FILTER)
        if LOW_PRIORITY:
            # SCHED_IDLE and nice 19: within the sandbox's autogroup the runner always goes first;
            # on a kernel without autogroups, so does every other process of the machine.
            os.setpriority(os.PRIO_PROCESS, 0, 19)
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        cpu = int(limits["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
        resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
        # RLIMIT_NPROC counts every task of this uid in the sandbox: bwrap's init and the runner too.
        nproc = base_processes + int(limits["processes"])
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update(CHILD_ENV, HOME=workdir, TMPDIR=workdir)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        # Fresh stream objects: the runner's own may hold buffered protocol bytes.
        sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(  # noqa: SIM115
            2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
        )
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr  # type: ignore[misc]
        sys.argv = ["solution.py"]
        status = 0
        test = job["test"]
        scope: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": builtins,
            "__file__": workdir + "/solution.py",
        }
        try:
            exec(compile(job["code"], "solution.py", "exec"), scope)
            if test["kind"] == "assert":
                scope["__name__"] = "__test__"
                exec(compile(test["code"], "test.py", "exec"), scope)
                os.write(RESULT_FD, token.encode())
            elif test["kind"] == "call":
                target = test["fn"]
                if "." in target:  # "Solution.method": LeetCode style, on a fresh instance
                    class_name, method = target.split(".", 1)
                    func = getattr(scope[class_name](), method)
                else:
                    func = scope[target]
                value = func(*test.get("args", []), **test.get("kwargs", {}))
                payload = json.dumps(value, default=_jsonable)
                view = memoryview((token + "\n" + payload).encode("utf-8"))
                while view:
                    view = view[os.write(RESULT_FD, view) :]
            atexit._run_exitfuncs()
        except SystemExit as exc:
            code = exc.code
            status = code if isinstance(code, int) else (0 if code is None else 1)
            if not isinstance(code, int) and code is not None:
                print(code, file=sys.stderr)
        except BaseException:
            kind, value, tb = sys.exc_info()
            # from the program's frame on, not ours
            traceback.print_exception(kind, value, tb.tb_next if tb is not None else None)
            status = 1
        for stream in (sys.stdout, sys.stderr):
            with suppress(BaseException):
                stream.flush()
    except BaseException:  # the confinement itself failed: say why on the run's stderr (fd 2 by now)
        with suppress(BaseException):
            os.write(2, ("sandbox set-up failed: " + traceback.format_exc(limit=2)).encode())
    finally:
        os._exit(status & 0xFF)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return repr(value)


def run(job: dict[str, Any], base_processes: int) -> dict[str, Any]:
    limits = job["limits"]
    workdir = f"{WORK_ROOT}/run-{os.urandom(8).hex()}"  # unpredictable: nothing can be planted there
    os.mkdir(workdir, 0o700)
    with open(workdir + "/solution.py", "w", encoding="utf-8") as handle:
        handle.write(job["code"])  # tracebacks then show the failing line
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    stderr_r, stderr_w = os.pipe()
    result_r, result_w = os.pipe()
    token = os.urandom(16).hex()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        child(job, workdir, (stdin_r, stdout_w, stderr_w, result_w), token, base_processes)
    for fd in (stdin_r, stdout_w, stderr_w, result_w):
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    cap = int(limits["output_bytes"])
    stdin_data = memoryview(job["test"].get("stdin", "").encode("utf-8"))
    outputs = {stdout_r: bytearray(), stderr_r: bytearray(), result_r: bytearray()}
    for fd in (stdin_w, stdout_r, stderr_r, result_r):
        os.set_blocking(fd, False)
    poller = select.poll()
    for fd in outputs:
        poller.register(fd, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    if stdin_data:
        poller.register(stdin_w, select.POLLOUT)
    else:
        os.close(stdin_w)
        stdin_w = -1
    timeout = float(limits["timeout_s"])
    hard_deadline = started + float(limits["max_wall_s"])
    born = start_time(pid)
    outcome, exited = None, False
    while outcome is None and not exited:
        # The limit counts the time the program ran or slept, not the time it waited for a CPU that
        # processes outside the run held (at idle priority it yields to all of them): its age minus
        # its run-queue delay, less the CPU its own other processes took (a fork bomb's children
        # delay it too, and that delay is its own), up to a hard wall-clock cap. Its age counts from
        # its own start, so a runner kept waiting before the fork does not eat the program's time.
        age = (
            time.clock_gettime(time.CLOCK_BOOTTIME) - born if born is not None else time.monotonic() - started
        )
        waited = max(0.0, run_delay(pid) - cpu_of_others(pid))
        remaining = min(timeout - (age - waited), hard_deadline - time.monotonic())
        if remaining <= 0:
            if select.select([pidfd], [], [], 0)[0]:  # it did finish; we only noticed late
                exited = True
                break
            outcome = "timeout"
            break
        for fd, _event in poller.poll(remaining * 1000):
            if fd == pidfd:
                exited = True
            elif fd == stdin_w:
                try:
                    stdin_data = stdin_data[os.write(stdin_w, stdin_data[:65536]) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # the program stopped reading: fine
                    stdin_data = stdin_data[:0]
                if not stdin_data:
                    poller.unregister(stdin_w)
                    os.close(stdin_w)
                    stdin_w = -1
            else:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    poller.unregister(fd)
                    continue
                outputs[fd] += chunk
                if fd == stderr_r and len(outputs[fd]) > 2 * 65536:
                    del outputs[fd][:-65536]  # keep the tail: that is where the traceback is
                elif len(outputs[fd]) > cap:
                    outcome = "output_limit"
                    break
    if exited and outcome is None:  # collect what the program wrote before it exited
        for fd in outputs:
            while len(outputs[fd]) <= cap:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                outputs[fd] += chunk
        if len(outputs[stdout_r]) > cap or len(outputs[result_r]) > cap:
            outcome = "output_limit"
    wall = time.monotonic() - started
    if not exited:
        os.kill(pid, signal.SIGKILL)
    _, wait_status, usage = os.wait4(pid, 0)
    leftovers = kill_everything_else()
    for fd in (stdout_r, stderr_r, result_r, pidfd):
        os.close(fd)
    if stdin_w >= 0:
        os.close(stdin_w)
    # Wipe the whole tmpfs, not only the run's directory: a file left anywhere writable would let a
    # later program (another sample) read what this one stored. No process is left to recreate one.
    for name in os.listdir(WORK_ROOT):
        remove_tree(os.path.join(WORK_ROOT, name))
    if os.listdir(WORK_ROOT):
        raise RuntimeError("the work tmpfs could not be emptied")  # the host replaces this sandbox
    result = {
        "outcome": outcome or "exited",
        "exit_code": os.WEXITSTATUS(wait_status) if os.WIFEXITED(wait_status) else None,
        "signal": os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None,
        "stdout": bytes(outputs[stdout_r][:cap]).decode("utf-8", "replace"),
        "stderr_tail": bytes(outputs[stderr_r][-4096:]).decode("utf-8", "replace"),
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "leftover_processes": leftovers,
    }
    sent = bytes(outputs[result_r][: cap + 64]).decode("utf-8", "replace")
    if job["test"]["kind"] == "assert":
        result["completed"] = sent == token
    elif job["test"]["kind"] == "call":
        head, _, value = sent.partition("\n")
        result["completed"] = head == token
        result["value"] = value if head == token else None
    return result


def main() -> int:
    proto_in, proto_out = 0, 1
    # Set before going non-dumpable, while /proc/self is still ours to write.
    autogroup_lowered = LOW_PRIORITY and lower_autogroup(19)
    # Non-dumpable: same-uid code cannot ptrace us or open /proc/<runner>/fd or /mem.
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # Orphans of a run are re-parented to us (not to bwrap's init), so we can reap them all.
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    base_processes = 1 + len(other_pids()) + 1  # bwrap's init + anything already here + this runner
    write_frame(
        proto_out,
        {
            "ready": True,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "base_processes": base_processes,
            "low_priority": LOW_PRIORITY,
            "autogroup_lowered": autogroup_lowered,
            "seccomp": SECCOMP_FILTER is not None,
        },
    )
    while True:
        try:
            job = read_frame(proto_in)
        except EOFError:
            return 0
        try:
            reply = run(job, base_processes)
        except Exception:
            reply = {"outcome": "runner_error", "error": traceback.format_exc(limit=3)}
            write_frame(proto_out, reply)
            return 2  # a runner in an unknown state is replaced, not reused
        write_frame(proto_out, reply)


if __name__ == "__main__":
    sys.exit(main())
