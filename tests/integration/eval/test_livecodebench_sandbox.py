"""LiveCodeBench problems from their release file, scored in the real sandbox as LiveCodeBench does."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

from m2rl_trainer.eval.config import parse_eval_config
from m2rl_trainer.eval.runner import load_benchmark
from m2rl_trainer.rewards import Sample, Scorer, ScorerConfig

STARTER = "class Solution:\n    def maxPair(self, nums: List[int]) -> int:\n        "


def _release(tmp_path: Path) -> Path:
    functional = {
        "question_title": "max pair", "question_content": "Largest sum of two.", "platform": "leetcode",
        "question_id": "3100", "contest_id": "w1", "contest_date": "2024-10-05T00:00:00",
        "starter_code": STARTER, "difficulty": "easy",
        "public_test_cases": json.dumps([{"input": "[1, 5, 3]", "output": "8", "testtype": "functional"}]),
        "private_test_cases": base64.b64encode(zlib.compress(pickle.dumps(json.dumps(
            [{"input": "[2, 2]", "output": "4", "testtype": "functional"}]
        )))).decode(),
        "metadata": json.dumps({"func_name": "maxPair"}),
    }  # fmt: skip
    stdin = {
        **functional,
        "question_id": "abc370_a",
        "platform": "atcoder",
        "starter_code": "",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "1.5\n", "testtype": "stdin"}]),
        "private_test_cases": json.dumps([{"input": "4 4\n", "output": "4\n", "testtype": "stdin"}]),
        "metadata": "{}",
    }
    path = tmp_path / "test5.jsonl"
    path.write_text(json.dumps(functional) + "\n" + json.dumps(stdin) + "\n")
    return path


def test_livecodebench_problems_scored_in_the_sandbox(tmp_path: Path) -> None:
    config = parse_eval_config(
        {
            "models": [{"name": "m", "path": "/m"}],
            "benchmarks": [{"name": "lcb", "dataset": str(_release(tmp_path)), "format": "livecodebench"}],
        }
    )
    prompts = {p.id: p for p in load_benchmark(config.benchmarks[0])}
    # LeetCode style, relying on LiveCodeBench's prelude (`from heapq import *`) for `nlargest`
    leetcode = "```python\n" + STARTER + "return sum(nlargest(2, nums))\n```"
    # prints 1.5 and 4.0: equal as decimals to 1.5 and 4, LiveCodeBench's comparison
    mean = "```python\na, b = map(int, input().split())\nprint((a + b) / 2)\n```"
    wrong = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    samples = [
        Sample("code", leetcode, prompts["3100"].reference, prompts["3100"].verifier_options),
        Sample("code", mean, prompts["abc370_a"].reference, prompts["abc370_a"].verifier_options),
        Sample("code", wrong, prompts["abc370_a"].reference, prompts["abc370_a"].verifier_options),
        # without the adapter's options (no prelude): `nlargest` is undefined
        Sample("code", leetcode, prompts["3100"].reference, {}),
    ]
    with Scorer(ScorerConfig(verifiers={"code": {}}, sandbox_workers=1)) as scorer:
        results = scorer.score(samples)
    assert [(r.reward, r.verdict) for r in results] == [
        (1.0, "correct"),
        (1.0, "correct"),
        (0.0, "incorrect"),
        (0.0, "incorrect"),
    ]
    assert "NameError: name 'nlargest' is not defined" in results[3].details["tests"][0]["stderr_tail"]
