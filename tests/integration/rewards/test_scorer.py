"""The batched scorer with real pools: routing, configuration errors, parity with the pure functions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from m2rl_trainer.rewards import ConfigError, Scorer, ScorerConfig, score
from m2rl_trainer.rewards.registry import get_verifier
from m2rl_trainer.rewards.sandbox import SandboxConfig

DATA = Path(__file__).parents[2] / "unit" / "rewards" / "data"


def slow_math(timeout_s: float) -> dict:
    """A math sample whose check runs past any limit (a power tower math-verify tries to evaluate)."""
    return {
        "verifier": "math",
        "response": r"\boxed{9^{9^{9^{9}}}}",
        "reference": "1",
        "options": {"timeout_s": timeout_s},
    }


def mixed_batch() -> list[dict]:
    return [
        {"id": "math-ok", "verifier": "math", "response": r"So \boxed{\frac{1}{2}}", "reference": "0.5"},
        {
            "id": "math-gated",
            "verifier": "math",
            "response": r"\boxed{2}",
            "reference": "2",
            "options": {"require_think_close": True},
        },
        {"id": "mc", "verifier": "multiple_choice", "response": "The answer is (B).", "reference": "B"},
        {
            "id": "if",
            "verifier": "ifeval",
            "response": "all lower case, with a comma",
            "reference": {
                "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"],
                "kwargs": [{}, {}],
            },
            "options": {"scoring": "fraction"},
        },
        {
            "id": "code-stdio",
            "verifier": "code",
            "response": "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
            "reference": {"tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "-5 5\n", "stdout": "0"}]},
        },
        {
            "id": "code-call",
            "verifier": "code",
            "response": "```python\nclass Solution:\n    def twoSum(self, xs, t):\n"
            "        return sorted({x for x in xs if t - x in xs})\n```",
            "reference": {"tests": [{"call": "Solution.twoSum", "args": [[1, 2, 7], 9], "expected": [2, 7]}]},
        },
        {
            "id": "code-assert-fail",
            "verifier": "code",
            "response": "```python\ndef sq(x):\n    return x * 2\n```",
            "reference": {"tests": [{"assert": "assert sq(2) == 4"}, {"assert": "assert sq(3) == 9"}]},
            "options": {"scoring": "fraction"},
        },
        {
            "id": "code-none",
            "verifier": "code",
            "response": "I cannot write code.",
            "reference": {"tests": [{"stdout": ""}]},
        },
    ]


EXPECTED = {
    "math-ok": (1.0, "correct"),
    "math-gated": (0.0, "format_error"),
    "mc": (1.0, "correct"),
    "if": (0.5, "incorrect"),
    "code-stdio": (1.0, "correct"),
    "code-call": (1.0, "correct"),
    "code-assert-fail": (0.5, "incorrect"),
    "code-none": (0.0, "no_answer"),
}


def test_mixed_batch_routed_by_type_in_order(scorer):
    results = scorer.score(mixed_batch())
    assert [r.id for r in results] == list(EXPECTED)
    assert {r.id: (r.reward, r.verdict) for r in results} == EXPECTED
    assert all(r.time_s > 0 for r in results)
    assert {r.verifier for r in results} == {"math", "multiple_choice", "ifeval", "code"}


def test_pool_results_equal_the_pure_functions_on_the_math_corpus(scorer):
    """Training (in-process pure function) and the pool (worker processes) give the same verdicts."""
    cases = [json.loads(line) for line in (DATA / "math_cases.jsonl").read_text().splitlines()]
    samples = [
        {
            "id": c["id"],
            "verifier": "math",
            "response": c["response"],
            "reference": c["reference"],
            "options": c.get("options", {}),
        }
        for c in cases
    ]
    spec = get_verifier("math")
    pooled = scorer.score(samples)
    for case, result in zip(cases, pooled, strict=True):
        direct = spec.verify(case["response"], case["reference"], spec.parse_options(case.get("options")))
        assert (result.reward, result.verdict, result.details) == (
            direct.reward,
            direct.verdict,
            direct.details,
        )
        assert result.verdict == case["expected"], case["id"]


def test_math_checks_decided_early_never_reach_the_worker_pool(scorer, monkeypatch):
    """Integer answers equal to the reference, missing answers and format gates are decided in the
    scorer's process; the rest still go to math-verify in a worker."""
    sent: list[str] = []
    real = scorer._run_python
    monkeypatch.setattr(scorer, "_run_python", lambda item: sent.append(item.sample.id) or real(item))
    samples = [
        {"id": "int", "verifier": "math", "response": "so \\boxed{42}", "reference": "42"},
        {"id": "none", "verifier": "math", "response": "no idea", "reference": "42"},
        {"id": "wrong", "verifier": "math", "response": "\\boxed{41}", "reference": "42"},
        {"id": "frac", "verifier": "math", "response": "\\boxed{0.5}", "reference": "1/2"},
    ]
    results = scorer.score(samples)
    assert [(r.id, r.verdict) for r in results] == [
        ("int", "correct"),
        ("none", "no_answer"),
        ("wrong", "incorrect"),
        ("frac", "correct"),
    ]
    assert sorted(sent) == ["frac", "wrong"]


def test_math_timeout_is_a_verdict_and_the_pool_stays_usable(scorer):
    slow = slow_math(0.5)
    fine = {"verifier": "math", "response": r"\boxed{2}", "reference": "2"}
    results = scorer.score([slow, fine, slow, fine])
    assert [r.verdict for r in results] == ["timeout", "correct", "timeout", "correct"]


def test_a_bad_sample_fails_the_whole_batch_before_anything_runs(scorer):
    batch = [
        *mixed_batch(),
        {"id": "bad", "verifier": "math", "response": "x", "reference": "1", "options": {"timeout_s": -1}},
    ]
    before = scorer.health()["pools"]
    with pytest.raises(ConfigError, match=r"samples\[8\] \(id 'bad'\): verifier 'math': option 'timeout_s'"):
        scorer.score(batch)
    with pytest.raises(ConfigError, match="unknown verifier 'poetry'"):
        scorer.score([{"verifier": "poetry", "response": "", "reference": ""}])
    assert scorer.pending() == {"python_worker": 0, "sandbox": 0}
    assert scorer.health()["pools"] == before


def test_configuration_errors_at_construction():
    with pytest.raises(ConfigError, match="unknown verifier 'chess'"):
        Scorer(ScorerConfig(verifiers={"chess": {}}))
    with pytest.raises(ConfigError, match="verifier 'code': option 'scoring' has invalid value"):
        Scorer(ScorerConfig(verifiers={"code": {"scoring": "best_of"}}))
    with pytest.raises(ConfigError, match="unknown key"):
        Scorer({"verifiers": {}, "workers": 3})


def test_only_enabled_verifiers_are_accepted():
    with Scorer(ScorerConfig(verifiers={"multiple_choice": {"num_choices": 4}})) as scorer:
        assert scorer.python_pool is None and scorer.sandbox_pool is None  # nothing to start for MC
        assert (
            scorer.score([{"verifier": "multiple_choice", "response": "D", "reference": "D"}])[0].reward
            == 1.0
        )
        with pytest.raises(ConfigError, match="verifier 'math' is not enabled"):
            scorer.score([{"verifier": "math", "response": "1", "reference": "1"}])
        # the configured default applies: E is not an option with num_choices 4
        with pytest.raises(ConfigError, match="expected one letter of 'ABCD'"):
            scorer.score([{"verifier": "multiple_choice", "response": "E", "reference": "E"}])


def test_one_shot_score_function():
    results = score([{"verifier": "multiple_choice", "response": "Answer: A", "reference": "A"}])
    assert results[0].verdict == "correct"


def test_code_test_sampling_runs_only_max_tests(scorer):
    tests = [{"stdin": str(i), "stdout": str(i)} for i in range(12)]
    sample = {
        "verifier": "code",
        "response": "```python\nprint(input())\n```",
        "reference": {"tests": tests},
        "options": {"max_tests": 4, "seed": 3},
    }
    first, second = scorer.score([sample, sample])
    assert first.reward == 1.0 and first.details["executed"] == 4 and first.details["total"] == 12
    assert [t["index"] for t in first.details["tests"]] == [t["index"] for t in second.details["tests"]]


def test_waiting_for_a_cpu_held_by_others_is_not_a_timeout():
    """At low priority (the service's setting) programs wait while ordinary processes hold the cores;
    that wait must not count against their time limit, or correct code would score 0 under load."""
    config = ScorerConfig(verifiers={"code": {}}, sandbox_workers=1, sandbox=SandboxConfig(low_priority=True))
    program = "total = 0\nfor i in range(3_000_000):\n    total += i\nprint(total)"  # ~0.3 s of CPU
    sample = {
        "verifier": "code",
        "response": f"```python\n{program}\n```",
        "reference": {"tests": [{"stdout": str(sum(range(3_000_000)))}]},
        # a generous hard cap: the machine's other load must not decide this test
        "options": {"timeout_s": 1.0, "max_wall_factor": 20.0},
    }
    spin = "import time\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass"
    with Scorer(config) as scorer:
        spinners = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 2)]
        try:
            time.sleep(0.1)
            result = scorer.score([sample])[0]
        finally:
            for proc in spinners:
                proc.wait()
    assert result.verdict == "correct", result.details
    # it really waited longer than its limit: the spinners held both cores for ~1.4 s of it
    assert result.details["tests"][0]["time_s"] > 1.0, result.details
