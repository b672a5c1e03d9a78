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
        "stdout": "",
        "stderr_tail": "",
        "wall_s": 0.01,
        "cpu_s": 0.01,
        "leftover_processes": 0,
    }
    return Reply("ok", {**base, **message})


@pytest.mark.parametrize(
    ("reply", "test", "status"),
    [
        (_reply(stdout="3\n"), {"kind": "stdio", "expected": "3"}, "passed"),
        (_reply(stdout="4\n"), {"kind": "stdio", "expected": "3"}, "wrong_answer"),
        (_reply(outcome="timeout", exit_code=None, signal=9), {"kind": "stdio", "expected": ""}, "timeout"),
        (
            _reply(exit_code=None, signal=int(signal.SIGXCPU), cpu_s=6.0),
            {"kind": "stdio", "expected": ""},
            "timeout",
        ),
        (_reply(outcome="output_limit"), {"kind": "stdio", "expected": ""}, "output_limit"),
        (
            _reply(exit_code=1, stderr_tail="Traceback\nMemoryError\n"),
            {"kind": "stdio", "expected": ""},
            "memory_limit",
        ),
        (_reply(exit_code=1, stderr_tail="Traceback\nAssertionError\n"), {"kind": "assert"}, "wrong_answer"),
        (
            _reply(exit_code=1, stderr_tail="Traceback\nZeroDivisionError\n"),
            {"kind": "stdio", "expected": ""},
            "runtime_error",
        ),
        (_reply(completed=False), {"kind": "assert"}, "runtime_error"),
        (_reply(completed=True), {"kind": "assert"}, "passed"),
        (_reply(completed=True, value="[1, 2]"), {"kind": "call", "expected": [1, 2]}, "passed"),
        (_reply(completed=True, value="[2, 1]"), {"kind": "call", "expected": [1, 2]}, "wrong_answer"),
        (Reply("crashed", None, 0.0, "worker died"), {"kind": "stdio", "expected": ""}, "sandbox_error"),
        (
            _reply(exit_code=70, stderr_tail="sandbox set-up failed: Traceback ...\nOSError"),
            {"kind": "stdio", "expected": ""},
            "sandbox_error",
        ),
        (Reply("timeout", None, 0.0, ""), {"kind": "stdio", "expected": ""}, "timeout"),
    ],
    ids=[
        "stdio-pass",
        "stdio-wrong",
        "wall-timeout",
        "cpu-limit",
        "output-cap",
        "memory",
        "assert-fails",
        "runtime-error",
        "exited-early",
        "assert-pass",
        "call-pass",
        "call-wrong",
        "sandbox-died",
        "setup-failed",
        "host-deadline",
    ],
)
def test_classify(reply, test, status):
    assert cv.classify(reply, test, OPTIONS)[0] == status


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


def test_expected_outputs_never_reach_the_sandbox():
    jobs = []

    def run(job, deadline):
        jobs.append(job)
        return _reply(stdout="secret-answer", completed=True, value='"secret-value"')

    reference = {
        "tests": [{"stdin": "", "stdout": "secret-answer"}, {"call": "f", "expected": "secret-value"}]
    }
    SPEC.verify("```python\npass\n```", reference, OPTIONS, run)
    assert "secret" not in repr(jobs)


def test_options_that_contradict_each_other_are_config_errors():
    with pytest.raises(ConfigError, match="'run_all_tests' only applies to scoring 'all_pass'"):
        SPEC.parse_options({"run_all_tests": True, "scoring": "fraction"})
    with pytest.raises(ConfigError, match="verifier 'code': option 'memory_mb' must be >= 32"):
        SPEC.parse_options({"memory_mb": 1})
