"""Benchmark adapters: published benchmark files -> prompts in the study's templates (config `format`).

One table, keyed by the name a benchmark's `format` carries. `jsonl` is the generic adapter (any
JSONL / JSON / Parquet file, columns mapped by `fields`, the benchmark's verifier); the others
read one published layout each and know their verifier, template and options:

  aime24 aime25 amc23 math500   math.py           gpqa          gpqa.py
  mmlu_redux                    mmlu_redux.py     livecodebench livecodebench.py
  hle                           hle.py            ifeval ifbench ifeval.py
  nemotron                      (data/nemotron.py: held-out rows of the training blend)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from m2rl_trainer.data.datasets import DatasetError, Prompt
from m2rl_trainer.eval.benchmarks.base import Adapter, NoOptions, parse_format_options
from m2rl_trainer.eval.config import BenchmarkConfig
from m2rl_trainer.rewards.options import opt

__all__ = ["ADAPTERS", "Adapter", "adapter", "benchmark_problems", "load_benchmark_prompts"]


def _load_jsonl(benchmark: BenchmarkConfig, _options: NoOptions) -> list[Prompt]:
    from m2rl_trainer.config import DomainConfig
    from m2rl_trainer.data.datasets import load_domain

    domain = DomainConfig(
        name=benchmark.name,
        dataset=benchmark.dataset,
        verifier=benchmark.verifier,
        fields=benchmark.fields,
        verifier_options=dict(benchmark.verifier_options),
    )
    return load_domain(domain)


@dataclass(frozen=True)
class NemotronOptions:
    domains: tuple[str, ...] | None = opt(
        None, "Study domains whose rows are used (math, science, if, code); null: those of the verifier."
    )


def _load_nemotron(benchmark: BenchmarkConfig, options: NemotronOptions) -> list[Prompt]:
    """Held-out rows of the Nemotron RL blend, read as training reads them (data/nemotron.py)."""
    from m2rl_trainer.config import DomainConfig
    from m2rl_trainer.data.datasets import load_domain

    domain = DomainConfig(
        name=benchmark.name,
        dataset=benchmark.dataset,
        verifier=verifier_of(benchmark),
        verifier_options=dict(benchmark.verifier_options),
        format="nemotron",
        format_options={} if options.domains is None else {"domains": list(options.domains)},
    )
    return load_domain(domain)


@functools.cache
def _table() -> dict[str, Adapter]:
    from m2rl_trainer.eval.benchmarks import gpqa, hle, ifeval, livecodebench, math, mmlu_redux
    from m2rl_trainer.rewards import VERIFIERS

    generic = Adapter(
        "jsonl",
        "any .jsonl/.json/.parquet file, columns mapped by `fields`",
        tuple(VERIFIERS),
        NoOptions,
        _load_jsonl,
    )
    nemotron = Adapter(
        "nemotron",
        "held-out rows of the Nemotron RL blend, as training reads them",
        ("math", "multiple_choice", "ifeval", "code"),
        NemotronOptions,
        _load_nemotron,
    )
    adapters = [generic, *math.ADAPTERS, gpqa.ADAPTER, mmlu_redux.ADAPTER, livecodebench.ADAPTER, hle.ADAPTER]
    adapters.append(nemotron)
    adapters += ifeval.ADAPTERS
    return {a.name: a for a in adapters}


ADAPTERS = (
    "jsonl",
    "aime24",
    "aime25",
    "amc23",
    "math500",
    "gpqa",
    "mmlu_redux",
    "livecodebench",
    "hle",
    "ifeval",
    "ifbench",
)


def adapter(name: str) -> Adapter:
    table = _table()
    if name not in table:
        raise DatasetError(f"unknown benchmark format {name!r}; known: {', '.join(table)}")
    return table[name]


def benchmark_problems(benchmark: BenchmarkConfig, where: str) -> list[str]:
    """Config problems of a benchmark's format, verifier and format options (no file is read)."""
    from m2rl_trainer.rewards import VERIFIERS

    table = _table()
    if benchmark.format not in table:
        return [f"{where}.format: unknown format {benchmark.format!r}; known: {', '.join(table)}"]
    found = table[benchmark.format]
    problems = []
    if benchmark.format == "jsonl" and not benchmark.verifier:
        problems.append(f"{where}.verifier: the jsonl format needs a verifier")
    elif benchmark.verifier in VERIFIERS and benchmark.verifier not in found.verifiers:
        problems.append(
            f"{where}.verifier: format {found.name!r} is scored by {' or '.join(found.verifiers)}, "
            f"not {benchmark.verifier!r}"
        )
    try:
        parse_format_options(found.name, found.options_type, benchmark.format_options)
    except ValueError as error:
        problems.append(f"{where}.format_options: {error}")
    if benchmark.format != "jsonl" and benchmark.fields != type(benchmark.fields)():
        problems.append(f"{where}.fields: format {found.name!r} reads its own columns; leave fields unset")
    return problems


def verifier_of(benchmark: BenchmarkConfig) -> str:
    """The benchmark's verifier: as configured, else its format's default."""
    return benchmark.verifier or adapter(benchmark.format).verifiers[0]


def load_benchmark_prompts(benchmark: BenchmarkConfig) -> list[Prompt]:
    """The benchmark's prompts from its file(s); every row checked (references are checked by the caller)."""
    found = adapter(benchmark.format)
    options: Any = parse_format_options(found.name, found.options_type, benchmark.format_options)
    return found.load(benchmark, options)
