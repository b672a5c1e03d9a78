"""Humanity's Last Exam, text-only subset, scored by rule-based verifiers.

Published layout (cais/hle, test split, Parquet): id, question, image ("" for text-only
questions), image_preview, answer, answer_type ("exactMatch" | "multipleChoice"), author_name,
rationale, rationale_image, raw_subject, category, canary. Rows with an image are left out (the
text-only subset); `categories` keeps only the named categories.

Prompt: HLE's own (centerforaisafety/hle `hle_eval/run_model_predictions.py`, `format_message`):
a system message by answer type (SYSTEM_EXACT_ANSWER / SYSTEM_MC) and the question as the user
message. Scoring: HLE grades with an LLM judge (o3-mini); this project has none, so multipleChoice
rows use the multiple_choice verifier (the answer letter, A-J) and exactMatch rows the math
verifier (equivalence of the "Exact Answer:" / \\boxed{} answer by math-verify). Numbers are a
rule-based stand-in, lower than a judge's on free-text answers, and say so in the docs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2rl_trainer.data.datasets import DatasetError, Prompt
from m2rl_trainer.eval.benchmarks.base import (
    Adapter,
    choice_field,
    collect,
    field_of,
    make_prompt,
    records,
    where_of,
)
from m2rl_trainer.eval.config import BenchmarkConfig
from m2rl_trainer.rewards.multiple_choice import ALL_LETTERS
from m2rl_trainer.rewards.options import opt

SYSTEM_EXACT_ANSWER = (
    "Your response should be in the following format:\nExplanation: {your explanation for your final "
    "answer}\nExact Answer: {your succinct, final answer}\nConfidence: {your confidence score between 0% "
    "and 100% for your answer}"
)
SYSTEM_MC = (
    "Your response should be in the following format:\nExplanation: {your explanation for your answer "
    "choice}\nAnswer: {your chosen answer}\nConfidence: {your confidence score between 0% and 100% for "
    "your answer}"
)
ANSWER_TYPES = {"exactMatch": ("math", SYSTEM_EXACT_ANSWER), "multipleChoice": ("multiple_choice", SYSTEM_MC)}


@dataclass(frozen=True)
class HLEOptions:
    categories: tuple[str, ...] | None = opt(None, "Keep only these categories (e.g. Math); null: all.")
    answer_types: tuple[str, ...] = opt(
        ("exactMatch", "multipleChoice"), "Answer types kept.", choices=tuple(ANSWER_TYPES)
    )


def load(benchmark: BenchmarkConfig, options: HLEOptions) -> list[Prompt]:
    path = Path(benchmark.dataset)
    where = where_of(benchmark, path)

    def convert(index: int, location: str, row: Any) -> Prompt | None:
        at = f"{where} {location}"
        image = row.get("image") if isinstance(row, dict) else None
        if image:  # not text-only
            return None
        answer_type = choice_field(row, "answer_type", at, ANSWER_TYPES, "type")
        if answer_type not in options.answer_types:
            return None
        category = row.get("category")
        if options.categories is not None and category not in options.categories:
            return None
        verifier, system = ANSWER_TYPES[answer_type]
        answer = str(field_of(row, "answer", at, kind=(str, int, float))).strip()
        if verifier == "multiple_choice" and (len(answer) != 1 or answer.upper() not in ALL_LETTERS):
            raise DatasetError(
                f"{at}: field 'answer': a multipleChoice answer must be one letter A-J, got {answer!r}"
            )
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": field_of(row, "question", at)},
        ]
        meta = {"answer_type": answer_type, "category": category}
        return make_prompt(benchmark, str(field_of(row, "id", at)), messages, answer, verifier, None, meta)

    return collect(benchmark, records(path, where), convert)


ADAPTER = Adapter(
    "hle",
    "Humanity's Last Exam (cais/hle), text-only rows; rule-based stand-in for its LLM judge",
    ("math", "multiple_choice"),
    HLEOptions,
    load,
)
