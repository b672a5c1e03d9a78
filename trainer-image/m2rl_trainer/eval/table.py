"""The comparison table: models x (benchmark, metric) as Markdown, from several models' results.

Input is what `m2rl-eval` writes (`results.json`) or reports (the termination message): mappings
`{"model": NAME, "results": [{"benchmark": B, "metrics": {"avg@k": v, ...}, "prompts": N}, ...]}`,
plus optional per-benchmark `figures` (IFEval's four), shown after the metrics.
Rows keep the order of the inputs, columns the order in which benchmarks and metrics first appear;
a cell a model has no value for shows "-".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def render_table(results: Sequence[Mapping[str, Any]], digits: int = 3) -> str:
    """A Markdown table with one row per model and one column per (benchmark, metric)."""
    columns: list[tuple[str, str]] = []
    rows: list[tuple[str, dict[tuple[str, str], float]]] = []
    for result in results:
        cells: dict[tuple[str, str], float] = {}
        for cell in result.get("results") or []:
            # A format's own figures (IFEval's four) are columns too, after the configured metrics.
            numbers = {**(cell.get("metrics") or {}), **(cell.get("figures") or {})}
            for metric, value in numbers.items():
                key = (str(cell["benchmark"]), str(metric))
                if key not in columns:
                    columns.append(key)
                cells[key] = float(value)
        rows.append((str(result.get("model", "?")), cells))
    header = ["model", *(f"{benchmark} {metric}" for benchmark, metric in columns)]
    lines = [_row(header), _row(["---", *("---:" for _ in columns)])]  # numbers right-aligned
    for model, cells in rows:
        lines.append(_row([model, *(f"{cells[c]:.{digits}f}" if c in cells else "-" for c in columns)]))
    return "\n".join(lines) + "\n"


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Results from files, and from directories (their */results.json, as `--output` lays them out)."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*/results.json")) if path.is_dir() else [path]
    loaded = []
    for file in files:
        try:
            data = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"{file}: cannot read results: {error}") from error
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise ValueError(f"{file}: not an m2rl-eval result (needs 'model' and a 'results' list)")
        loaded.append(data)
    return loaded
