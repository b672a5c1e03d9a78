"""Assert-style tests checked in the sandbox's checker process: real HumanEval check functions (every
canonical solution passes, no empty stub does) and the Python a test relies on across the process
boundary (objects of the solution, in-place changes, generators, expected exceptions)."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pytest

# OpenAI's HumanEval (github.com/openai/human-eval, data/HumanEval.jsonl.gz, MIT licence: see
# data/HUMANEVAL_LICENSE): 164 problems with a prompt, a canonical solution and a check(candidate).
HUMANEVAL = Path(__file__).with_name("data") / "HumanEval.jsonl.gz"


def humaneval() -> list[dict]:
    with gzip.open(HUMANEVAL, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def humaneval_test(row: dict, style: str) -> dict:
    """The two ways a dataset adapter may ship HumanEval's test.

    entry: the prompt's helpers (its imports and functions other than the one to write, e.g.
    HumanEval/32's poly) + check(candidate), with entry_point: the solution is reached only through
    the entry point, so it cannot redefine the helpers the check relies on.
    plain: check(candidate) followed by a call check(<entry point>), as in HumanEval's own harness.
    """
    if style == "plain":
        return {"assert": f"{row['test']}\ncheck({row['entry_point']})\n"}
    tree = ast.parse(row["prompt"])
    tree.body = [
        n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == row["entry_point"])
    ]
    return {"assert": ast.unparse(tree) + "\n\n" + row["test"], "entry_point": row["entry_point"]}


def sample(sample_id: str, code: str, tests: list[dict], **options: object) -> dict:
    return {
        "id": sample_id,
        "verifier": "code",
        "response": f"```python\n{code}\n```",
        "reference": {"tests": tests},
        "options": {"timeout_s": 4.0, "scoring": "fraction", **options},
    }


@pytest.mark.parametrize("style", ["entry", "plain"])
def test_every_humaneval_canonical_solution_passes(scorer, style):
    rows = humaneval()
    samples = [
        sample(r["task_id"], r["prompt"] + r["canonical_solution"], [humaneval_test(r, style)]) for r in rows
    ]
    results = scorer.score(samples)
    failed = {r.id: r.details["tests"][0] for r in results if r.verdict != "correct"}
    assert len(results) == 164 and failed == {}


def test_no_humaneval_stub_passes(scorer):
    """The prompts alone (a signature and a docstring: every call returns None) pass no check."""
    rows = humaneval()
    samples = [sample(r["task_id"], r["prompt"], [humaneval_test(r, "entry")]) for r in rows]
    results = scorer.score(samples)
    assert [r.id for r in results if r.reward > 0] == []
    statuses = {r.details["tests"][0]["status"] for r in results}
    assert statuses <= {"wrong_answer", "runtime_error"}, statuses


CASES = [
    (
        "leetcode-in-place",
        "class Solution:\n    def sortColors(self, nums):\n        nums.sort()\n",
        "nums = [2, 0, 1]\nassert Solution().sortColors(nums) is None\nassert nums == [0, 1, 2]",
        "passed",
    ),
    (
        "linked-list-objects",
        "class ListNode:\n    def __init__(self, val=0, next=None):\n"
        "        self.val, self.next = val, next\n"
        "class Solution:\n    def reverseList(self, head):\n        prev = None\n        while head:\n"
        "            head.next, prev, head = prev, head, head.next\n        return prev\n",
        "head = None\nfor v in [3, 2, 1]:\n    head = ListNode(v, head)\n"
        "node, seen = Solution().reverseList(head), []\n"
        "while node is not None and node.val is not None:\n    seen.append(node.val)\n    node = node.next\n"
        "    if len(seen) > 5: break\nassert seen == [3, 2, 1]",
        "passed",
    ),
    (
        "generator",
        "def evens(n):\n    yield from range(0, n, 2)\n",
        "assert list(evens(7)) == [0, 2, 4, 6]\nassert sum(x for x in evens(2000)) == 999000",
        "passed",
    ),
    (
        "expected-exception",
        "def parse(s):\n    return int(s)\n",
        "try:\n    parse('x')\nexcept ValueError:\n    pass\nelse:\n    raise AssertionError('no error')\n"
        "assert parse('7') == 7",
        "passed",
    ),
    (
        "solution-constants-and-attributes",
        "LIMIT = 10\nclass Box:\n    size = 3\n",
        "assert LIMIT == 10 and LIMIT + 1 == 11\nassert Box.size * 2 == 6",
        "passed",
    ),
    ("bool-is-not-int", "def f():\n    return True\n", "assert f() == 1", "wrong_answer"),
    ("tuple-is-not-list", "def f():\n    return (1, 2)\n", "assert f() == [1, 2]", "wrong_answer"),
    (
        "own-object-where-a-value-is-needed",
        "class Five:\n    def __eq__(self, o): return True\n    def __bool__(self): return True\n"
        "def f():\n    return Five()\n",
        "assert f()",
        "wrong_answer",
    ),
    (
        "uncaught-solution-error",
        "def f(x):\n    return 1 // x\n",
        "assert f(0) == 0",
        "runtime_error",
    ),
    (
        "swallowed-exit",  # the test's `except Exception` cannot hide the solution exiting
        "import sys\ndef f(x):\n    sys.exit(0)\n",
        "try:\n    f(1)\nexcept Exception:\n    pass\nassert True",
        "runtime_error",
    ),
    (
        "redefined-builtin-the-test-uses",
        "def abs(x):\n    return 0\ndef f(x):\n    return -x\n",
        "assert abs(f(2) + 3) < 1e-9",
        "test_error",
    ),
    (
        "function-argument-at-run-time",
        "def apply(g, x):\n    return g(x)\n",
        "def double(x):\n    return 2 * x\nassert apply(double, 2) == 4",
        "test_error",
    ),
]


@pytest.mark.parametrize(("name", "code", "test", "status"), CASES, ids=[c[0] for c in CASES])
def test_what_a_test_relies_on_across_the_process_boundary(scorer, name, code, test, status):
    result = scorer.score([sample(name, code, [{"assert": test}])])[0]
    assert result.details["tests"][0]["status"] == status, result.details["tests"][0]
    if status == "test_error":
        assert result.verdict == "error" and result.reward == 0.0


def test_random_inputs_are_the_same_every_run(scorer):
    """A test drawing random inputs (HumanEval/53) draws the same ones each run: verdicts reproduce."""
    code = "def add(x, y):\n    return x + y if (x + y) % 97 else 0\n"  # wrong on a few inputs
    test = (
        "import random\nfor _ in range(200):\n"
        "    x, y = random.randint(0, 1000), random.randint(0, 1000)\n    assert add(x, y) == x + y"
    )
    results = scorer.score([sample(f"run{i}", code, [{"assert": test}]) for i in range(3)])
    reasons = {r.details["tests"][0].get("reason") for r in results}
    assert len(reasons) == 1 and {r.verdict for r in results} == {"incorrect"}
