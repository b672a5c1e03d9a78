"""GPQA-Diamond: four answers per question, shuffled by a seeded permutation, "Answer: $LETTER".

Published layout (Idavidrein/gpqa `gpqa_diamond.csv`, 198 rows; also as JSONL/Parquet exports):
"Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3",
"Record ID", plus annotation columns this adapter ignores.

The M2RL study puts the correct answer at `random.randint(0, 3)` with an unseeded RNG
(Mosi-AI/M2RL `data/download_gpqa.py`), so its letters cannot be reproduced. Here the order is a
permutation of the four answers drawn from SHA-256 of (shuffle_seed, Record ID): the same for every
model and run, different per question, and recorded with each sample (`meta.choice_order`: which
published column each letter shows). Prompt: the study's, character for character:
"Answer the following multiple choice question. The last line of your response should be of the
following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by
step before answering.\\n\\n{Question}\\n\\nA) {A}\\nB) {B}\\nC) {C}\\nD) {D}" (answers stripped).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2rl_trainer.data.datasets import Prompt
from m2rl_trainer.eval.benchmarks.base import (
    Adapter,
    collect,
    field_of,
    id_text,
    make_prompt,
    records,
    seeded_int,
    where_of,
)
from m2rl_trainer.eval.config import BenchmarkConfig
from m2rl_trainer.rewards.options import opt

INSTRUCTION = (
    "Answer the following multiple choice question. The last line of your response should be of the "
    "following format: 'Answer: $LETTER' (without quotes) where LETTER is one of ABCD. Think step by "
    "step before answering."
)
ANSWER_COLUMNS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
LETTERS = "ABCD"


@dataclass(frozen=True)
class GPQAOptions:
    shuffle_seed: int = opt(0, "Seed of the per-question answer order (with the Record ID).")


def choice_order(seed: int, record_id: str) -> list[str]:
    """The published columns in the order the letters A-D show them."""
    order = list(ANSWER_COLUMNS)
    random.Random(seeded_int("m2rl-gpqa", seed, record_id)).shuffle(order)
    return order


def render(question: str, answers: list[str]) -> str:
    shown = "\n".join(f"{letter}) {answer.strip()}" for letter, answer in zip(LETTERS, answers, strict=True))
    return f"{INSTRUCTION}\n\n{question.strip()}\n\n{shown}"


def choice_prompt(
    benchmark: BenchmarkConfig,
    prompt_id: str,
    question: str,
    answers: list[str],
    letter: str,
    meta: dict[str, Any],
) -> Prompt:
    """A four-answer question in the study's prompt, scored by the multiple_choice verifier
    (GPQA's and MMLU-Redux's rows)."""
    return make_prompt(
        benchmark, prompt_id, render(question, answers), letter, "multiple_choice", {"num_choices": 4}, meta
    )


def load(benchmark: BenchmarkConfig, options: GPQAOptions) -> list[Prompt]:
    path = Path(benchmark.dataset)
    where = where_of(benchmark, path)

    def convert(index: int, location: str, row: Any) -> Prompt:
        at = f"{where} {location}"
        question = field_of(row, "Question", at)
        answers = {column: field_of(row, column, at) for column in ANSWER_COLUMNS}
        record_id = id_text(field_of(row, "Record ID", at, kind=(str, int)), at, "Record ID")
        order = choice_order(options.shuffle_seed, record_id)
        letter = LETTERS[order.index("Correct Answer")]
        meta = {"choice_order": order, "correct_letter": letter, "shuffle_seed": options.shuffle_seed}
        return choice_prompt(
            benchmark, record_id, question, [answers[column] for column in order], letter, meta
        )

    return collect(benchmark, records(path, where), convert)


ADAPTER = Adapter(
    "gpqa",
    "GPQA (Idavidrein/gpqa CSV columns), answers in a seeded order per question, the study's prompt",
    ("multiple_choice",),
    GPQAOptions,
    load,
)
