"""Math verifier: the 60+ case corpus (data/math_cases.jsonl) and extraction details, in-process."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from m2rl_trainer.rewards import math_verifier
from m2rl_trainer.rewards.registry import get_verifier
from m2rl_trainer.rewards.types import ConfigError

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "math_cases.jsonl").read_text().splitlines()
]
SPEC = get_verifier("math")


def test_corpus_covers_every_category_the_issue_names():
    categories = Counter(case["category"] for case in CASES)
    assert len(CASES) >= 60
    for needed in (
        "fraction",
        "decimal",
        "percent",
        "interval",
        "set",
        "matrix",
        "latex",
        "unit",
        "negative",
        "unparsable",
    ):
        assert categories[needed] >= 3, needed
    assert {case["expected"] for case in CASES} >= {"correct", "incorrect", "no_answer", "format_error"}


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_corpus_case(case):
    result = SPEC.verify(case["response"], case["reference"], SPEC.parse_options(case.get("options")))
    assert result.verdict == case["expected"], result.details
    assert result.reward == (1.0 if case["expected"] == "correct" else 0.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{\frac{a}{b}}", r"\frac{a}{b}"),
        (r"\boxed{1} then \boxed{\{1,2\}}", r"\{1,2\}"),
        (r"\boxed {x}", "x"),
        (r"\boxed{unterminated", None),
        ("no box", None),
    ],
    ids=["nested-braces", "last-wins", "space-before-brace", "unterminated", "absent"],
)
def test_last_boxed(text, expected):
    assert math_verifier.last_boxed(text) == expected


def test_answer_line_strips_prose_and_delimiters():
    options = math_verifier.MathOptions(extract=("answer_line",))
    assert math_verifier.extract_answer("Thus.\nFinal answer: $x^2$.", options) == ("x^2", "answer_line")
    assert math_verifier.extract_answer("The answer is \\boxed{7} indeed", options) == ("7", "answer_line")


def test_timeout_verdict_on_the_main_thread():
    options = SPEC.parse_options({"timeout_s": 0.5})
    start = time.monotonic()
    result = SPEC.verify(r"\boxed{10^{10^{10}}}", "1", options)
    assert result.verdict == "timeout"
    assert time.monotonic() - start < 3.0


def test_off_the_main_thread_the_check_still_runs():
    """Our timer is a no-op there (signals need the main thread); the pool supplies the wall clock."""
    results = []
    thread = threading.Thread(
        target=lambda: results.append(SPEC.verify(r"\boxed{0.5}", "1/2", SPEC.parse_options({})))
    )
    thread.start()
    thread.join()
    assert results[0].verdict == "correct"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"extract": ["boxed", "magic"]}, "invalid value(s) ['magic']"),
        ({"extract": [], "answer_regex": None}, "no answer could ever be found"),
        ({"answer_regex": "(unclosed"}, "does not compile"),
        ({"answer_regex": "no group"}, "one capture group"),
        ({"timeout_s": 0}, "must be >= 0.1"),
        ({"timeout_s": "5"}, "must be number"),
        ({"require_think_close": 1}, "must be boolean"),
        ({"timeout": 5}, "unknown option(s) ['timeout']"),
    ],
    ids=[
        "bad-extractor",
        "nothing-to-extract",
        "regex-syntax",
        "regex-no-group",
        "timeout-zero",
        "timeout-string",
        "gate-not-bool",
        "unknown-key",
    ],
)
def test_options_that_make_no_sense_are_config_errors(options, message):
    with pytest.raises(ConfigError, match="verifier 'math'") as info:
        SPEC.parse_options(options)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "reference",
    [None, "", [], [1, None], True, {"a": 1}],
    ids=["none", "empty", "empty-list", "none-in-list", "bool", "object"],
)
def test_bad_references_are_config_errors(reference):
    with pytest.raises(ConfigError, match="math reference"):
        SPEC.check_reference(reference, SPEC.parse_options({}))


@pytest.mark.parametrize(
    ("gold", "answer"),
    [("8", "8"), ("08", "8"), ("-3", "-3"), ("-0", "0"), ("12345678901234567890", "12345678901234567890")],
)
def test_the_integer_shortcut_agrees_with_math_verify(gold: str, answer: str) -> None:
    options = math_verifier.MathOptions()
    quick = math_verifier.quick_verdict(f"so \\boxed{{{answer}}}", gold, options)
    assert quick is not None and (quick.reward, quick.verdict) == (1.0, "correct")
    assert math_verifier.equivalent(gold, answer, options)  # what the worker would have said


@pytest.mark.parametrize(
    ("response", "reference", "options"),
    [
        ("\\boxed{7}", "8", {}),  # unequal integers: math-verify decides (never a quick 0)
        ("\\boxed{0.5}", "1/2", {}),
        ("\\boxed{7}", "7.0", {}),
        ("Answer: 7", "7", {"answer_regex": "Answer: (\\d+)"}),  # user regexes run in a worker only
    ],
)
def test_what_the_shortcut_leaves_to_the_workers(response: str, reference: str, options: dict) -> None:
    assert math_verifier.quick_verdict(response, reference, SPEC.parse_options(options)) is None


def test_corpus_verdicts_decided_early_are_the_same_as_the_full_check() -> None:
    decided = 0
    for case in CASES:
        options = SPEC.parse_options(case.get("options"))
        quick = math_verifier.quick_verdict(case["response"], case["reference"], options)
        if quick is not None:
            decided += 1
            assert quick.verdict == case["expected"], case["id"]
    assert decided >= 10  # no answer, format gates and integer answers are in the corpus
