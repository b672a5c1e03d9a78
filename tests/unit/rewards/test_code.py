"""Code verifier host side: extraction, test formats, sampling, comparison and status mapping."""

from __future__ import annotations

import signal

import pytest

from m2rl_trainer.rewards import code_verifier as cv
from m2rl_trainer.rewards.registry import get_verifier
from m2rl_trainer.rewards.types import ConfigError
from m2rl_trainer.rewards.workers import Reply

SPEC = get_verifier("code")
OPTIONS = SPEC.parse_options({})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```python\na=1\n```\ntext\n```python\nb=2\n```", "b=2\n"),
        ("```py\nx=1\n```", "x=1\n"),
        ("```\nuntagged\n```", "untagged\n"),
        ("```python\ntagged\n```\n```\nlater untagged\n```", "tagged\n"),
        ("```bash\nls\n```", None),
        ("no code at all", None),
        ("```python\nunterminated", None),
    ],
    ids=[
        "last-python",
        "py-tag",
        "untagged",
        "tagged-beats-untagged",
        "other-language",
        "none",
        "unterminated",
    ],
)
def test_extract_code(text, expected):
    assert cv.extract_code(text) == expected


def test_three_test_styles_and_the_dataset_shorthand():
    tests = cv.normalise_tests(
        {
            "tests": [
                {"stdin": "1\n", "stdout": "2\n"},
                {"call": "Solution.add", "args": [1], "kwargs": {"b": 2}, "expected": 3},
                {"assert": "assert f(1) == 2"},
            ]
        }
    )
    assert [t["kind"] for t in tests] == ["stdio", "call", "assert"]
    assert cv.normalise_tests({"inputs": ["a"], "outputs": ["b"]}) == [
        {"kind": "stdio", "stdin": "a", "expected": "b"}
    ]


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ({"tests": []}, "no tests"),
        ({"tests": "x"}, "must be a list"),
        ([], "expected an object"),
        ({"tests": [{"stdin": "1"}]}, "needs 'stdout'"),
        ({"tests": [{"call": "1bad", "expected": 1}]}, "function name"),
        ({"tests": [{"call": "f"}]}, "'expected'"),
        ({"tests": [{"assert": "assert ("}]}, "does not compile"),
        ({"inputs": ["a"], "outputs": []}, "same length"),
    ],
    ids=[
        "empty",
        "not-list",
        "not-object",
        "no-stdout",
        "bad-call-name",
        "no-expected",
        "assert-syntax",
        "lengths",
    ],
)
def test_reference_errors(reference, message):
    with pytest.raises(ConfigError) as info:
        SPEC.check_reference(reference, OPTIONS)
    assert message in str(info.value)


def test_sampling_is_seeded_and_stable():
    tests = cv.normalise_tests({"tests": [{"stdin": str(i), "stdout": str(i)} for i in range(20)]})
    options = SPEC.parse_options({"max_tests": 5, "seed": 1})
    first = cv.sample_tests(tests, options)
    assert first == cv.sample_tests(tests, options) and len(first) == 5 and first == sorted(first)
    assert cv.sample_tests(tests, SPEC.parse_options({"max_tests": 5, "seed": 2})) != first
    assert cv.sample_tests(tests, SPEC.parse_options({"max_tests": 50})) == list(range(20))


@pytest.mark.parametrize(
    ("got", "want", "mode", "ok"),
    [
        ("3\n", "3", "lines", True),
        ("3  \n\n", "3\n", "lines", True),
        ("3\n4", "3 4", "lines", False),
        ("3\n", "3", "exact", False),
        ("1.0000001 2", "1 2", "tokens", True),
        ("1.1 2", "1 2", "tokens", False),
    ],
)
def test_stdout_matching(got, want, mode, ok):
    assert cv.stdout_matches(got, want, SPEC.parse_options({"output_match": mode})) is ok


def test_values_equal():
    assert cv.values_equal([1, [2.0000000001]], [1, [2]], 1e-6)
    assert not cv.values_equal(True, 1, 1e-6)
    assert not cv.values_equal({"a": 1}, {"a": 1, "b": 2}, 1e-6)


def _reply(**message):
    base = {
        "outcome": "exited",
        "exit_code": 0,
        "signal": None,
        "ended_itself": True,
        "stdout": "",
        "stdout_bytes": 0,
        "stderr_tail": "",
        "stderr_bytes": 0,
        "wall_s": 0.01,
        "cpu_s": 0.01,
        "leftover_processes": 0,
    }
    return Reply("ok", {**base, **message})


def _values(*replies: str, report: str = '["L",0,[]]') -> str:
    """What the program's process writes on its value pipe: its report, then one line per call."""
    return "".join(line + "\n" for line in (report, *replies))


def _verdict(status: str, reason: str = "", flags: int = 0) -> dict:
    return {"status": status, "reason": reason, "flags": flags, "calls": 1}


CALL = {"kind": "call", "fn": "f", "args": [], "kwargs": {}, "expected": [1, 2]}
# plain asserts the host checks itself over the values of the program's calls (no checker process)
PLAIN = {"kind": "assert", "code": "assert f(1) == [1, 2]\nassert len(f(2)) == 1"}
STDIO = {"kind": "stdio", "expected": ""}
ASSERT = {"kind": "assert"}


@pytest.mark.parametrize(
    ("reply", "test", "status"),
    [
        (_reply(stdout="3\n"), {"kind": "stdio", "expected": "3"}, "passed"),
        (_reply(stdout="4\n"), {"kind": "stdio", "expected": "3"}, "wrong_answer"),
        (_reply(outcome="timeout", exit_code=None, signal=9), STDIO, "timeout"),
        (_reply(exit_code=None, signal=int(signal.SIGXCPU), cpu_s=6.0), STDIO, "timeout"),
        (_reply(outcome="output_limit"), STDIO, "output_limit"),
        (_reply(exit_code=1, stderr_tail="Traceback\nMemoryError\n"), STDIO, "memory_limit"),
        (_reply(exit_code=1, stderr_tail="Traceback\nZeroDivisionError\n"), STDIO, "runtime_error"),
        (_reply(verdict=_verdict("passed")), ASSERT, "passed"),
        (_reply(verdict=_verdict("failed", "AssertionError")), ASSERT, "wrong_answer"),
        (_reply(verdict=_verdict("wrong_type", "a Foo object")), ASSERT, "wrong_answer"),
        (_reply(verdict=_verdict("candidate_error", "ValueError: x")), ASSERT, "runtime_error"),
        (_reply(verdict=_verdict("candidate_error", "MemoryError: ")), ASSERT, "memory_limit"),
        (_reply(verdict=_verdict("candidate_exited", "ended"), exit_code=0), ASSERT, "runtime_error"),
        (
            _reply(verdict=_verdict("candidate_exited"), exit_code=None, signal=int(signal.SIGXCPU), cpu_s=6),
            ASSERT,
            "timeout",
        ),
        (_reply(verdict=_verdict("test_error", "uses exec()")), ASSERT, "test_error"),
        (_reply(verdict=None, checker_exit=9), ASSERT, "runtime_error"),
        # a "passed" verdict can only come from the checker: a program's exit status or output never makes one
        (_reply(verdict=_verdict("failed"), stdout="passed", exit_code=0), ASSERT, "wrong_answer"),
        (_reply(values=_values('["v",[1,2],0,[]]')), CALL, "passed"),
        (_reply(values=_values('["v",{"t":[1,2]},0,[]]')), CALL, "passed"),  # a tuple is a JSON list
        (_reply(values=_values('["v",{"s":[2,1]},0,[]]')), CALL, "passed"),  # a set, as a sorted list
        (_reply(values=_values('["v",[2,1],0,[]]')), CALL, "wrong_answer"),
        (_reply(values=_values('["v",{"h":[0,"AlwaysEqual"]},1,[]]')), CALL, "wrong_answer"),
        (_reply(values=_values('["v",[true,2],0,[]]')), CALL, "wrong_answer"),  # True is not 1
        (_reply(values=_values('["e","ValueError",0,"bad",false]')), CALL, "runtime_error"),
        (_reply(values=_values('["e","MemoryError",0,"",false]')), CALL, "memory_limit"),
        (_reply(values=""), CALL, "runtime_error"),  # os._exit(0) before its code finished
        (_reply(values=_values(report='["L",4,[]]')), CALL, "runtime_error"),  # sys.exit(0) at import
        (_reply(values=_values('["v",[1,2],0,[]]', '["v",[1,2],0,[]]')), CALL, "runtime_error"),
        (_reply(values='{"status": "passed"}\n'), CALL, "runtime_error"),
        (
            _reply(
                values=_values(
                    '["v",{"s":[' + ",".join(str(7 + k * (2**61 - 1)) for k in range(200)) + "]},0,[]]"
                )
            ),
            CALL,
            "runtime_error",
        ),
        (_reply(values=_values('["v",[1,2],0,[]]', '["v",[0],0,[]]')), PLAIN, "passed"),
        (_reply(values=_values('["v",[1,2],0,[]]', '["v",[0,0],0,[]]')), PLAIN, "wrong_answer"),
        (_reply(values=_values('["v",{"t":[1,2]},0,[]]', '["v",[0],0,[]]')), PLAIN, "wrong_answer"),
        (_reply(values=_values('["v",{"h":[0,"Any"]},1,[]]', '["v",[0],0,[]]')), PLAIN, "wrong_answer"),
        (_reply(values=_values('["v",[1,2],0,[]]', '["e","IndexError",0,"",false]')), PLAIN, "runtime_error"),
        (_reply(values=_values('["v",[1,2],0,[]]', '["v",{"h":[0,"Any"]},1,[]]')), PLAIN, "runtime_error"),
        (_reply(values=_values('["v",[1,2],0,[]]')), PLAIN, "runtime_error"),  # exited before call 2
        (Reply("crashed", None, 0.0, "worker died"), STDIO, "sandbox_error"),
        (
            _reply(exit_code=70, stderr_tail="sandbox set-up failed: Traceback ...\nOSError"),
            STDIO,
            "sandbox_error",
        ),
        (Reply("timeout", None, 0.0, ""), STDIO, "timeout"),
    ],
    ids=[
        "stdio-pass",
        "stdio-wrong",
        "wall-timeout",
        "cpu-limit",
        "output-cap",
        "memory",
        "runtime-error",
        "assert-pass",
        "assert-fails",
        "assert-wrong-type",
        "assert-solution-raised",
        "assert-memory",
        "assert-exited-early",
        "assert-cpu-limit",
        "assert-untranslatable",
        "checker-killed",
        "assert-output-is-no-verdict",
        "call-pass",
        "call-tuple",
        "call-set",
        "call-wrong",
        "call-own-object",
        "call-bool-for-int",
        "call-raised",
        "call-memory",
        "call-exited-early",
        "call-sys-exit",
        "call-extra-lines",
        "call-junk",
        "call-hash-flood",
        "plain-assert-pass",
        "plain-assert-fails",
        "plain-assert-tuple-is-not-list",
        "plain-assert-own-object",
        "plain-assert-solution-raised",
        "plain-assert-len-of-own-object",
        "plain-assert-exited-early",
        "sandbox-died",
        "setup-failed",
        "host-deadline",
    ],
)
def test_classify(reply, test, status):
    assert cv.classify(reply, test, OPTIONS)[0] == status


@pytest.mark.parametrize(
    ("reply", "test", "flags"),
    [
        (_reply(values=_values()), STDIO, set()),
        (_reply(values=""), STDIO, {"early_exit"}),  # os._exit: no report
        (_reply(values=_values(report='["L",4,[]]')), STDIO, {"early_exit"}),  # sys.exit
        (_reply(values=_values(report='["L",2,[]]')), STDIO, {"builtins_touched"}),
        (_reply(values=_values(), stdout_bytes=0, stderr_bytes=3), STDIO, {"stderr_only"}),
        (_reply(values=_values('["v",{"h":[0,"A"]},1,[]]')), CALL, {"eq_override"}),
        (_reply(values=_values('["e","SystemExit",0,"",true]')), CALL, {"early_exit"}),
        (_reply(values=_values()), CALL, {"early_exit"}),  # os._exit inside the call: no reply
        (_reply(values=_values(report='["L",8,[]]'), exit_code=1), CALL, set()),  # raised at import
        (_reply(verdict=_verdict("passed", flags=1 | 2)), ASSERT, {"eq_override", "builtins_touched"}),
        (_reply(verdict=_verdict("candidate_exited"), exit_code=0), ASSERT, {"early_exit"}),
        (
            _reply(verdict=_verdict("candidate_exited", flags=8), exit_code=1),
            ASSERT,
            set(),
        ),  # raised, not exited
        (_reply(outcome="timeout", values=""), STDIO, set()),  # killed by the runner: nothing to say
    ],
    ids=[
        "clean",
        "os-exit",
        "sys-exit",
        "builtins",
        "stderr-only",
        "eq-override",
        "call-system-exit",
        "call-os-exit",
        "call-import-error",
        "assert-flags",
        "assert-exited",
        "assert-raised",
        "timeout",
    ],
)
def test_hygiene_flags_of_a_run(reply, test, flags):
    assert cv.run_hygiene(reply, test) == flags


def test_mentions_builtins_is_static():
    assert cv.mentions_builtins("import builtins\nbuiltins.len = 1")
    assert cv.mentions_builtins("__builtins__['len'] = 1")
    assert not cv.mentions_builtins("input = __import__('sys').stdin.readline")


def test_verify_stops_at_first_failure_for_all_pass_and_not_for_fraction():
    calls = []

    def run(job, deadline):
        calls.append(job["test"]["stdin"])
        return _reply(stdout="ok" if job["test"]["stdin"] != "bad" else "no")

    reference = {"tests": [{"stdin": s, "stdout": "ok"} for s in ("a", "bad", "c", "d")]}
    result = SPEC.verify("```python\npass\n```", reference, OPTIONS, run)
    assert (result.reward, result.verdict, calls) == (0.0, "incorrect", ["a", "bad"])
    assert [t["status"] for t in result.details["tests"]] == ["passed", "wrong_answer", "skipped", "skipped"]
    calls.clear()
    result = SPEC.verify("```python\npass\n```", reference, SPEC.parse_options({"scoring": "fraction"}), run)
    assert (result.reward, len(calls)) == (0.75, 4)


def test_expected_outputs_never_reach_the_programs_process():
    jobs = []

    def run(job, deadline):
        jobs.append(job)
        if job["test"]["kind"] == "check":
            return _reply(verdict=_verdict("passed"))
        value = '"secret-assert"' if "assert" in str(job["test"].get("requests")) else '"secret-value"'
        return _reply(stdout="secret-answer", values=_values(f'["v",{value},0,[]]'))

    reference = {
        "tests": [
            {"stdin": "", "stdout": "secret-answer"},
            {"call": "f", "expected": "secret-value"},
            {"assert": "assert f('assert') == 'secret-assert'"},  # plain: checked on the host
            {"assert": "for x in [1]:\n    assert f(x) == 'secret-loop'"},  # a loop: the checker's
        ]
    }
    result = SPEC.verify("```python\npass\n```", reference, OPTIONS, run)
    assert result.reward == 1.0
    assert [job["test"]["kind"] for job in jobs] == ["stdio", "call", "call", "check"]
    # the program's code, stdin and calls carry no expected value; a test the host cannot check
    # travels only to the sandbox's checker process (job["test"]["check"]), never to the program's
    assert "secret" not in repr(
        [{**job, "test": {k: v for k, v in job["test"].items() if k != "check"}} for job in jobs]
    )
    assert "secret-loop" in jobs[3]["test"]["check"]["code"]


def test_options_that_contradict_each_other_are_config_errors():
    with pytest.raises(ConfigError, match="'run_all_tests' only applies to scoring 'all_pass'"):
        SPEC.parse_options({"run_all_tests": True, "scoring": "fraction"})
    with pytest.raises(ConfigError, match="verifier 'code': option 'memory_mb' must be >= 32"):
        SPEC.parse_options({"memory_mb": 1})
