"""The program that runs inside each bubblewrap sandbox (standard library only, Python >= 3.9).

Started once per warm sandbox by sandbox.runner_argv, which loads it together with _values and
_checker. It answers frames (4-byte big-endian length + JSON) on fds 0/1: one frame = one program
run against one test: {"code", "test": {"kind": "stdio" | "call" | "check", ...}, "limits"}.

Processes of one sandbox:
  runner       this process: reads jobs, feeds and drains the run's pipes, enforces the wall-clock
               limit and the output cap, kills and reports. Non-dumpable: same-uid code cannot
               ptrace it or open its /proc files.
  fork server  forked from the runner at start-up, before any job. It only receives "fork a
               solution (or checker) with these pipes" (the descriptors travel over a socket), never
               code, tests or outputs; every run's processes are forked from it, so their memory
               holds nothing of earlier runs (a runner-forked child could read, in its own copy of
               the runner's heap, the tests and outputs of the samples scored before it).
  solution     one per run: reads its code from a pipe, confines itself (seccomp, rlimits, priority,
               a fresh work directory, an empty environment, no other descriptors), runs it; then,
               for function-call and assert tests, answers calls with plain values (`serve`).
  checker      one per sandbox, forked from the fork server when an assert test first needs it:
               runs each such test against the run's solution through proxies (_checker.run_check);
               the verdict comes back on its socket, which no solution ever holds, so a solution
               cannot forge, reorder or cut it short. Continued and health-checked after each run,
               replaced after an odd run (a solution may kill or stop it) or CHECKER_RUNS runs.

What crosses from the solution's process is data only: its stdout/stderr, and for calls one JSON
line per value in the strict _values encoding. Expected stdout and expected return values never
enter the sandbox (the host compares them; it also checks plain asserts itself); other assert
tests live in the checker only. After each run the runner SIGKILLs every other process of the
sandbox's PID namespace but the fork server and a healthy checker, reaps the orphans as child
subreaper and wipes the tmpfs, so nothing of a run outlives it. The code may kill the runner or the
fork server: the host sees a dead sandbox, answers sandbox_error and starts a new one.
"""

from __future__ import annotations

import atexit
import builtins
import ctypes
import fcntl
import gc
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import suppress
from typing import Any, NoReturn

from . import _checker, _values

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
HEADER = struct.Struct(">I")
WORK_ROOT = "/sandbox"
SETUP_FAILED = 70  # a child exits with this when confining itself failed (not the program's fault)
MAX_CODE_BYTES = 16 << 20
# The program's descriptors: 0-2 stdio, then requests in, values out, its code in.
REQUESTS_FD, VALUES_FD, CODE_FD = 3, 4, 5
CHILD_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}
# Imported once by the runner, before the fork server starts: every program and checker finds them
# loaded (shared, copy-on-write) instead of importing them on each run.
PRELOAD = (
    "ast",
    "bisect",
    "collections",
    "copy",
    "functools",
    "heapq",
    "itertools",
    "math",
    "random",
    "re",
    "string",
    "typing",
)

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


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_frame(fd: int, obj: Any) -> None:
    data = json.dumps(obj).encode("utf-8")
    write_all(fd, HEADER.pack(len(data)) + data)


def read_all(fd: int, limit: int) -> bytes:
    """Everything until EOF (at most `limit` bytes; more is an error)."""
    chunks, size = [], 0
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise ValueError(f"more than {limit} bytes")
        chunks.append(chunk)


def write_line(fd: int, obj: Any) -> None:
    write_all(fd, (_values.dumps(obj) + "\n").encode())


def other_pids() -> list[int]:
    """Processes in this PID namespace other than its init (bwrap, pid 1) and this runner."""
    me = os.getpid()
    return [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) not in (1, me)]


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


def cpu_of_others(pid: int, exempt: set[int]) -> float:
    """CPU seconds used by the run's processes other than `pid` (zombies included until reaped);
    `exempt`: the sandbox's own processes (fork server, checker)."""
    ticks = 0
    for other in other_pids():
        if other == pid or other in exempt:
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


# --- the children: confinement ------------------------------------------------------------------------


def install_fds(targets: dict[int, int]) -> None:
    """Put descriptors at fixed numbers 0..n-1 (target -> source; a missing one is /dev/null) and
    close every other descriptor (the runner's protocol pipes, the fork server's socket)."""
    count = max(targets) + 1
    high = {}
    for target in range(count):
        source = targets.get(target, -1)
        if source < 0:
            source = os.open(os.devnull, os.O_RDWR)
        high[target] = fcntl.fcntl(source, fcntl.F_DUPFD, 100)  # above every target: no clobbering
    for target, source in high.items():
        os.dup2(source, target)
    os.closerange(count, 1 << 16)


def confine(params: dict[str, Any], workdir: str, *, cpu_limit: bool = True) -> None:
    """seccomp, priority, rlimits, work directory, environment and signals of a run's process.
    `cpu_limit`: RLIMIT_CPU (it counts a process's whole life: not for the long-lived checker)."""
    limits = params["limits"]
    # No setsid(): the process stays in the runner's session (and its scheduler autogroup, set to
    # nice 19 at low priority); the seccomp filter keeps it from starting a new one.
    if SECCOMP_FILTER is not None:
        install_seccomp(SECCOMP_FILTER)
    if LOW_PRIORITY:
        # SCHED_IDLE and nice 19: within the sandbox's autogroup the runner always goes first; on a
        # kernel without autogroups, so does every other process of the machine.
        os.setpriority(os.PRIO_PROCESS, 0, 19)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    if cpu_limit:
        cpu = int(limits["cpu_s"])
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    # RLIMIT_NPROC counts every task of this uid in the sandbox: bwrap's init, the runner, the fork
    # server and, for assert tests, the checker too.
    resource.setrlimit(resource.RLIMIT_NPROC, (params["nproc"], params["nproc"]))
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(CHILD_ENV, HOME=workdir, TMPDIR=workdir)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _builtins_changed(snapshot: dict[str, Any]) -> bool:
    current = builtins.__dict__
    return len(current) != len(snapshot) or any(current.get(k) is not v for k, v in snapshot.items())


def _safe_str(value: Any) -> str:
    try:
        return str(value)[:300]
    except BaseException:
        return ""


def _mutable_args(args: list[Any], kwargs: dict[str, Any], register: Callable[[Any], int]) -> dict[Any, str]:
    """Encodings of the list/dict/set arguments before a call, to report what it changed in place."""
    before = {}
    for position, value in [*enumerate(args), *kwargs.items()]:
        if type(value) in (list, dict, set, bytearray):
            with suppress(ValueError, RecursionError):
                before[position] = _values.dumps(_values.encode(value, register)[0])
    return before


class Handles:
    """Objects of the program the checker holds references to: one number per object, kept alive."""

    def __init__(self) -> None:
        self.objects: list[Any] = []
        self.numbers: dict[int, int] = {}  # id(object) -> number; ids stay unique while kept alive

    def register(self, obj: Any) -> int:
        number = self.numbers.get(id(obj))
        if number is None:
            number = self.numbers[id(obj)] = len(self.objects)
            self.objects.append(obj)
        return number

    def get(self, number: int, _type_name: str) -> Any:
        if not 0 <= number < len(self.objects):
            raise ValueError(f"no object {number}")
        return self.objects[number]


def answer(
    line: bytes, scope: dict[str, Any], handles: Handles, results: list[Any], snapshot: dict[str, Any]
) -> list[Any]:
    """One request of the checker (or of the host, for function-call tests), answered in this process.
    `results` holds what each earlier request returned: a target ["r", k] is request k's result."""
    register, reference = handles.register, handles.get
    results.append(None)  # this request's, replaced below if it succeeds

    flags = 0
    try:
        op, target, attrs, args, kwargs, sync = _values.loads(line, reference)
        if type(target) is str:
            if target not in scope:
                raise NameError(f"name {target!r} is not defined")
            target = scope[target]
        elif type(target) is list:
            if not (len(target) == 2 and target[0] == "r" and type(target[1]) is int):
                raise ValueError("a target ['r', k] names request k's result")
            if not 0 <= target[1] < len(results) - 1 or results[target[1]] is None:
                raise ValueError(f"request {target[1]} returned nothing to use")
            target = results[target[1]][0]
        for attr in attrs:
            target = getattr(target, attr)
        before = _mutable_args(args, kwargs, register) if sync and op == "call" else {}
        if op == "call":
            result = target(*args, **kwargs)
        elif op == "get":
            result = target
        elif op == "iter":
            result = iter(target)
        elif op == "next":
            items, done = [], False
            for _ in range(min(int(args[0]), 4096)):
                try:
                    items.append(next(target))
                except StopIteration:
                    done = True
                    break
            result = (items, done)
        elif op == "len":
            result = len(target)
        elif op == "getitem":
            result = target[args[0]]
        else:
            raise ValueError(f"unknown request {op!r}")
        results[-1] = (result,)
        value, flags = _values.encode(result, register)
        changed = []
        for position, text in before.items():
            now, more = _values.encode(
                args[position] if type(position) is int else kwargs[position], register
            )
            flags |= more
            if _values.dumps(now) != text:
                changed.append([position, now])
        if _builtins_changed(snapshot):
            flags |= _checker.BUILTINS_CHANGED
        return ["v", value, flags, changed]
    except BaseException as exc:
        with suppress(BaseException):
            traceback.print_exception(type(exc), exc, exc.__traceback__, limit=5)
        with suppress(BaseException):
            if _builtins_changed(snapshot):
                flags |= _checker.BUILTINS_CHANGED
        return ["e", type(exc).__name__[:100], flags, _safe_str(exc), not isinstance(exc, Exception)]


def serve(scope: dict[str, Any], snapshot: dict[str, Any], max_line: int) -> None:
    """Answer requests (one JSON line each) until the requester closes its end."""
    reader = _checker.LineReader(REQUESTS_FD, max_line)
    handles, results = Handles(), []
    while True:
        line = reader.readline()
        if line is None:
            return
        write_line(VALUES_FD, answer(line, scope, handles, results, snapshot))


def run_program(code: str, workdir: str, serve_requests: bool, max_line: int) -> int:
    """Run the program's code, report how it ended, serve calls; returns the exit status."""
    scope: dict[str, Any] = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "__file__": workdir + "/solution.py",
    }
    snapshot = dict(builtins.__dict__)
    flags, status = 0, 0
    try:
        exec(compile(code, "solution.py", "exec"), scope)
    except SystemExit as exc:
        flags |= _checker.EXITED
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException:
        kind, value, tb = sys.exc_info()
        # from the program's frame on, not ours
        traceback.print_exception(kind, value, tb.tb_next if tb is not None else None)
        flags |= _checker.RAISED
        status = 1
    if _builtins_changed(snapshot):
        flags |= _checker.BUILTINS_CHANGED
    shadowed = sorted(n for n in list(scope) if type(n) is str and n in snapshot and not n.startswith("__"))
    with suppress(OSError):  # a program that closed the pipe loses only its hygiene report
        write_line(VALUES_FD, ["L", flags, shadowed[:100]])
    if serve_requests and not flags & (_checker.EXITED | _checker.RAISED):
        serve(scope, snapshot, max_line)
    atexit._run_exitfuncs()
    return status


def solution_process(params: dict[str, Any], fds: dict[int, int]) -> NoReturn:
    """In a child of the fork server: read the code, confine, run it; never returns."""
    status, phase = SETUP_FAILED, "set-up"
    try:
        install_fds(fds)
        code = read_all(CODE_FD, MAX_CODE_BYTES).decode("utf-8", "replace")
        os.close(CODE_FD)
        workdir = params["workdir"]
        confine(params, workdir)
        with open(workdir + "/solution.py", "w", encoding="utf-8") as handle:
            handle.write(code)  # tracebacks then show the failing line
        # Fresh stream objects on the run's pipes.
        sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        sys.stderr = open(  # noqa: SIM115
            2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
        )
        sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr  # type: ignore[misc]
        sys.argv = ["solution.py"]
        phase = "program"
        status = 1
        status = run_program(code, workdir, params["serve"], params["max_line"])
        for stream in (sys.stdout, sys.stderr):
            with suppress(BaseException):
                stream.flush()
    except BaseException:
        if phase == "set-up":  # the confinement itself failed: say why on the run's stderr
            with suppress(BaseException):
                os.write(2, ("sandbox set-up failed: " + traceback.format_exc(limit=2)).encode())
    finally:
        os._exit(status & 0xFF)


CHECKER_MEMORY = 1 << 30  # the checker's address space: decoded values are at most an output cap
CHECKER_RUNS = 200  # runs a checker serves before it is replaced (bounds any drift of its state)
# Verdicts after which the checker is replaced: the program misbehaved, or the test did.
CHECKER_RETIRES_ON = ("candidate_exited", "candidate_error", "test_error", "error")


def checker_process(params: dict[str, Any], fds: dict[int, int]) -> NoReturn:
    """In a child of the fork server: the sandbox's checker, serving one assert test per run.

    Each run arrives on its socket (fd 3) as a header and three descriptors: the pipe to the
    program's requests, the pipe of its values, and the pipe the test comes on. The verdict goes
    back on the socket, which no program ever holds. Long-lived, so that a run does not pay for a
    fresh process (fork, copy-on-write faults, start-up: ~3 ms of CPU); the runner replaces it
    after a failed or odd run, after CHECKER_RUNS runs, and whenever a program killed or stopped it.
    """
    status = SETUP_FAILED
    try:
        install_fds(fds)
        limits = params["limits"]
        # No CPU limit (it would count every run): the runner's wall-clock limit stops a stuck test.
        own = {**limits, "memory_bytes": CHECKER_MEMORY, "file_bytes": 0, "open_files": 64}
        confine({**params, "limits": own}, "/", cpu_limit=False)
        sock = socket.socket(fileno=3)
        status = 0
        while True:
            header, run_fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 3)
            if not header:
                break  # the runner retired us
            requests_fd, values_fd, test_fd = run_fds
            try:
                test = json.loads(read_all(test_fd, 256 << 20))
                conn = _checker.Connection(requests_fd, values_fd, json.loads(header)["max_line"])
                verdict = _checker.run_check(
                    test["code"], test.get("entry_point"), conn, int(test.get("seed", 0))
                )
            except Exception:
                reason = "the checker failed: " + traceback.format_exc(limit=3)[-800:]
                verdict = {"status": "error", "reason": reason, "flags": 0, "calls": 0}
            # The verdict first: the program learns that the test is over (its requests end) only
            # after it, so it cannot stop this process between the two.
            sock.send(_values.dumps(verdict).encode())
            for fd in run_fds:
                os.close(fd)
    except BaseException:
        status = 1
    finally:
        os._exit(status)


ROLES: dict[str, Callable[[dict[str, Any], dict[int, int]], NoReturn]] = {
    "solution": solution_process,
    "checker": checker_process,
}


# --- the fork server ------------------------------------------------------------------------------


def fork_server_loop(sock: socket.socket) -> NoReturn:
    """Fork a run's processes on request and report their exits; it never sees a run's data."""
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        keep = sock.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 16)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        children: dict[int, int] = {}  # pidfd -> pid
        poller = select.poll()
        poller.register(keep, select.POLLIN)
        while True:
            for fd, _event in poller.poll():
                if fd != keep:
                    pid = children.pop(fd)
                    poller.unregister(fd)
                    os.close(fd)
                    _, status, usage = os.wait4(pid, 0)
                    cpu = usage.ru_utime + usage.ru_stime
                    sock.send(json.dumps({"exit": pid, "status": status, "cpu": cpu}).encode())
                    continue
                message, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 32)
                if not message:
                    os._exit(0)
                pids, used = [], 0
                for request in json.loads(message):  # the run's processes, in order
                    mine = fds[used : used + len(request["targets"])]
                    used += len(mine)
                    pid = os.fork()
                    if pid == 0:
                        targets = {target: mine[i] for i, target in enumerate(request["targets"])}
                        ROLES[request["role"]](request["params"], targets)
                    pidfd = os.pidfd_open(pid)
                    children[pidfd] = pid
                    poller.register(pidfd, select.POLLIN)
                    pids.append(pid)
                for passed in fds:
                    os.close(passed)
                sock.send(json.dumps({"pids": pids}).encode())
    except BaseException:
        pass
    os._exit(1)


class ForkServer:
    """The runner's side of the fork server."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            self.sock.close()
            fork_server_loop(theirs)
        theirs.close()
        self.pid = pid
        self.exits: dict[int, tuple[int, float]] = {}  # pid -> (wait status, CPU seconds)
        self.current: set[int] = set()  # the run's processes: exit reports of others are stale

    def fileno(self) -> int:
        return self.sock.fileno()

    def _receive(self, timeout: float | None) -> dict[str, Any]:
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if not readable:
            raise RuntimeError("the fork server does not answer")  # stopped: the host replaces us
        message = self.sock.recv(1 << 16)
        if not message:
            raise RuntimeError("the fork server died")  # killed by a program: the host replaces us
        reply = json.loads(message)
        if "exit" in reply and reply["exit"] in self.current:
            self.exits[reply["exit"]] = (reply["status"], reply["cpu"])
        return dict(reply)

    def spawn(self, processes: list[tuple[str, dict[str, Any], dict[int, int]]]) -> list[int]:
        """Fork (role, params, {target fd: our fd}) processes, in order, in one round trip."""
        self.collect()
        self.exits.clear()
        requests, fds = [], []
        for role, params, mapping in processes:
            targets = sorted(t for t, fd in mapping.items() if fd >= 0)
            requests.append({"role": role, "params": params, "targets": targets})
            fds += [mapping[t] for t in targets]
        socket.send_fds(self.sock, [json.dumps(requests).encode()], fds)
        deadline = time.monotonic() + 10.0
        while True:
            reply = self._receive(max(0.0, deadline - time.monotonic()))
            if "pids" in reply:
                self.current = set(reply["pids"])
                self.collect()  # a process may already have exited
                return [int(pid) for pid in reply["pids"]]

    def collect(self) -> None:
        """Take in every exit report already sent."""
        while select.select([self.sock], [], [], 0)[0]:
            self._receive(0)

    def wait_exits(self, pids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(pid not in self.exits for pid in pids):
            self._receive(max(0.0, deadline - time.monotonic()))


def _live(pid: int) -> bool:
    """True unless `pid` is gone or a zombie (dead, waiting to be reaped: it can do nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def cpu_seconds(pid: int) -> float:
    """CPU seconds `pid` has used (utime + stime of /proc/<pid>/stat); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return 0.0


F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def prefill(feeds: dict[int, bytes], pipes: _Pipes) -> dict[int, bytes]:
    """Write each input into its pipe now, as far as it fits (pipes grown to up to 1 MiB, the
    unprivileged maximum); inputs written whole are closed. Returns what is left to write."""
    left = {}
    for fd, data in feeds.items():
        if len(data) > 65536:
            with suppress(OSError):
                fcntl.fcntl(fd, F_SETPIPE_SZ, min(len(data), 1 << 20))
        os.set_blocking(fd, False)
        written = 0
        with suppress(BlockingIOError):
            while written < len(data):
                written += os.write(fd, data[written : written + (1 << 20)])
        if written < len(data):
            left[fd] = data[written:]
        else:
            pipes.close(fd)
    return left


class Checker:
    """The runner's side of the sandbox's checker process."""

    def __init__(self, server: ForkServer, params: dict[str, Any]) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            (self.pid,) = server.spawn([("checker", {**params, "workdir": "/"}, {3: theirs.fileno()})])
        finally:
            theirs.close()
        self.runs = 0

    def healthy(self) -> bool:
        """Alive and not stopped. A program may have stopped it: continue it first."""
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)
        try:
            with open(f"/proc/{self.pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state in ("S", "R", "D") and not select.select([self.sock], [], [], 0)[0]

    def retire(self) -> None:
        with suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.sock.close()


def kill_run(server: ForkServer, known: set[int], spare: int | None = None) -> int:
    """SIGKILL every process of the sandbox but its init, this runner and the fork server; reap the
    orphans (ours, as child subreaper); the fork server reaps the run's own processes. Returns how
    many processes there were besides the run's own."""
    with suppress(ProcessLookupError):
        os.kill(server.pid, signal.SIGCONT)  # a program may have stopped it; it must reap
    keep = {server.pid, spare}
    leftovers = len([p for p in other_pids() if p not in keep and p not in known and _live(p)])
    deadline = time.monotonic() + 5.0
    while True:
        alive = [p for p in other_pids() if p not in keep and _live(p)]
        pidfds = []
        for pid in alive:
            with suppress(ProcessLookupError):
                pidfds.append(os.pidfd_open(pid))
                os.kill(pid, signal.SIGKILL)
        try:  # wait for their deaths (a pidfd turns readable at exit), not a fixed sleep
            remaining = set(pidfds)
            while remaining and time.monotonic() < deadline:
                ready, _, _ = select.select(list(remaining), [], [], max(0.0, deadline - time.monotonic()))
                remaining -= set(ready)
        finally:
            for pidfd in pidfds:
                os.close(pidfd)
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == server.pid:
                raise RuntimeError("the fork server died")
        if not alive:
            return leftovers
        if time.monotonic() > deadline:
            raise RuntimeError("processes survived SIGKILL")  # the host replaces this sandbox
        time.sleep(0.001)


# --- one run --------------------------------------------------------------------------------------


class _Pipes:
    """The run's pipes; whatever is still open at the end is closed."""

    def __init__(self) -> None:
        self.open: set[int] = set()

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.open.update((r, w))
        return r, w

    def close(self, *fds: int) -> None:
        for fd in fds:
            if fd in self.open:
                self.open.discard(fd)
                os.close(fd)

    def close_all(self) -> None:
        self.close(*list(self.open))


class Sandbox:
    """What outlives runs: the fork server, the checker (None until an assert test needs it)."""

    def __init__(self) -> None:
        self.server = ForkServer()
        self.base_processes = 1 + len(other_pids()) + 1  # bwrap's init + the fork server + this runner
        self.checker: Checker | None = None

    def ready_checker(self, params: dict[str, Any]) -> Checker:
        if self.checker is not None and not self.checker.healthy():
            self.retire_checker()
        if self.checker is None:
            self.checker = Checker(self.server, params)
        return self.checker

    def retire_checker(self) -> None:
        if self.checker is not None:
            self.checker.retire()
            self.checker = None


def run(job: dict[str, Any], box: Sandbox) -> dict[str, Any]:
    limits, test = job["limits"], job["test"]
    kind = test["kind"]
    cap = int(limits["output_bytes"])
    workdir = f"{WORK_ROOT}/run-{os.urandom(8).hex()}"  # unpredictable: nothing can be planted there
    os.mkdir(workdir, 0o700)
    # RLIMIT_NPROC counts the uid's processes: the checker's too, while there is one.
    nproc = box.base_processes + int(limits["processes"]) + 1
    params = {"workdir": workdir, "limits": limits, "serve": kind != "stdio", "max_line": cap, "nproc": nproc}
    checker = box.ready_checker(params) if kind == "check" else None
    params["nproc"] = nproc - (box.checker is None)
    pipes = _Pipes()
    ender: int | None = None
    try:
        stdin_r, stdin_w = pipes.pipe()
        stdout_r, stdout_w = pipes.pipe()
        stderr_r, stderr_w = pipes.pipe()
        code_r, code_w = pipes.pipe()
        values_r, values_w = pipes.pipe()
        requests_r, requests_w = pipes.pipe() if kind != "stdio" else (-1, -1)
        feeds = {stdin_w: test.get("stdin", "").encode(), code_w: job["code"].encode()}
        sinks = {stdout_r: bytearray(), stderr_r: bytearray()}
        if checker is not None:
            test_r, test_w = pipes.pipe()
            header = json.dumps({"max_line": cap}).encode()
            socket.send_fds(checker.sock, [header], [requests_w, values_r, test_r])
            pipes.close(requests_w, values_r, test_r)
            feeds[test_w] = json.dumps(test["check"]).encode()
        else:
            sinks[values_r] = bytearray()
            if kind == "call":
                feeds[requests_w] = "".join(line + "\n" for line in test["requests"]).encode()
        feeds = prefill(feeds, pipes)  # what fits now: the processes need not wait for us to run
        solution_fds = {
            0: stdin_r,
            1: stdout_w,
            2: stderr_w,
            REQUESTS_FD: requests_r,
            VALUES_FD: values_w,
            CODE_FD: code_r,
        }
        started = time.monotonic()
        (pid,) = box.server.spawn([("solution", params, solution_fds)])
        pipes.close(*solution_fds.values())
        # The run ends when the program exits; for an assert test, when the checker's verdict comes
        # (or its socket closes: it died). The program's exit is watched through a pidfd, not the fork
        # server's report, which may wait for a CPU behind the program.
        if checker is not None:
            ender = checker.sock.fileno()
        else:
            with suppress(ProcessLookupError):  # else it already exited and was reaped
                ender = os.pidfd_open(pid)
        exempt = {box.server.pid, checker.pid if checker is not None else -1}
        outcome, wall = supervise(pid, ender, exempt, limits, pipes, feeds, sinks, stderr_r, started)
        verdict = None
        if checker is not None:
            ender = None  # the checker's socket is not ours to close
            if outcome is None:
                with suppress(OSError, ValueError):
                    verdict = json.loads(checker.sock.recv(1 << 20, socket.MSG_DONTWAIT))
            if not isinstance(verdict, dict):
                box.retire_checker()  # timed out, died, or answered nonsense: a fresh one next time
        ended_itself = not _live(pid)
        cpu = cpu_seconds(pid)
        leftovers = kill_run(box.server, {pid}, spare=box.checker.pid if box.checker is not None else None)
        if ended_itself:  # its exit status comes from the fork server, its parent
            box.server.wait_exits([pid], 5.0)
        if box.checker is not None and checker is not None:
            box.checker.runs += 1
            if box.checker.runs >= CHECKER_RUNS or (verdict or {}).get("status") in CHECKER_RETIRES_ON:
                box.retire_checker()
    finally:
        if ender is not None:
            os.close(ender)
        pipes.close_all()
    # Wipe the whole tmpfs, not only the run's directory: a file left anywhere writable would let a
    # later program (another sample) read what this one stored. No process is left to recreate one.
    for name in os.listdir(WORK_ROOT):
        remove_tree(os.path.join(WORK_ROOT, name))
    if os.listdir(WORK_ROOT):
        raise RuntimeError("the work tmpfs could not be emptied")  # the host replaces this sandbox
    # Killed by us (after the check, or at a limit): a SIGKILL status, the CPU it had used by then.
    status, cpu = box.server.exits.get(pid, (signal.SIGKILL, cpu))
    stdout, stderr = sinks[stdout_r], sinks[stderr_r]
    result: dict[str, Any] = {
        "outcome": outcome or "exited",
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "ended_itself": ended_itself,
        "stdout": bytes(stdout[:cap]).decode("utf-8", "replace"),
        "stdout_bytes": len(stdout),
        "stderr_tail": bytes(stderr[-4096:]).decode("utf-8", "replace"),
        "stderr_bytes": len(stderr),
        "wall_s": wall,
        "cpu_s": cpu,
        "leftover_processes": leftovers,
    }
    if checker is not None:
        result["verdict"] = verdict
    else:
        result["values"] = bytes(sinks[values_r][: cap + 4096]).decode("utf-8", "replace")
    return result


def _ended(pidfd: int | None) -> bool:
    return pidfd is None or bool(select.select([pidfd], [], [], 0)[0])


def supervise(
    pid: int,
    ender: int | None,
    exempt: set[int],
    limits: dict[str, Any],
    pipes: _Pipes,
    feeds: dict[int, bytes],
    sinks: dict[int, bytearray],
    stderr_fd: int,
    started: float,
) -> tuple[str | None, float]:
    """Feed inputs, drain outputs and enforce the limits until `ender` turns readable (None: the run
    already ended). Returns (outcome: None, "timeout" or "output_limit", wall seconds). `exempt`:
    processes that are not the run's (their CPU is not the program's)."""
    cap = int(limits["output_bytes"])
    views = {fd: memoryview(data) for fd, data in feeds.items()}
    poller = select.poll()
    for fd, view in list(views.items()):
        if view:
            os.set_blocking(fd, False)
            poller.register(fd, select.POLLOUT)
        else:
            pipes.close(fd)
            del views[fd]
    for fd in sinks:
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    if ender is not None:
        poller.register(ender, select.POLLIN)
    timeout = float(limits["timeout_s"])
    hard_deadline = started + float(limits["max_wall_s"])
    born = start_time(pid)
    outcome, ended = None, ender is None
    while outcome is None and not ended:
        # The limit counts the time the program ran or slept, not the time it waited for a CPU that
        # processes outside the run held (at idle priority it yields to all of them): its age minus
        # its run-queue delay, less the CPU its own other processes took (a fork bomb's children
        # delay it too, and that delay is its own), up to a hard wall-clock cap. Its age counts from
        # its own start, so a runner kept waiting before the fork does not eat the program's time.
        age = (
            time.clock_gettime(time.CLOCK_BOOTTIME) - born if born is not None else time.monotonic() - started
        )
        waited = max(0.0, run_delay(pid) - cpu_of_others(pid, exempt))
        remaining = min(timeout - (age - waited), hard_deadline - time.monotonic())
        if remaining <= 0:
            if not _ended(ender):  # it did finish; we only noticed late
                outcome = "timeout"
            break
        for fd, _event in poller.poll(remaining * 1000):
            if fd == ender:
                ended = True
            elif fd in views:
                try:
                    views[fd] = views[fd][os.write(fd, views[fd][:65536]) :]
                except BlockingIOError:
                    continue
                except BrokenPipeError:  # the reader stopped reading: fine
                    views[fd] = views[fd][:0]
                if not views[fd]:
                    poller.unregister(fd)
                    pipes.close(fd)
                    del views[fd]
            else:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    poller.unregister(fd)
                    continue
                sinks[fd] += chunk
                if fd == stderr_fd and len(sinks[fd]) > 2 * 65536:  # stderr: keep the tail
                    sinks[fd][:] = sinks[fd][-65536:]
                elif len(sinks[fd]) > cap:
                    outcome = "output_limit"
                    break
    wall = time.monotonic() - started
    if outcome is None:  # collect what was written before the end
        for fd, sink in sinks.items():
            while len(sink) <= cap:
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                sink += chunk
            if len(sink) > cap and fd != stderr_fd:
                outcome = "output_limit"
    return outcome, wall


def _preload() -> None:
    for name in PRELOAD:
        with suppress(ImportError):
            __import__(name)
    # Objects made so far are never collected: the garbage collector of a forked process then
    # leaves them alone instead of touching (and so copying) every page of the shared heap.
    gc.collect()
    gc.freeze()


def main() -> int:
    proto_in, proto_out = 0, 1
    # Set before going non-dumpable, while /proc/self is still ours to write.
    autogroup_lowered = LOW_PRIORITY and lower_autogroup(19)
    # Non-dumpable (inherited by the fork server and every run's process): same-uid code cannot
    # ptrace us, the fork server or the checker, nor open their /proc fds or memory.
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # Orphans of a run are re-parented to us (not to bwrap's init), so we can reap them all.
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    _preload()
    box = Sandbox()
    write_frame(
        proto_out,
        {
            "ready": True,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "base_processes": box.base_processes,
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
            reply = run(job, box)
        except Exception:
            reply = {"outcome": "runner_error", "error": traceback.format_exc(limit=3), "restart": True}
            write_frame(proto_out, reply)
            return 2  # a runner in an unknown state is replaced, not reused
        write_frame(proto_out, reply)


if __name__ == "__main__":
    sys.exit(main())
