"""Dataset formats beyond the column-mapped `jsonl` one, for training domains (config `format`).

One table, keyed by the name a domain's `format` carries; each entry validates its options and
loads the domain's prompts. Evaluation benchmarks have their own table (`eval/benchmarks`), which
includes these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from m2rl_trainer.config import DomainConfig
from m2rl_trainer.data.datasets import DatasetError, Prompt


@dataclass(frozen=True)
class DomainFormat:
    name: str
    summary: str
    check_options: Callable[[DomainConfig], list[str]]  # problems, as messages without the path
    load: Callable[[DomainConfig], list[Prompt]]


def _formats() -> dict[str, DomainFormat]:
    from m2rl_trainer.data import nemotron

    return {
        "nemotron": DomainFormat(
            "nemotron",
            "Nemotron RL blend rows (train_complete.jsonl), routed by `dataset` as the M2RL study does",
            nemotron.option_problems,
            nemotron.load_domain,
        )
    }


FORMAT_NAMES = ("jsonl", "nemotron")


def format_problems(domain: DomainConfig, where: str) -> list[str]:
    """Config problems of a domain's format and its options (empty: fine)."""
    if domain.format == "jsonl":
        if domain.format_options:
            return [f"{where}.format_options: the jsonl format takes no options (use fields)"]
        return []
    formats = _formats()
    if domain.format not in formats:
        return [f"{where}.format: unknown format {domain.format!r}; known: {', '.join(FORMAT_NAMES)}"]
    return [f"{where}.format_options: {p}" for p in formats[domain.format].check_options(domain)]


def load_formatted_domain(domain: DomainConfig) -> list[Prompt]:
    formats = _formats()
    if domain.format not in formats:
        raise DatasetError(f"domain {domain.name!r}: unknown format {domain.format!r}")
    return formats[domain.format].load(domain)


def describe() -> list[dict[str, Any]]:
    return [{"name": f.name, "summary": f.summary} for f in _formats().values()]
