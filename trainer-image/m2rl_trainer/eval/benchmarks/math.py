"""AIME 2024 / 2025, AMC 2023, MATH-500: a problem and a final answer, scored by the math verifier.

Published layouts (the Hugging Face copies the M2RL study and most reports read):
  aime24   math-ai/aime24: id, problem, solution ("\\boxed{204}"), url   (the study's file)
  aime25   math-ai/aime25: id, problem, answer
  amc23    math-ai/amc23: id, question, answer (a number), url
  math500  HuggingFaceH4/MATH-500: problem, solution, answer, subject, level, unique_id
Other copies spell the columns differently (Maxwell-Jia/AIME_2024: ID, Problem, Solution, Answer);
each adapter accepts the spellings listed in `LAYOUTS`, first match wins. The answer is the answer
column, else the last \\boxed{} of the solution column (what the study does for aime24:
`solution[7:-1]`, Mosi-AI/M2RL `data/download_aime.py`).

Prompt: the study's evaluation template for AIME (`download_aime.py`), used for all four:
"Solve the following math problem step by step. The last line of your response should be of the
form Answer: \\boxed{$Answer} (without quotes) where $Answer is the answer to the problem.\\n\\n"
followed by the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2rl_trainer.data.datasets import DatasetError, Prompt
from m2rl_trainer.eval.benchmarks.base import (
    Adapter,
    NoOptions,
    collect,
    first_field,
    id_text,
    make_prompt,
    records,
    where_of,
)
from m2rl_trainer.eval.config import BenchmarkConfig

TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be of the "
    "form Answer: \\boxed{$Answer} (without quotes) where $Answer is the answer to the problem.\n\n"
)


@dataclass(frozen=True)
class Layout:
    ids: tuple[str, ...]
    problems: tuple[str, ...]
    answers: tuple[str, ...]
    solutions: tuple[str, ...] = ("solution", "Solution")


LAYOUTS = {
    "aime24": Layout(("id", "ID"), ("problem", "Problem"), ("answer", "Answer")),
    "aime25": Layout(("id", "ID"), ("problem", "Problem", "question"), ("answer", "Answer")),
    "amc23": Layout(("id", "ID"), ("question", "problem", "Problem"), ("answer", "Answer")),
    "math500": Layout(("unique_id", "id"), ("problem",), ("answer",)),
}


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed")
    while start != -1:
        brace = text.find("{", start)
        if brace != -1 and not text[start + len("\\boxed") : brace].strip():
            depth = 0
            for i in range(brace, len(text)):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if depth == 0:
                    return text[brace + 1 : i].strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def answer_text(value: Any) -> str:
    """An answer cell as text: AMC's numbers come as floats (27.0 -> "27")."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _loader(name: str) -> Any:
    layout = LAYOUTS[name]

    def load(benchmark: BenchmarkConfig, _options: NoOptions) -> list[Prompt]:
        path = Path(benchmark.dataset)
        where = where_of(benchmark, path)

        def convert(index: int, location: str, row: Any) -> Prompt:
            at = f"{where} {location}"
            problem = first_field(row, layout.problems, at)
            if any(column in row for column in layout.answers):
                answer = answer_text(first_field(row, layout.answers, at, kind=(str, int, float)))
            else:
                solution = first_field(row, layout.solutions, at)
                boxed = last_boxed(solution)
                if boxed is None:
                    raise DatasetError(
                        f"{at}: field {layout.solutions[0]!r}: no \\boxed{{}} answer in the solution "
                        f"(and no {layout.answers[0]!r} column)"
                    )
                answer = boxed
            if not answer:
                raise DatasetError(f"{at}: the answer is empty")
            ids = [column for column in layout.ids if column in row]
            prompt_id = id_text(row[ids[0]], at, ids[0]) if ids else str(index)
            return make_prompt(benchmark, prompt_id, TEMPLATE + problem.strip(), answer, "math")

        return collect(benchmark, records(path, where), convert)

    return load


SUMMARIES = {
    "aime24": "AIME 2024 (math-ai/aime24: problem, \\boxed{} solution)",
    "aime25": "AIME 2025 (math-ai/aime25: problem, answer)",
    "amc23": "AMC 2023 (math-ai/amc23: question, answer)",
    "math500": "MATH-500 (HuggingFaceH4/MATH-500: problem, answer, unique_id)",
}

ADAPTERS = [Adapter(name, SUMMARIES[name], ("math",), NoOptions, _loader(name)) for name in LAYOUTS]
