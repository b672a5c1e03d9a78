"""`m2rl report`: the table, the reading and the figures come from the workdirs' numbers.

The workdirs here are written by hand (records as `m2rl run` leaves them, metrics.jsonl files),
with scores chosen so that each sentence of the reading has a known answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from m2rl_operator.local.report import ReportError, collect, difference, reading, table, write_report
from m2rl_operator.local.store import Record, Store, Usage
from tests.support.paths import REPO_ROOT

DOMAINS = ("math", "code")
SFT = "pvc://data/sft"


def _run(name: str, domains: tuple[str, ...]) -> dict[str, Any]:
    return {
        "model": {"uri": SFT, "chatTemplate": False},
        "domains": [
            {"name": d, "dataset": {"uri": f"pvc://data/{d}.jsonl"}, "verifier": {"type": "math"}}
            for d in domains
        ],
        "algorithm": {"steps": 4},
        "checkpoint": {"uri": f"pvc://ckpt/{name}"},
    }


def _merge(method: str) -> dict[str, Any]:
    return {
        "method": method,
        "base": {"runRef": "expert-math"},
        "experts": [{"runRef": "expert-math"}, {"runRef": "expert-code"}],
        "output": {"uri": f"pvc://ckpt/merge-{method}"},
    }


def _save(
    store: Store, kind: str, name: str, spec: dict[str, Any], status: dict[str, Any], cpu: float
) -> None:
    obj = {"apiVersion": "m2rl.io/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec,
           "status": {"phase": "Succeeded", **status}}  # fmt: skip
    store.save(Record(obj, "d", Usage({"main": cpu}, cpu, 1)))


def _student() -> dict[str, Any]:
    """An MT-OPD run over both domains: math taught by the math expert, code by the TA merge (whose
    experts include the math expert again: its cost must count once)."""
    spec = _run("student", DOMAINS)
    spec["algorithm"] = {"type": "mt_opd", "steps": 4, "teachers": [
        {"domains": ["math"], "runRef": "expert-math"}, {"domains": ["code"], "mergeRef": "merge-ta"},
    ]}  # fmt: skip
    return spec


def make_workdir(
    root: Path, scores: dict[str, dict[str, float]], cosine: float = 0.1, student: bool = False
) -> Path:
    """A finished study: two experts, a mixed run, two merges (and with `student` an MT-OPD run), an
    EvalSuite with `scores`."""
    work = root / "work"
    store = Store(work)
    store.save_settings(root / "data")
    runs = {"expert-math": ("math",), "expert-code": ("code",), "mixed": DOMAINS}
    for name, domains in [*runs.items(), *([("student", DOMAINS)] if student else [])]:
        spec = _student() if name == "student" else _run(name, domains)
        _save(store, "RLVRRun", name, spec, {}, cpu={"mixed": 150.0, "student": 30.0}.get(name, 100.0))
        metrics = root / "data" / "ckpt" / name / "metrics.jsonl"
        metrics.parent.mkdir(parents=True)
        steps = (1, 2, 3, 2, 3, 4)  # a resumed run repeats steps 2 and 3
        lines = [
            {
                "step": s,
                "reward": s / 4,
                "per_domain": {d: {"reward": s / 4, "accuracy": s / 4} for d in domains},
                **({"opd_reverse_kl": 1 / s} if name == "student" else {}),
            }
            for s in steps
        ]
        metrics.write_text("".join(json.dumps(x) + "\n" for x in lines))
    analysis = {
        "pairwiseCosine": [{"first": "expert-math", "second": "expert-code", "cosine": cosine}],
        "signConflictFraction": 0.25,
        "taskVectorNorms": {"expert-math": 1.0, "expert-code": 2.0},
    }
    _save(store, "MergeJob", "merge-ta", _merge("task_arithmetic"), {"analysis": analysis}, cpu=5.0)
    _save(store, "MergeJob", "merge-avg", {**_merge("linear"), "base": None}, {}, cpu=4.0)
    models = [
        {"name": "sft", "model": SFT, "chatTemplate": False},
        {"name": "expert-math", "runRef": "expert-math"},
        {"name": "expert-code", "runRef": "expert-code"},
        {"name": "mixed", "runRef": "mixed"},
        {"name": "ta", "mergeRef": "merge-ta"},
        {"name": "avg", "mergeRef": "merge-avg"},
        *([{"name": "opd", "runRef": "student"}] if student else []),
    ]
    benchmarks = [{"name": d, "dataset": {"uri": f"pvc://data/h-{d}.jsonl"}, "verifier": {"type": "math"}}
                  for d in DOMAINS]  # fmt: skip
    results = [
        {"model": m, "benchmark": b, "phase": "Succeeded", "metrics": {"avg@k": v}, "prompts": 100}
        for m, row in scores.items()
        for b, v in row.items()
    ]
    counts = {"cellsTotal": len(results), "cellsSucceeded": len(results)}
    spec = {"models": models, "benchmarks": benchmarks}
    _save(store, "EvalSuite", "suite", spec, {"results": results, **counts}, cpu=60.0)
    return work


SCORES = {
    "sft": {"math": 0.40, "code": 0.30},
    "expert-math": {"math": 0.80, "code": 0.20},
    "expert-code": {"math": 0.35, "code": 0.70},
    "mixed": {"math": 0.70, "code": 0.60},
    "ta": {"math": 0.60, "code": 0.50},
    "avg": {"math": 0.45, "code": 0.35},
}


def _shift(scores: dict[str, dict[str, float]], by: float) -> dict[str, dict[str, float]]:
    """Another seed: every trained model a little different, the SFT model the same."""
    return {m: {b: v + (by if m != "sft" else 0.0) for b, v in row.items()} for m, row in scores.items()}


def test_one_workdir_table_and_reading(tmp_path: Path) -> None:
    study = collect([make_workdir(tmp_path, SCORES)])
    assert [(m.name, m.role, m.detail) for m in study.models] == [
        ("sft", "sft", SFT), ("expert-math", "expert", "math"), ("expert-code", "expert", "code"),
        ("mixed", "mixed", "math, code"), ("ta", "merge", "task_arithmetic"), ("avg", "merge", "linear"),
    ]  # fmt: skip
    rows = table(study).splitlines()
    assert rows[0] == "| model | kind | math | code | average | CPU-seconds |"
    assert rows[3] == "| expert-math | expert (math) | **0.800** | 0.200 | 0.500 | 100 |"
    assert rows[5] == "| mixed | mixed | 0.700 | 0.600 | **0.650** | 150 |"
    assert rows[6] == "| ta | merge (task_arithmetic) | 0.600 | 0.500 | 0.550 | 205 |"  # 5 + its two runs
    lines = reading(study)
    # One seed: the noise is the standard error of two accuracies on 100 prompts each.
    se = (0.8 * 0.2 / 100 + 0.4 * 0.6 / 100) ** 0.5
    assert lines[0].startswith(
        "**math**: best is expert-math (0.800); the math expert beats sft by +40.0 points, "
    )
    assert f"{0.4 / se:.1f}x the standard error ({se * 100:.1f} points)" in lines[0]
    assert "mixing wins: mixed 0.700 vs the best merge ta (task_arithmetic) 0.600, +10.0 points" in lines[0]
    se_average = (0.65 * 0.35 / 200 + 0.55 * 0.45 / 200) ** 0.5  # mixed vs ta over both benchmarks
    assert lines[2] == (
        "**the average**: best is mixed (0.650); mixing wins: mixed 0.650 vs the best merge ta "
        f"(task_arithmetic) 0.550, +10.0 points, {0.1 / se_average:.1f}x the standard error "
        f"({se_average * 100:.1f} points)."
    )
    assert lines[3] == (
        "Above sft on the average by more than the noise: mixed (+30.0 points), ta (+20.0 points), "
        "avg (+5.0 points)."
    )  # avg: 5.0 points against a standard error of 4.8 on 200 prompts
    assert lines[-1].startswith("One workdir (one seed)")


def test_seeds_give_means_and_the_seed_to_seed_spread(tmp_path: Path) -> None:
    workdirs = [
        make_workdir(tmp_path / f"seed{i}", _shift(SCORES, by)) for i, by in enumerate((0.0, 0.02, -0.02))
    ]
    study = collect(workdirs)
    assert study.seeds == 3
    assert table(study).splitlines()[3].startswith("| expert-math | expert (math) | **0.800 ± 0.020** |")
    lines = reading(study)
    assert "the math expert beats sft by +40.0 points, 20.0x the seed-to-seed spread (2.0 points)" in lines[0]
    assert not any(line.startswith("One workdir") for line in lines)
    assert study.curves["math"]["expert-math"][2] == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]


def test_a_difference_inside_the_noise_is_called_so(tmp_path: Path) -> None:
    close = {**SCORES, "ta": {"math": 0.69, "code": 0.61}}
    lines = reading(collect([make_workdir(tmp_path, close)]))
    assert (
        "mixing and merging are within the noise of each other: mixed 0.650 vs the best merge ta" in lines[2]
    )
    d = difference([0.5, 0.6], [0.5, 0.5], 100)
    assert (round(d.value, 3), round(d.noise, 4), d.kind) == (0.05, 0.0707, "spread")


def test_write_report_draws_the_figures(tmp_path: Path) -> None:
    work = make_workdir(tmp_path, SCORES, cosine=-0.3)
    path = write_report([work], tmp_path / "report")
    text = path.read_text()
    for figure in ("reward-curves.png", "task-vectors.png", "cost.png"):
        assert f"]({figure})" in text
        assert (tmp_path / "report" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Sign conflicts: 25.0% of the parameters." in text
    assert "| mixed | mixed | 0.700 | 0.600 | **0.650** | 150 |" in text


def test_an_mt_opd_student_is_its_own_kind_in_table_reading_costs_and_figures(tmp_path: Path) -> None:
    scores = {**SCORES, "opd": {"math": 0.90, "code": 0.46}}
    work = make_workdir(tmp_path, scores, student=True)
    study = collect([work])
    (opd,) = study.model("mt-opd")
    teachers = {"math": "expert-math", "code": "ta"}  # a teacher merge is matched to its row too
    assert (opd.name, opd.detail, opd.teachers) == ("opd", "2 teachers", teachers)
    # Its own run (30) plus what its teachers are made from, each once: expert-math (100), merge-ta
    # (5) and merge-ta's experts (expert-math again, expert-code 100).
    assert (opd.cost, opd.own_cost) == ([235.0], [30.0])
    rows = table(study).splitlines()
    assert rows[-1] == "| opd | mt-opd (2 teachers) | **0.900** | 0.460 | **0.680** | 235 |"
    assert study.distillation == {"student": [[(1, 1.0), (2, 0.5), (3, 1 / 3), (4, 0.25)]]}
    assert study.curves["code"]["student"] == [[(1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0)]]

    def se(a: float, b: float, n: int) -> float:
        return (a * (1 - a) / n + b * (1 - b) / n) ** 0.5

    lines = reading(study)
    # math: MT-OPD ahead of the other two ways by more than the noise.
    mixed, merged = se(0.9, 0.7, 100), se(0.9, 0.6, 100)
    assert lines[0].endswith(
        "; MT-OPD wins: the MT-OPD student opd 0.900 vs mixed 0.700, +20.0 points, "
        f"{0.2 / mixed:.1f}x the standard error ({mixed * 100:.1f} points); vs the best merge ta "
        f"(task_arithmetic) 0.600, +30.0 points, {0.3 / merged:.1f}x the standard error "
        f"({merged * 100:.1f} points)."
    )
    # code: mixing leads; merging (0.5) and MT-OPD (0.46) both clearly behind it.
    assert "; mixing wins: mixed 0.600 vs the best merge ta (task_arithmetic) 0.500, +10.0 points" in lines[1]
    assert "; vs the MT-OPD student opd 0.460, +14.0 points" in lines[1]
    # the average: MT-OPD (0.680) and mixing (0.650) inside the noise; merging clearly behind.
    assert (
        "; MT-OPD and mixing are within the noise of each other: the MT-OPD student opd 0.680 vs mixed "
        f"0.650, +3.0 points, {0.03 / se(0.68, 0.65, 200):.1f}x the standard error" in lines[2]
    )
    assert lines[3] == (
        "Above sft on the average by more than the noise: mixed (+30.0 points), ta (+20.0 points), "
        "avg (+5.0 points), opd (+33.0 points)."
    )
    # The share of each teacher's gain over sft it kept: math (0.9-0.4)/(0.8-0.4), code (0.46-0.3)/(0.5-0.3).
    assert lines[4] == (
        "MT-OPD: opd keeps this share of its teachers' gains over sft: 125% on math (0.900, its teacher "
        "0.800), 80% on code (0.460, its teacher 0.500)."
    )
    assert lines[5].endswith("; the MT-OPD student opd adds 30 of its own to its teachers'.")

    text = write_report([work], tmp_path / "report").read_text()
    assert "](distillation.png)" in text and "MT-OPD runs (dashed)" in text
    assert (tmp_path / "report" / "distillation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "an MT-OPD student: its own run plus its teachers' runs" in text


def test_the_seed_bench_checks_the_student_without_making_it_a_criterion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/bench_quickstart.py's checks over seeds: the MT-OPD row is checked and printed, and the
    exit status stays issue 12's (experts, mixed run, one merge)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    import bench_quickstart

    scores = {**SCORES, "opd": {"math": 0.30, "code": 0.30}}  # a student below sft
    workdirs = [
        make_workdir(tmp_path / f"seed{i}", _shift(scores, by), student=True)
        for i, by in enumerate((0.0, 0.02, -0.02))
    ]
    found = bench_quickstart.checks(collect(workdirs))
    assert [(role, what, ok) for role, what, ok, _ in found] == [
        ("expert", "expert-math beats sft on math", True),
        ("expert", "expert-code beats sft on code", True),
        ("mixed", "mixed beats sft on the average", True),
        ("merge", "ta beats sft on the average", True),
        ("merge", "avg beats sft on the average", True),
        ("mt-opd", "opd beats sft on the average", False),
    ]
    assert bench_quickstart.passed(found)
    mixed_fails = [(r, w, ok and r != "mixed", d) for r, w, ok, d in found]
    assert not bench_quickstart.passed(mixed_fails)


def test_unfinished_or_missing_workdirs_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a `m2rl run` workdir"):
        collect([tmp_path])
    work = make_workdir(tmp_path, SCORES)
    record = Store(work).load("EvalSuite", "suite")
    assert record is not None
    record.obj["status"]["phase"] = "Running"
    Store(work).save(record)
    with pytest.raises(ReportError, match=r"EvalSuite/suite has not succeeded \(Running\)"):
        collect([work])
