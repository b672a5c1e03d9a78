"""Warm worker processes with a wall-clock limit per call, and a pool to lease them from.

A worker is a long-lived child process (a math/IFEval Python worker, or a bubblewrap sandbox)
that answers length-prefixed JSON frames on its stdin/stdout; a reply with "restart": true says
it cannot take another call (it is then replaced before the next one). A call that does not answer within
its deadline kills the worker's whole process group and the next call starts a fresh one, so a
hung check costs one restart, never a stuck scorer.

Each worker has its own thread that spawns the process and does all I/O with it. That is not
only tidy: bubblewrap's --die-with-parent (PR_SET_PDEATHSIG) fires when the *thread* that forked
it exits, so a sandbox spawned from a short-lived request thread would be killed under a test.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

_HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # a reply larger than this is a broken worker, not a result


class WorkerStartError(RuntimeError):
    """A worker process could not be started (missing binary, bad sandbox set-up)."""


@dataclass
class Reply:
    """What one call produced: status "ok" with the worker's message, "timeout" or "crashed"."""

    status: str
    message: dict[str, Any] | None = None
    elapsed_s: float = 0.0
    detail: str = ""


def encode_frame(obj: Any) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(data)) + data


class _Deadline(Exception):
    pass


class _Closed(Exception):
    pass


def _write_all(fd: int, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Deadline()
        _, writable, _ = select.select([], [fd], [], remaining)
        if not writable:
            raise _Deadline()
        try:
            written = os.write(fd, view[: 1 << 16])
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _Closed() from exc
        view = view[written:]


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Deadline()
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                raise _Deadline()
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise _Closed()
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_frame(fd: int, obj: Any) -> None:
    """Blocking write of a whole frame (os.write may write part of it when a signal interrupts)."""
    view = memoryview(encode_frame(obj))
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int, deadline: float | None) -> dict[str, Any]:
    """Read one frame; `deadline` is a time.monotonic() value, None to wait for ever."""
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > MAX_FRAME:
        raise _Closed()
    message = json.loads(_read_exact(fd, size, deadline))
    if not isinstance(message, dict):
        raise _Closed()
    return message


@dataclass
class WorkerSpec:
    """How to start one kind of worker.

    argv: the command. ready_timeout_s: how long start-up (imports, sandbox set-up) may take
    before the worker counts as broken. popen_kwargs: extra subprocess.Popen arguments (user,
    group, env, cwd). on_kill: called with a reason ("timeout", "crashed") when a worker is killed
    or found dead, for metrics.
    """

    name: str
    argv: Sequence[str]
    ready_timeout_s: float = 60.0
    popen_kwargs: Mapping[str, Any] = field(default_factory=dict)
    on_kill: Callable[[str], None] | None = None


class Worker:
    """One warm process served by its own thread; `call` blocks until the reply or the deadline."""

    def __init__(self, spec: WorkerSpec, index: int) -> None:
        self.spec = spec
        self.index = index
        self.restarts = 0
        self.ready_info: dict[str, Any] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._jobs: queue.Queue[tuple[Any, float, Future[Reply]] | None] = queue.Queue()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"{spec.name}-worker-{index}", daemon=True)
        self._thread.start()

    # --- called from other threads ---------------------------------------------------------------

    def wait_started(self, timeout: float | None = None) -> None:
        """Block until the first start-up finished; re-raise its error (e.g. bwrap missing)."""
        self._started.wait(timeout)
        if self._start_error is not None:
            raise WorkerStartError(f"{self.spec.name} worker {self.index}: {self._start_error}")

    def call(self, payload: Any, timeout_s: float) -> Reply:
        future: Future[Reply] = Future()
        self._jobs.put((payload, timeout_s, future))
        return future.result()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)

    # --- the worker's own thread -------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._spawn()
        except BaseException as exc:  # reported by wait_started; later calls retry the spawn
            self._start_error = exc
        self._started.set()
        while True:
            job = self._jobs.get()
            if job is None:
                break
            payload, timeout_s, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._call(payload, timeout_s))
            except BaseException as exc:
                future.set_exception(exc)
            if self._proc is None:  # killed or died in that call: be warm again before the next one
                with suppress(Exception):  # a failure here repeats, and is reported, on the next call
                    self.restarts += 1
                    self._spawn()
        self._kill()

    def _spawn(self) -> None:
        deadline = time.monotonic() + self.spec.ready_timeout_s
        try:
            proc = subprocess.Popen(
                list(self.spec.argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,  # its own process group: one killpg ends it and its children
                close_fds=True,
                **dict(self.spec.popen_kwargs),
            )
        except OSError as exc:
            raise WorkerStartError(f"cannot start {self.spec.argv[0]!r}: {exc}") from exc
        self._proc = proc
        assert proc.stdout is not None
        try:
            ready = read_frame(proc.stdout.fileno(), deadline)
        except (_Deadline, _Closed, ValueError) as exc:
            self._kill()
            code = proc.poll()
            raise WorkerStartError(
                f"{self.spec.name} worker did not report ready (exit code {code}; {type(exc).__name__})"
            ) from None
        if not ready.get("ready"):
            self._kill()
            raise WorkerStartError(f"{self.spec.name} worker failed to start: {ready.get('error', ready)}")
        self.ready_info = ready

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()

    def _call(self, payload: Any, timeout_s: float) -> Reply:
        start = time.monotonic()
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:  # died while idle
                self._kill()
                self._report("crashed")
            self.restarts += 1
            self._spawn()  # may raise WorkerStartError: the caller reports it
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        deadline = start + timeout_s
        try:
            _write_all(proc.stdin.fileno(), encode_frame(payload), deadline)
            message = read_frame(proc.stdout.fileno(), deadline)
        except _Deadline:
            self._kill()
            self._report("timeout")
            return Reply("timeout", None, time.monotonic() - start, f"no answer within {timeout_s:.3g} s")
        except (_Closed, ValueError):
            code = proc.poll()
            self._kill()
            self._report("crashed")
            return Reply("crashed", None, time.monotonic() - start, f"worker died (exit code {code})")
        if message.get("restart"):  # the worker answered but is no longer usable: replace it now
            self._kill()
            self._report("crashed")
        return Reply("ok", message, time.monotonic() - start)

    def _report(self, reason: str) -> None:
        if self.spec.on_kill is not None:
            self.spec.on_kill(reason)


class WorkerPool:
    """A fixed number of warm workers; `lease()` hands out an idle one (blocking while all are busy)."""

    def __init__(self, spec: WorkerSpec, size: int) -> None:
        if size < 1:
            raise ValueError(f"{spec.name} pool size must be >= 1, got {size}")
        self.spec = spec
        self.workers = [Worker(spec, i) for i in range(size)]
        self._idle: queue.Queue[Worker] = queue.Queue()
        for worker in self.workers:
            self._idle.put(worker)
        self._waiting = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def size(self) -> int:
        return len(self.workers)

    def wait_started(self) -> None:
        """Wait for every worker's first start; raise if one could not start."""
        for worker in self.workers:
            worker.wait_started()

    @contextmanager
    def lease(self) -> Iterator[Worker]:
        if self._closed:
            raise RuntimeError(f"{self.spec.name} pool is closed")
        with self._lock:
            self._waiting += 1
        try:
            worker = self._idle.get()
        finally:
            with self._lock:
                self._waiting -= 1
        try:
            yield worker
        finally:
            self._idle.put(worker)

    def busy(self) -> int:
        """Workers leased now plus callers waiting for one: the pool's load, for back-pressure."""
        with self._lock:
            return self.size - self._idle.qsize() + self._waiting

    def pids(self) -> list[int]:
        return [pid for worker in self.workers if (pid := worker.pid) is not None]

    def close(self) -> None:
        self._closed = True
        for worker in self.workers:
            worker.close()
