"""`m2rl get -w WORKDIR`: the workdir's resources as `kubectl get` prints them.

Columns are the CRDs' own printer columns (api/crd.py), evaluated on the recorded objects: the
same view as `kubectl get rlvrruns,mergejobs,evalsuites` on a cluster. `-o wide` adds the
priority-1 columns and each EvalSuite's results table; `-o yaml|json` prints the objects.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import yaml

from m2rl_operator.api.crd import KINDS_BY_NAME
from m2rl_operator.local.store import Record


def json_path(obj: Any, path: str) -> Any:
    """The value at a printer column's simple JSONPath (".status.phase"); None when absent."""
    value = obj
    for part in path.strip(".").split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def age(timestamp: str | None, now: datetime) -> str:
    """kubectl's short age: 45s, 12m, 3h, 2d."""
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _cell(value: Any, column: dict[str, Any], now: datetime) -> str:
    if column["type"] == "date":
        return age(value, now)
    return "" if value is None else str(value)


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def render(records: list[Record], output: str = "", now: datetime | None = None) -> str:
    """The text `m2rl get` prints for `records` (output: "", "wide", "yaml" or "json")."""
    if output in ("yaml", "json"):
        objects = [r.obj for r in records]
        listing = {"apiVersion": "v1", "kind": "List", "items": objects}
        return json.dumps(listing, indent=2) if output == "json" else yaml.safe_dump(listing, sort_keys=False)
    now = now or datetime.now(UTC)
    blocks = []
    for kind_name in ("RLVRRun", "MergeJob", "EvalSuite"):
        mine = [r for r in records if r.kind == kind_name]
        if not mine:
            continue
        kind = KINDS_BY_NAME[kind_name]
        columns = [c for c in kind.printer_columns if output == "wide" or not c.get("priority")]
        rows = [["NAME", *(c["name"].upper() for c in columns)]]
        for record in mine:
            obj = record.obj
            rows.append([f"{kind.singular}/{record.name}",
                         *(_cell(json_path(obj, c["jsonPath"]), c, now) for c in columns)])  # fmt: skip
        blocks.append(format_table(rows))
        if output == "wide" and kind_name == "EvalSuite":
            blocks += [results_table(r) for r in mine if r.status.get("results")]
    return "\n\n".join(blocks) if blocks else "No resources found."


def results_table(record: Record) -> str:
    """An EvalSuite's results as models x benchmarks (each benchmark's first metric)."""
    cells = {(c["model"], c["benchmark"]): c for c in record.status.get("results") or []}
    models = list(dict.fromkeys(c["model"] for c in cells.values()))
    benchmarks = list(dict.fromkeys(c["benchmark"] for c in cells.values()))
    rows = [[f"evalsuite/{record.name}", *benchmarks]]
    for model in models:
        row = [model]
        for benchmark in benchmarks:
            cell = cells[(model, benchmark)]
            metrics = cell.get("metrics") or {}
            row.append(f"{next(iter(metrics.values())):.3f}" if metrics else cell["phase"])
        rows.append(row)
    return format_table(rows)
