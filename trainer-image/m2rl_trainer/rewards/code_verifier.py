"""Code: run the response's last fenced Python block against tests inside the sandbox.

Extraction: the last block fenced as python/py/python3; when there is none, the last untagged
fenced block. No block: verdict no_answer.

Reference: {"tests": [...]} with tests in three styles (mixing is allowed):
  {"stdin": "1 2\\n", "stdout": "3\\n"}                    program reads stdin, prints the answer
  {"call": "add", "args": [1, 2], "kwargs": {}, "expected": 3}   call a function ("Class.method"
                                                           calls it on a fresh instance)
  {"assert": "assert add(1, 2) == 3"}                      run statements after the code
or the common dataset shorthand {"inputs": ["1 2\\n", ...], "outputs": ["3\\n", ...]} (stdin/stdout).

An assert test may name the function under test: {"assert": "def check(candidate): ...",
"entry_point": "add"} runs check(add) (HumanEval style; the solution is then reached only through
check's argument, so helpers the test needs must be defined in the test code).

Nothing the program does to its own process decides a verdict (threat model: docs/verifiers.md):
  stdin/stdout   the host compares the program's stdout with the expected one
  function call  the program's process makes the call and sends the value back in a strict, typed
                 encoding (_values); the host decodes it into built-in objects and compares
  plain assert   (`assert f(<literals>) == ...`, a check() of such asserts, Solution().m(...)) the
                 calls are made as function-call tests; the host evaluates the asserts over the
                 decoded values with a strict == (_checker.host_plan)
  other assert   the test runs in the sandbox's checker process (_checker.run_check), where the
                 solution's names are proxies: each call runs in the program's process and comes
                 back as a plain value; the asserts, the values and == (made strict) are the
                 checker's, and its verdict reaches the runner on a socket the program never holds
Expected outputs and values never enter the program's process. A test that cannot be checked this
way (exec, sys tricks, changing the solution's objects, a check() nobody calls, no use of the
solution at all) is a ConfigError when the reference is loaded, naming the test.

Scoring: all_pass (the M2RL study: 1 only if every sampled test passes; stops at the first
failure) or fraction (share of sampled tests passed). `max_tests` samples up to N tests per problem
with a seed and the tests' hash, so training and re-scoring pick the same subset.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import math
import random
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from m2rl_trainer.rewards import _checker, _values
from m2rl_trainer.rewards.common import apply_think_gate
from m2rl_trainer.rewards.options import CommonOptions, opt
from m2rl_trainer.rewards.types import (
    CORRECT,
    ERROR,
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

# Per-test statuses, and the sample verdict the first failing one gives. test_error: the test itself
# could not be checked outside the program's process (a check it cannot express; never a pass).
PASSED, WRONG_ANSWER, RUNTIME_ERROR, SKIPPED = "passed", "wrong_answer", "runtime_error", "skipped"
TEST_ERROR = "test_error"
STATUS_VERDICT = {
    WRONG_ANSWER: INCORRECT,
    RUNTIME_ERROR: INCORRECT,
    TEST_ERROR: ERROR,
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
        "stdout comparison: lines (trailing spaces and blank lines ignored), exact, tokens "
        "(whitespace-separated, numbers within float_tolerance), strip (equal after str.strip, the "
        "M2RL study's sandbox) or livecodebench (LiveCodeBench's grade_stdio: stripped lines, numbers "
        "equal as decimals).",
        choices=("lines", "exact", "tokens", "strip", "livecodebench"),
    )
    prelude: str = opt(
        "",
        "Python source run before the response's code, in its namespace (e.g. LiveCodeBench's imports, "
        "rewards/lcb_compare.PRELUDE).",
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
            if (
                set(test) - {"assert", "entry_point"}
                or not isinstance(test["assert"], str)
                or not test["assert"].strip()
            ):
                raise ConfigError(
                    f"{where}: assert tests take a non-empty string 'assert' and optionally 'entry_point'"
                )
            entry_point = test.get("entry_point")
            if entry_point is not None and not (isinstance(entry_point, str) and entry_point.isidentifier()):
                raise ConfigError(f"{where}: 'entry_point' must be a function name")
            problem = untranslatable(test["assert"], entry_point)
            if problem is not None:
                first = test["assert"].strip().splitlines()[0][:80]
                raise ConfigError(
                    f"{where} ({first!r}): cannot be checked outside the program's process: {problem}"
                )
            tests.append({"kind": "assert", "code": test["assert"]})
            if entry_point is not None:
                tests[-1]["entry_point"] = entry_point
        else:
            raise ConfigError(f"{where}: needs 'stdout' (stdin/stdout), 'call' or 'assert'")
    return tests


@functools.lru_cache(maxsize=4096)  # a reference is checked once per sample (16 per prompt)
def untranslatable(code: str, entry_point: str | None) -> str | None:
    """Why an assert test cannot run in the checker process (_checker.analyse), None if it can."""
    try:
        _checker.analyse(code, entry_point)
    except _checker.Untranslatable as exc:
        return str(exc)
    return None


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
    if options.output_match == "strip":
        return got.strip() == want.strip()
    if options.output_match == "livecodebench":
        from m2rl_trainer.rewards.lcb_compare import stdout_matches as lcb_matches

        return lcb_matches(got, want)
    if options.output_match == "tokens":
        a, b = got.split(), want.split()
        tol = options.float_tolerance
        return len(a) == len(b) and all(_token_equal(x, y, tol) for x, y in zip(a, b, strict=True))
    return _lines(got) == _lines(want)


def json_view(value: Any) -> Any:
    """A decoded return value as the JSON a reference can state: tuples as lists, sets as sorted
    lists, bytes as text, dict keys as JSON keys; an object of the program's own stays a
    _values.Reference, which equals no JSON value."""
    if isinstance(value, list | tuple):
        return [json_view(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [json_view(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        view = {}
        for key, item in value.items():
            if not isinstance(key, str | int | float | bool) and key is not None:
                return _values.Reference(-1, "dict with non-JSON keys")
            view[key if isinstance(key, str) else json.dumps(key)] = json_view(item)
        return view
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, complex):
        return repr(value)
    return value


def values_equal(got: Any, want: Any, tol: float) -> bool:
    """JSON values equal, floats within tolerance, bool only equal to bool (`got` is a json_view)."""
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


Call = tuple[Any, tuple[str, ...], tuple[Any, ...], dict[str, Any]]
"""(target, attributes, args, kwargs): target is a global name of the program or ["r", k], the object
its call k returned."""


def test_calls(test: dict[str, Any]) -> tuple[Call, ...] | None:
    """The calls a function-call test, or an assert test the host can check itself (host_plan),
    makes in the program's process; None for stdin/stdout and checker-process tests."""
    if test["kind"] == "call":
        if "." not in test["fn"]:
            return ((test["fn"], (), tuple(test["args"]), test["kwargs"]),)
        class_name, method = test["fn"].split(".", 1)  # "Class.method": on a fresh instance
        return ((class_name, (), (), {}), (["r", 0], (method,), tuple(test["args"]), test["kwargs"]))
    if test["kind"] == "assert":
        plan = host_plan(test["code"], test.get("entry_point"))
        return plan.calls if plan is not None else None
    return None


@functools.lru_cache(maxsize=4096)
def host_plan(code: str, entry_point: str | None) -> _checker.HostPlan | None:
    return _checker.host_plan(code, entry_point)


def call_request(call: Call) -> str:
    """One request line of a call the host makes (no in-place changes reported back)."""
    target, attrs, args, kwargs = call
    encoded_args, _ = _values.encode(list(args))
    encoded_kwargs, _ = _values.encode(dict(kwargs))
    return _values.dumps(["call", target, list(attrs), encoded_args, encoded_kwargs, False])


def job(code: str, test: dict[str, Any], options: CodeOptions) -> dict[str, Any]:
    """The runner's job for one test. Expected outputs and values stay here, on the host; an assert
    test the host cannot check itself goes to the sandbox's checker process, never to the program's."""
    calls = test_calls(test)
    if test["kind"] == "stdio":
        run_test: dict[str, Any] = {"kind": "stdio", "stdin": test["stdin"]}
    elif calls is not None:
        run_test = {"kind": "call", "requests": [call_request(call) for call in calls]}
    else:
        check = {"code": test["code"], "entry_point": test.get("entry_point"), "seed": options.seed}
        run_test = {"kind": "check", "check": check}
    return {"code": code, "test": run_test, "limits": limits(options)}


def _is_report(line: Any) -> bool:
    return type(line) is list and len(line) == 3 and line[0] == "L" and type(line[1]) is int


def _is_reply(line: Any) -> bool:
    return type(line) is list and len(line) >= 4 and line[0] in ("v", "e") and type(line[2]) is int


def program_lines(text: str) -> tuple[list[Any] | None, list[list[Any]], list[str], str | None]:
    """(report, replies, raw reply lines, problem) from the program's value pipe, decoded strictly."""
    raw = text.split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    decoded = []
    for line in raw:
        try:
            decoded.append(_values.loads(line))
        except ValueError:
            return None, [], [], "the program broke the value protocol"
    if not decoded:
        return None, [], [], None
    if not _is_report(decoded[0]) or not all(_is_reply(r) for r in decoded[1:]):
        return None, [], [], "the program broke the value protocol"
    return decoded[0], decoded[1:], raw[1:], None


def _program_failure(msg: Mapping[str, Any], options: CodeOptions) -> tuple[str, dict[str, Any]] | None:
    """How the program's process failed by its exit status, if it did."""
    stderr_tail = str(msg.get("stderr_tail", ""))
    last_line = stderr_tail.strip().splitlines()[-1] if stderr_tail.strip() else ""
    cpu_limit = limits(options)["cpu_s"]
    cpu_used = float(msg.get("cpu_s", 0))
    sig = msg.get("signal")
    # SIGXCPU is RLIMIT_CPU's soft limit; SIGKILL with the CPU budget spent is its hard limit.
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= cpu_limit - 0.05):
        return "timeout", {"reason": "CPU-time limit"}
    if msg.get("exit_code") == SETUP_FAILED and stderr_tail.startswith("sandbox set-up failed"):
        return "sandbox_error", {"reason": stderr_tail[-800:]}  # not the program's fault
    if msg.get("exit_code") != 0:
        facts: dict[str, Any] = {"stderr_tail": stderr_tail[-800:]}
        if sig is not None:
            facts["signal"] = sig
        if last_line.startswith("MemoryError"):
            return "memory_limit", facts
        return RUNTIME_ERROR, facts
    return None


def _classify_verdict(
    verdict: Mapping[str, Any] | None, msg: Mapping[str, Any], options: CodeOptions
) -> tuple[str, dict[str, Any]]:
    """An assert test: the verdict of the checker process (or of the host's own evaluation) decides;
    the program's exit only explains a failure."""
    if not isinstance(verdict, Mapping):  # the program killed it, or left it no memory
        return RUNTIME_ERROR, {"reason": "the checker process died before its verdict"}
    status, reason = verdict.get("status"), str(verdict.get("reason", ""))[:800]
    if status == "passed":
        return PASSED, {}
    if status in ("failed", "wrong_type"):
        return WRONG_ANSWER, {"reason": reason}
    if status == "test_error":
        return TEST_ERROR, {"reason": reason}
    if status == "candidate_exited" and msg.get("ended_itself"):
        failure = _program_failure(msg, options)
        if failure is not None:
            return failure[0], {"reason": reason, **failure[1]}
    if status == "candidate_error" and reason.startswith("MemoryError"):
        return "memory_limit", {"reason": reason}
    facts = {"reason": reason}
    if msg.get("stderr_tail"):
        facts["stderr_tail"] = str(msg["stderr_tail"])[-800:]
    return RUNTIME_ERROR, facts


def classify(reply: Reply, test: dict[str, Any], options: CodeOptions) -> tuple[str, dict[str, Any]]:
    """(status, facts) of one run from the runner's report; every comparison happens here, on the
    host, or in the checker process (assert tests)."""
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
    if test["kind"] == "assert" and "verdict" in msg:  # checked in the sandbox's checker process
        status, more = _classify_verdict(msg.get("verdict"), msg, options)
        return status, {**facts, **more}
    failure = _program_failure(msg, options)
    if failure is not None:
        return failure[0], {**facts, **failure[1]}
    if test["kind"] == "stdio":
        ok = stdout_matches(str(msg.get("stdout", "")), test["expected"], options)
        if not ok:
            facts["stdout_head"] = str(msg.get("stdout", ""))[:200]
        return (PASSED if ok else WRONG_ANSWER), facts
    report, replies, raw, problem = program_lines(str(msg.get("values", "")))
    calls = test_calls(test) or ()
    if problem is not None:
        return RUNTIME_ERROR, {**facts, "reason": problem}
    if report is None or report[1] & (_checker.EXITED | _checker.RAISED) or len(replies) < len(calls):
        return RUNTIME_ERROR, {**facts, "reason": "the program exited before the test finished"}
    if len(replies) > len(calls):
        return RUNTIME_ERROR, {**facts, "reason": "the program broke the value protocol"}
    if test["kind"] == "assert":  # plain asserts, evaluated here over the values
        plan = host_plan(test["code"], test.get("entry_point"))
        assert plan is not None
        shadowed = [n for n in report[2] if isinstance(n, str)] if isinstance(report[2], list) else []
        status, reason = _checker.evaluate(plan, replies, shadowed)
        verdict = {"status": status, "reason": reason}
        result, more = _classify_verdict(verdict, {**msg, "ended_itself": False}, options)
        if result != PASSED and any(r[0] == "e" for r in replies):
            more["stderr_tail"] = str(msg.get("stderr_tail", ""))[-800:]
        return result, {**facts, **more}
    for answer in replies:
        if answer[0] == "e":
            name, message = str(answer[1]), str(answer[3])[:300]
            return ("memory_limit" if name == "MemoryError" else RUNTIME_ERROR), {
                **facts,
                "reason": f"the call raised {name}: {message}",
                "stderr_tail": str(msg.get("stderr_tail", ""))[-800:],
            }
    ok = values_equal(json_view(replies[-1][1]), test["expected"], options.float_tolerance)
    if not ok:
        facts["returned_head"] = raw[-1][:200]
    return (PASSED if ok else WRONG_ANSWER), facts


# --- reward-hacking hygiene ------------------------------------------------------------------------

HYGIENE_FLAGS = ("early_exit", "eq_override", "builtins_touched", "stderr_only")


def run_hygiene(reply: Reply, test: dict[str, Any]) -> set[str]:
    """Signs of a program working on the harness rather than the task, in one run (rewards/hygiene.py
    turns them into per-domain shares). Reported by the program's own process, so a program can hide
    them: they are a drift signal for the operator of a run, never part of a verdict.

    early_exit: it ended through sys.exit/exit()/os._exit instead of returning from its code (or a
    call raised SystemExit); honest stdin/stdout programs do this too (sys.exit(main())), so watch
    the trend. eq_override: a returned value (or an argument it changed) holds an object whose class
    defines __eq__, __ne__ or __hash__. builtins_touched: it rebound names of the builtins module.
    stderr_only: it wrote to stderr and nothing to stdout.
    """
    msg = reply.message
    if reply.status != "ok" or msg is None or msg.get("outcome") != "exited":
        return set()
    flags = set()
    if not msg.get("stdout_bytes") and msg.get("stderr_bytes"):
        flags.add("stderr_only")
    bits = 0
    if test["kind"] == "assert" and "verdict" in msg:
        verdict = msg.get("verdict") if isinstance(msg.get("verdict"), dict) else {}
        bits = verdict.get("flags", 0) if type(verdict.get("flags", 0)) is int else 0
        exited = verdict.get("status") == "candidate_exited" and msg.get("ended_itself")
        if exited and msg.get("exit_code") is not None and not bits & _checker.RAISED:
            flags.add("early_exit")
    else:
        text = str(msg.get("values", ""))
        report, replies, _, problem = program_lines(text)
        calls = len(test_calls(test) or ())
        unfinished = not text or (problem is None and report is not None and len(replies) < calls)
        if unfinished and msg.get("exit_code") is not None and not (report and report[1] & _checker.RAISED):
            flags.add("early_exit")  # ended with a status before its code or a call finished: os._exit
        for line in [report] * (report is not None) + replies:
            bits |= line[2 if line[0] != "L" else 1]
            if line[0] == "e" and len(line) > 4 and line[4] is True:
                flags.add("early_exit")
    if bits & _checker.EXITED:
        flags.add("early_exit")
    if bits & _values.EQ_OVERRIDE:
        flags.add("eq_override")
    if bits & _checker.BUILTINS_CHANGED:
        flags.add("builtins_touched")
    return flags


def mentions_builtins(code: str) -> bool:
    """The code imports the builtins module or names __builtins__ (found without running it)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "builtins" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "builtins":
            return True
        if isinstance(node, ast.Name) and node.id == "__builtins__":
            return True
    return False


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
    if options.prelude:
        code = options.prelude + "\n" + code
    tests = normalise_tests(reference)
    chosen = sample_tests(tests, options)
    statuses: list[dict[str, Any]] = []
    hygiene = {"builtins_touched"} if mentions_builtins(code) else set()
    passed, stop = 0, False
    for index in chosen:
        test = tests[index]
        if stop:
            statuses.append({"index": index, "status": SKIPPED})
            continue
        run_job = job(code, test, options)
        reply = run(run_job, run_job["limits"]["max_wall_s"])
        status, facts = classify(reply, test, options)
        hygiene |= run_hygiene(reply, test)
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
        "hygiene": {flag: flag in hygiene for flag in HYGIENE_FLAGS},
    }
    return Result(reward, verdict, details)
