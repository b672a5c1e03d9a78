"""MMLU-Redux: MMLU questions re-annotated for errors, the annotation used as a filter.

Published layout (edinburgh-dawg/mmlu-redux-2.0, one config per subject; exported as JSONL or
Parquet, several subjects may share a file): "question", "choices" (4 strings), "answer" (0-3),
"error_type" ("ok", "wrong_groundtruth", "no_correct_answer", "multiple_correct_answers",
"bad_question_clarity", "bad_options_clarity", "expert"), "correct_answer" (for
wrong_groundtruth: the right option), "source", "potential_reason"; "subject" where an export adds it.

Filter (option `error_types`): keep only rows whose annotation is listed; default ["ok"], the
questions the annotators found sound (the paper's "Are We Done with MMLU?" clean subset). With
`use_corrected_answer`, "wrong_groundtruth" rows may be kept too, scored against their corrected
answer. Prompt: the same multiple-choice template as GPQA's (the study's and OpenAI simple-evals'
"Answer: $LETTER" instruction), choices in their published order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m2rl_trainer.data.datasets import DatasetError, Prompt
from m2rl_trainer.eval.benchmarks.base import Adapter, choice_field, collect, field_of, records, where_of
from m2rl_trainer.eval.benchmarks.gpqa import LETTERS, choice_prompt
from m2rl_trainer.eval.config import BenchmarkConfig
from m2rl_trainer.rewards.options import opt

ERROR_TYPES = (
    "ok",
    "wrong_groundtruth",
    "no_correct_answer",
    "multiple_correct_answers",
    "bad_question_clarity",
    "bad_options_clarity",
    "expert",
)


@dataclass(frozen=True)
class MMLUReduxOptions:
    error_types: tuple[str, ...] = opt(("ok",), "Annotations of the rows kept.", choices=ERROR_TYPES)
    use_corrected_answer: bool = opt(
        False, "Score kept wrong_groundtruth rows against their 'correct_answer' instead of 'answer'."
    )

    def check(self) -> str | None:
        if "wrong_groundtruth" in self.error_types and not self.use_corrected_answer:
            return "keeping wrong_groundtruth rows needs use_corrected_answer (their 'answer' is wrong)"
        return None


def _letter(value: Any, where: str, name: str) -> str:
    """An answer given as an index 0-3 (int or digit string) or a letter A-D."""
    if isinstance(value, bool):
        raise DatasetError(f"{where}: field {name!r} must be 0-3 or A-D, got {value!r}")
    text = str(value).strip().upper()
    if text.isdigit() and int(text) < len(LETTERS):
        return LETTERS[int(text)]
    if len(text) == 1 and text in LETTERS:
        return text
    raise DatasetError(f"{where}: field {name!r} must be 0-3 or A-D, got {value!r}")


def load(benchmark: BenchmarkConfig, options: MMLUReduxOptions) -> list[Prompt]:
    path = Path(benchmark.dataset)
    where = where_of(benchmark, path)

    def convert(index: int, location: str, row: Any) -> Prompt | None:
        at = f"{where} {location}"
        error_type = choice_field(row, "error_type", at, ERROR_TYPES, "annotation")
        if error_type not in options.error_types:
            return None
        question = field_of(row, "question", at)
        choices = field_of(row, "choices", at, kind=list)
        if len(choices) != 4 or not all(isinstance(c, str) for c in choices):
            raise DatasetError(f"{at}: field 'choices' must be a list of 4 strings")
        if error_type == "wrong_groundtruth":
            letter = _letter(field_of(row, "correct_answer", at, kind=(str, int)), at, "correct_answer")
        else:
            letter = _letter(field_of(row, "answer", at, kind=(int, str)), at, "answer")
        subject = row.get("subject")
        prompt_id = f"{subject}/{index}" if isinstance(subject, str) and subject else str(index)
        meta = {"error_type": error_type, **({"subject": subject} if isinstance(subject, str) else {})}
        return choice_prompt(benchmark, prompt_id, question, choices, letter, meta)

    return collect(benchmark, records(path, where), convert)


ADAPTER = Adapter(
    "mmlu_redux",
    "MMLU-Redux (edinburgh-dawg/mmlu-redux-2.0 columns), filtered by its error annotation",
    ("multiple_choice",),
    MMLUReduxOptions,
    load,
)
