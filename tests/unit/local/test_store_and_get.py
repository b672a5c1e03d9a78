"""The workdir's records (statuses in the CRD schema) and `m2rl get`'s kubectl-style tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from m2rl_operator.local.get import age, json_path, render
from m2rl_operator.local.store import Record, Store, Usage

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def _obj(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "m2rl.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "creationTimestamp": "2026-12-01T11:48:00Z"},
        "spec": spec,
        "status": status,
    }


RUN = _obj(
    "RLVRRun",
    "expert-math",
    {"model": {"uri": "pvc://data/sft"}, "algorithm": {"type": "grpo", "steps": 30}},
    {"phase": "Running", "step": 12, "latestCheckpoint": {"uri": "pvc://c/step-10", "step": 10}},
)
SUITE = _obj(
    "EvalSuite",
    "quickstart",
    {},
    {
        "phase": "Succeeded",
        "cellsTotal": 2,
        "cellsSucceeded": 2,
        "results": [
            {
                "model": "sft",
                "benchmark": "math",
                "phase": "Succeeded",
                "metrics": {"avg@k": 0.5},
                "prompts": 8,
            },
            {
                "model": "sft",
                "benchmark": "code",
                "phase": "Succeeded",
                "metrics": {"avg@k": 0.25},
                "prompts": 8,
            },
        ],
    },
)


def test_records_round_trip_and_statuses_must_fit_the_crd(tmp_path: Path) -> None:
    store = Store(tmp_path)
    record = Record(RUN, "digest", Usage({"trainer": 12.5, "verifier": 3.0}, 40.0, 1))
    store.save(record)
    loaded = store.load("RLVRRun", "expert-math")
    assert loaded is not None
    assert loaded.obj == RUN and loaded.digest == "digest"
    assert loaded.usage.total_cpu_seconds == 15.5
    assert (tmp_path / "rlvrruns" / "expert-math" / "resource.json").is_file()
    bad = Record({**RUN, "status": {"phase": "Cooking"}}, "digest")
    with pytest.raises(ValidationError, match="phase"):
        store.save(bad)
    assert store.load("RLVRRun", "expert-math") == loaded  # nothing written


def test_get_prints_the_crds_printer_columns() -> None:
    records = [Record(RUN, "d"), Record(SUITE, "d")]
    assert render(records, now=NOW) == "\n".join([
        "NAME                  PHASE     STEP   STEPS   ALGORITHM   AGE",
        "rlvrrun/expert-math   Running   12     30      grpo        12m",
        "",
        "NAME                   PHASE       DONE   CELLS   AGE",
        "evalsuite/quickstart   Succeeded   2      2       12m",
    ])  # fmt: skip
    wide = render(records, "wide", now=NOW)
    assert "pvc://c/step-10" in wide  # a priority-1 column
    assert wide.endswith("evalsuite/quickstart   math    code\nsft                    0.500   0.250")
    assert render([], now=NOW) == "No resources found."
    assert '"kind": "List"' in render(records, "json")


def test_helpers() -> None:
    assert json_path(RUN, ".status.latestCheckpoint.step") == 10
    assert json_path(RUN, ".status.finalModel") is None
    times = ("2026-12-01T11:59:30Z", "2026-12-01T09:00:00Z", "2026-11-28T12:00:00Z")
    assert [age(t, NOW) for t in times] == [
        "30s", "3h", "3d",
    ]  # fmt: skip
