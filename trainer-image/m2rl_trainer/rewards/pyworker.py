"""A warm Python worker process for the in-process-safe verifiers (math, IFEval).

Started by the scorer as `python -m m2rl_trainer.rewards.pyworker [PRELOAD...]`. It answers
frames {"verifier", "response", "reference", "options"} with {"result": {...}} or {"error": "..."},
running each check on its main thread, where math-verify's and our own signal-based timers work.
The parent kills it when a check overruns its wall-clock limit (C code ignores signals).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
import traceback
from contextlib import suppress
from typing import Any

from m2rl_trainer.rewards.workers import _Closed, read_frame, write_frame

_PR_SET_PDEATHSIG = 1


def _protocol_fds() -> tuple[int, int]:
    """Move the protocol pipes off fds 0/1, so a library's stray print cannot corrupt a frame."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # print() now lands on stderr
    return proto_in, proto_out


def _die_with_parent() -> None:
    with suppress(OSError, AttributeError):  # not Linux: the parent still kills us on close
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def handle(message: dict[str, Any]) -> dict[str, Any]:
    from m2rl_trainer.rewards.registry import get_verifier

    spec = get_verifier(message["verifier"])
    options = spec.parse_options(message.get("options") or {})
    start = time.monotonic()
    result = spec.verify(message["response"], message["reference"], options)
    result.time_s = time.monotonic() - start
    return {"result": result.to_dict()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    proto_in, proto_out = _protocol_fds()
    try:
        from m2rl_trainer.rewards.ifeval_verifier import register_checkers_only_package
        from m2rl_trainer.rewards.registry import get_verifier

        register_checkers_only_package()

        for name in argv:  # warm the imports now, not on the first request (IFEval's take ~2 s)
            get_verifier(name).warm_up()
    except Exception as exc:
        write_frame(proto_out, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    write_frame(proto_out, {"ready": True, "pid": os.getpid()})
    while True:
        try:
            message = read_frame(proto_in, None)
        except _Closed:
            return 0  # the parent closed our stdin: shut down
        try:
            reply = handle(message)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
        write_frame(proto_out, reply)


if __name__ == "__main__":
    sys.exit(main())
