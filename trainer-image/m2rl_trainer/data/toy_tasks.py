"""Toy tasks with verifiable answers, for tests, the quickstart and benchmarks (no downloads).

Each row is `{"prompt": "Q: ... A:", "answer": "7"}`; the expected completion is
` \\boxed{7}` so the math verifier scores it. Train and held-out splits never share a question.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TASKS = ("add", "max3")


def _question(task: str, rng: random.Random, max_operand: int) -> tuple[str, int]:
    if task == "add":
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        return f"Q: {a}+{b}= A:", a + b
    if task == "max3":
        digits = [rng.randint(0, max_operand) for _ in range(3)]
        return f"Q: max {' '.join(map(str, digits))}= A:", max(digits)
    raise ValueError(f"toy task {task!r} is unknown (known: {', '.join(TASKS)})")


def toy_splits(
    task: str, n_train: int, n_heldout: int, seed: int = 0, max_operand: int = 9
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Disjoint train and held-out rows; raises if the task has too few distinct questions."""
    rng = random.Random(seed)
    seen: dict[str, int] = {}
    attempts = 0
    while len(seen) < n_train + n_heldout:
        attempts += 1
        if attempts > 100 * (n_train + n_heldout):
            raise ValueError(f"toy task {task!r} has fewer than {n_train + n_heldout} distinct questions")
        question, answer = _question(task, rng, max_operand)
        seen.setdefault(question, answer)
    rows = [{"prompt": q, "answer": str(a)} for q, a in seen.items()]
    return rows[:n_train], rows[n_train:]


def completion_for(row: dict[str, str]) -> str:
    """The reference completion a supervised warm-up trains on."""
    return f" \\boxed{{{row['answer']}}}"


def write_jsonl(rows: list[dict[str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
