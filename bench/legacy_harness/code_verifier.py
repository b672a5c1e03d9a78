"""Code: run the response's last fenced Python block against tests inside the sandbox.

Extraction: the last block fenced as python/py/python3; when there is none, the last untagged
fenced block. No block: verdict no_answer.

Reference: {"tests": [...]} with tests in three styles (mixing is allowed):
  {"stdin": "1 2\\n", "stdout": "3\\n"}                    program reads stdin, prints the answer
  {"call": "add", "args": [1, 2], "kwargs": {}, "expected": 3}   call a function ("Class.method"
                                                           calls it on a fresh instance)
  {"assert": "assert add(1, 2) == 3"}                      run statements after the code
or the common dataset shorthand {"inputs": ["1 2\\n", ...], "outputs": ["3\\n", ...]} (stdin/stdout).

Expected stdout and expected return values never enter the sandbox: the host compares them. An
assert test passes when the test code ran to its end (the runner's per-run token reached the result
pipe); code that exits early (sys.exit(0), os._exit(0)) does not pass it. Code that inspects its own
interpreter's frames could find that token: assert tests are as trustworthy as asserts are in any
in-process harness, the other two styles are not exposed to that.

Scoring: all_pass (the M2RL study: 1 only if every sampled test passes; stops at the first
failure) or fraction (share of sampled tests passed). `max_tests` samples up to N tests per problem
with a seed and the tests' hash, so training and re-scoring pick the same subset.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from m2rl_trainer.rewards.common import apply_think_gate
from m2rl_trainer.rewards.options import CommonOptions, opt
from m2rl_trainer.rewards.types import (
    CORRECT,
    INCORRECT,
    MEMORY_LIMIT,
    NO_ANSWER,
    OUTPUT_LIMIT,
    SANDBOX_ERROR,
    TIMEOUT,
    ConfigError,
    Result,
)
from m2rl_trainer.rewards.workers import Reply

NAME = "code"
SETUP_FAILED = 70  # the runner's child exits with this when confining itself failed

# Per-test statuses, and the sample verdict the first failing one gives.
PASSED, WRONG_ANSWER, RUNTIME_ERROR, SKIPPED = "passed", "wrong_answer", "runtime_error", "skipped"
STATUS_VERDICT = {
    WRONG_ANSWER: INCORRECT,
    RUNTIME_ERROR: INCORRECT,
    "timeout": TIMEOUT,
    "memory_limit": MEMORY_LIMIT,
    "output_limit": OUTPUT_LIMIT,
    "sandbox_error": SANDBOX_ERROR,
}


@dataclass(frozen=True)
class CodeOptions(CommonOptions):
    scoring: str = opt(
        "all_pass",
        "all_pass: 1 only if every sampled test passes (the study); fraction: share passed.",
        choices=("all_pass", "fraction"),
    )
    max_tests: int | None = opt(
        None, "Run at most this many tests per problem (a seeded sample); null: all.", min=1
    )
    seed: int = opt(0, "Seed of the test sample (combined with the tests' hash).")
    run_all_tests: bool = opt(False, "With all_pass, keep running after the first failure (for diagnostics).")
    timeout_s: float = opt(6.0, "Wall-clock limit of one test run, seconds.", min=0.05, max=120.0)
    cpu_time_s: float | None = opt(
        None, "CPU-seconds limit of one run (RLIMIT_CPU); null: timeout_s.", min=0.05, max=120.0
    )
    memory_mb: int = opt(
        512, "Address-space limit of each process of a run (RLIMIT_AS), MiB.", min=32, max=65536
    )
    max_processes: int = opt(
        8, "Processes/threads a run may have at once, itself included (RLIMIT_NPROC).", min=1, max=1024
    )
    max_file_mb: int = opt(16, "Largest file a run may write (RLIMIT_FSIZE), MiB.", min=0, max=4096)
    max_open_files: int = opt(64, "Open file descriptors per process (RLIMIT_NOFILE).", min=8, max=65536)
    output_limit_kb: int = opt(
        1024, "stdout cap of one run, KiB; past it the run is killed (output_limit).", min=1, max=262144
    )
    output_match: str = opt(
        "lines",
        "stdout comparison: lines (trailing spaces and blank lines ignored), exact, or tokens "
        "(whitespace-separated, numbers within float_tolerance).",
        choices=("lines", "exact", "tokens"),
    )
    float_tolerance: float = opt(
        1e-6, "Relative and absolute tolerance for floats (tokens mode, call results).", min=0.0, max=1.0
    )
    max_wall_factor: float = opt(
        4.0,
        "Hard wall-clock cap of a run as a multiple of timeout_s, however long it waited for a CPU. "
        "Only a program kept waiting by other processes gets near it: sleeping counts against timeout_s "
        "and spinning against the CPU limit.",
        min=1.0,
        max=20.0,
    )

    def check(self) -> str | None:
        if self.run_all_tests and self.scoring == "fraction":
            return (
                "option 'run_all_tests' only applies to scoring 'all_pass' (fraction always runs every test)"
            )
        return None


# --- reference --------------------------------------------------------------------------------------

_CALL_TARGET = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?")


def normalise_tests(reference: Any) -> list[dict[str, Any]]:
    """The reference's tests as runner jobs ({"kind", ...} plus "expected" kept on the host)."""
    if not isinstance(reference, Mapping):
        raise ConfigError(f"code reference: expected an object with 'tests', got {type(reference).__name__}")
    if "inputs" in reference or "outputs" in reference:
        inputs, outputs = reference.get("inputs"), reference.get("outputs")
        if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
            raise ConfigError("code reference: 'inputs' and 'outputs' must be lists of the same length")
        raw_tests: list[Any] = [{"stdin": i, "stdout": o} for i, o in zip(inputs, outputs, strict=True)]
    else:
        raw_tests = reference.get("tests")  # type: ignore[assignment]
        if not isinstance(raw_tests, list):
            raise ConfigError("code reference: 'tests' must be a list")
    if not raw_tests:
        raise ConfigError("code reference: no tests")
    tests = []
    for index, test in enumerate(raw_tests):
        where = f"code reference: test {index}"
        if not isinstance(test, Mapping):
            raise ConfigError(f"{where}: expected an object")
        if "stdout" in test:
            extra = set(test) - {"stdin", "stdout"}
            if extra or not isinstance(test["stdout"], str) or not isinstance(test.get("stdin", ""), str):
                raise ConfigError(f"{where}: stdin/stdout tests take string 'stdin' and 'stdout' only")
            tests.append({"kind": "stdio", "stdin": test.get("stdin", ""), "expected": test["stdout"]})
        elif "call" in test:
            extra = set(test) - {"call", "args", "kwargs", "expected"}
            if extra or "expected" not in test:
                raise ConfigError(f"{where}: call tests take 'call', 'args', 'kwargs' and 'expected'")
            if not isinstance(test["call"], str) or not _CALL_TARGET.fullmatch(test["call"]):
                raise ConfigError(f"{where}: 'call' must be a function name or Class.method")
            args, kwargs = test.get("args", []), test.get("kwargs", {})
            if not isinstance(args, list) or not isinstance(kwargs, Mapping):
                raise ConfigError(f"{where}: 'args' must be a list and 'kwargs' an object")
            tests.append(
                {
                    "kind": "call",
                    "fn": test["call"],
                    "args": args,
                    "kwargs": dict(kwargs),
                    "expected": test["expected"],
                }
            )
        elif "assert" in test:
            if set(test) != {"assert"} or not isinstance(test["assert"], str) or not test["assert"].strip():
                raise ConfigError(f"{where}: assert tests take one non-empty string 'assert'")
            try:
                compile(test["assert"], "test.py", "exec")
            except SyntaxError as exc:
                raise ConfigError(f"{where}: the assert code does not compile: {exc}") from exc
            tests.append({"kind": "assert", "code": test["assert"]})
        else:
            raise ConfigError(f"{where}: needs 'stdout' (stdin/stdout), 'call' or 'assert'")
    return tests


def check_reference(reference: Any, options: CodeOptions) -> None:
    normalise_tests(reference)


def sample_tests(tests: list[dict[str, Any]], options: CodeOptions) -> list[int]:
    """Indices of the tests to run, in reference order; the same for the same tests and seed."""
    if options.max_tests is None or len(tests) <= options.max_tests:
        return list(range(len(tests)))
    digest = hashlib.sha256(json.dumps(tests, sort_keys=True, default=str).encode()).hexdigest()
    rng = random.Random(f"{options.seed}:{digest}")
    return sorted(rng.sample(range(len(tests)), options.max_tests))


# --- extraction -------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The last ```python block; else the last untagged ``` block; else None."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    python = [code for tag, code in blocks if tag in ("python", "py", "python3")]
    if python:
        return python[-1]
    untagged = [code for tag, code in blocks if tag == ""]
    return untagged[-1] if untagged else None


# --- comparison -------------------------------------------------------------------------------------


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _close(a: float, b: float, tol: float) -> bool:
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def _token_equal(got: str, want: str, tol: float) -> bool:
    if got == want:
        return True
    try:
        return _close(float(got), float(want), tol)
    except ValueError:
        return False


def stdout_matches(got: str, want: str, options: CodeOptions) -> bool:
    if options.output_match == "exact":
        return got == want
    if options.output_match == "tokens":
        a, b = got.split(), want.split()
        tol = options.float_tolerance
        return len(a) == len(b) and all(_token_equal(x, y, tol) for x, y in zip(a, b, strict=True))
    return _lines(got) == _lines(want)


def values_equal(got: Any, want: Any, tol: float) -> bool:
    """JSON values equal, floats within tolerance (tuples arrive as lists, sets as sorted lists)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want if isinstance(got, bool) and isinstance(want, bool) else False
    if isinstance(want, int | float) and isinstance(got, int | float):
        return got == want or _close(float(got), float(want), tol)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(values_equal(g, w, tol) for g, w in zip(got, want, strict=False))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(values_equal(got[k], want[k], tol) for k in want)
    return bool(got == want)


# --- one test -----------------------------------------------------------------------------------------


def limits(options: CodeOptions) -> dict[str, Any]:
    """The runner's limit block for one run."""
    cpu = options.cpu_time_s if options.cpu_time_s is not None else options.timeout_s
    return {
        "timeout_s": options.timeout_s,
        "cpu_s": max(1, math.ceil(cpu)),  # RLIMIT_CPU has 1 s granularity; the wall clock is finer
        "memory_bytes": options.memory_mb * 1024 * 1024,
        "processes": options.max_processes,
        "file_bytes": options.max_file_mb * 1024 * 1024,
        "open_files": options.max_open_files,
        "output_bytes": options.output_limit_kb * 1024,
        "max_wall_s": options.timeout_s * options.max_wall_factor + 0.5,
    }


def classify(reply: Reply, test: dict[str, Any], options: CodeOptions) -> tuple[str, dict[str, Any]]:
    """(status, facts) of one run from the runner's report; the comparison happens here, on the host."""
    if reply.status == "timeout":
        return "timeout", {"reason": "sandbox unresponsive past the time limit; killed and replaced"}
    if reply.status == "crashed" or reply.message is None:
        return "sandbox_error", {"reason": f"sandbox died during the run ({reply.detail}); replaced"}
    msg = reply.message
    facts: dict[str, Any] = {"time_s": round(float(msg.get("wall_s", 0.0)), 4)}
    if msg.get("leftover_processes"):
        facts["killed_processes"] = msg["leftover_processes"]
    outcome = msg.get("outcome")
    if outcome == "runner_error":
        return "sandbox_error", {**facts, "reason": str(msg.get("error", ""))[-500:]}
    if outcome in ("timeout", "output_limit"):
        return outcome, facts
    stderr_tail = str(msg.get("stderr_tail", ""))
    last_line = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else ""
    cpu_limit = limits(options)["cpu_s"]
    cpu_used = float(msg.get("cpu_s", 0))
    sig = msg.get("signal")
    # SIGXCPU is RLIMIT_CPU's soft limit; SIGKILL with the CPU budget spent is its hard limit.
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= cpu_limit - 0.05):
        return "timeout", {**facts, "reason": "CPU-time limit"}
    if msg.get("exit_code") == SETUP_FAILED and stderr_tail.startswith("sandbox set-up failed"):
        return "sandbox_error", {**facts, "reason": stderr_tail[-800:]}  # not the program's fault
    if msg.get("exit_code") != 0:
        facts["stderr_tail"] = stderr_tail[-800:]
        if msg.get("signal") is not None:
            facts["signal"] = msg["signal"]
        if last_line.startswith("MemoryError"):
            return "memory_limit", facts
        if last_line.startswith("AssertionError"):
            return WRONG_ANSWER, facts
        return RUNTIME_ERROR, facts
    if test["kind"] == "stdio":
        ok = stdout_matches(str(msg.get("stdout", "")), test["expected"], options)
        if not ok:
            facts["stdout_head"] = str(msg.get("stdout", ""))[:200]
        return (PASSED if ok else WRONG_ANSWER), facts
    if not msg.get("completed"):
        return RUNTIME_ERROR, {**facts, "reason": "the program exited before the test finished"}
    if test["kind"] == "call":
        try:
            value = json.loads(msg.get("value") or "null")
        except ValueError:
            return WRONG_ANSWER, {**facts, "reason": "return value is not JSON"}
        ok = values_equal(value, test["expected"], options.float_tolerance)
        if not ok:
            facts["returned_head"] = str(msg.get("value"))[:200]
        return (PASSED if ok else WRONG_ANSWER), facts
    return PASSED, facts  # an assert test that ran to its end


RunOne = Callable[[dict[str, Any], float], Reply]
"""Runs one job in a sandbox; the float is the run's hard wall-clock cap in seconds, to which the
caller adds its grace before it gives up on the sandbox (see Scorer._run_code)."""


def verify(response: str, reference: Any, options: CodeOptions, run: RunOne) -> Result:
    """Score one response by running its code on the (sampled) tests through `run`."""
    text, gated = apply_think_gate(response, options)
    if gated is not None:
        return gated
    assert text is not None
    code = extract_code(text)
    if code is None or not code.strip():
        return Result(0.0, NO_ANSWER, {"reason": "no fenced Python code block"})
    tests = normalise_tests(reference)
    chosen = sample_tests(tests, options)
    run_limits = limits(options)
    statuses: list[dict[str, Any]] = []
    passed, stop = 0, False
    for index in chosen:
        test = tests[index]
        if stop:
            statuses.append({"index": index, "status": SKIPPED})
            continue
        job = {"code": code, "test": {k: v for k, v in test.items() if k != "expected"}, "limits": run_limits}
        reply = run(job, run_limits["max_wall_s"])
        status, facts = classify(reply, test, options)
        statuses.append({"index": index, "status": status, **facts})
        if status == PASSED:
            passed += 1
        elif options.scoring == "all_pass" and not options.run_all_tests:
            stop = True
    all_passed = passed == len(chosen)
    first_failure = next((s["status"] for s in statuses if s["status"] not in (PASSED, SKIPPED)), None)
    verdict = CORRECT if all_passed else STATUS_VERDICT.get(first_failure or "", INCORRECT)
    reward = passed / len(chosen) if options.scoring == "fraction" else float(all_passed)
    executed = sum(1 for s in statuses if s["status"] != SKIPPED)
    details = {
        "passed": passed,
        "executed": executed,
        "sampled": len(chosen),
        "total": len(tests),
        "tests": statuses,
    }
    return Result(reward, verdict, details)
