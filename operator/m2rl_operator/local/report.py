"""`m2rl report WORKDIR...`: the study's table, figures and a reading, from `m2rl run` workdirs.

Everything comes from what the runs left: the EvalSuite's results table (status), each RLVRRun's
metrics.jsonl, each MergeJob's task-vector analysis (status), and the CPU-seconds the runner
measured per resource. Several workdirs are the same pipeline with different seeds: cells are then
means over seeds and every comparison is put against the seed-to-seed spread (the sample standard
deviation over seeds of the difference it reports). With one workdir the yardstick is the
standard error of each held-out score instead, and the report says so.

The roles of the models are read from the specs, never from their names: a model given by an
RLVRRun of type mt_opd is an MT-OPD student (distilled from its teachers), another single-domain
RLVRRun is that domain's expert, a multi-domain run is mixed, a MergeJob is a merge (named by its
method), and a model URI that the runs start from is the SFT base. The three ways to one model of
the study (mixing, merging, MT-OPD) are compared in the reading.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2rl_operator.api.evalsuite import EvalSuiteSpec
from m2rl_operator.api.mergejob import MergeJobSpec
from m2rl_operator.api.rlvrrun import RLVRRunSpec
from m2rl_operator.local.plan import Layout, Resource, output_dir
from m2rl_operator.local.store import Record, Store


class ReportError(RuntimeError):
    """The workdirs cannot make a report (missing, unfinished, or not the same pipeline)."""


@dataclass
class Model:
    """A row of the table: one model of the EvalSuite, its role and its scores per seed."""

    name: str
    role: str  # base, sft, expert, mixed, merge, mt-opd
    detail: str  # the expert's domain, the merge's method, the student's teachers, the model's URI
    scores: dict[str, list[float]] = field(default_factory=dict)  # benchmark -> one value per seed
    prompts: dict[str, int] = field(default_factory=dict)  # benchmark -> held-out prompts
    # CPU-seconds per seed to make the model: a run's own; a merge's or an MT-OPD student's with
    # those of the runs (and merges) it is made from
    cost: list[float] = field(default_factory=list)
    own_cost: list[float] = field(default_factory=list)  # a merge's or a student's own processes, per seed
    teachers: dict[str, str] = field(default_factory=dict)  # MT-OPD: domain -> evaluated model teaching it

    def mean(self, benchmark: str) -> float:
        return statistics.fmean(self.scores[benchmark])

    def average(self) -> float:
        return statistics.fmean(self.mean(b) for b in self.scores)

    def average_per_seed(self) -> list[float]:
        seeds = len(next(iter(self.scores.values())))
        return [statistics.fmean(v[s] for v in self.scores.values()) for s in range(seeds)]


@dataclass
class Study:
    """What the report shows, from one or more workdirs (seeds)."""

    workdirs: list[Path]
    suite: str
    benchmarks: list[str]
    metric: dict[str, str]  # benchmark -> the metric shown (its first)
    models: list[Model]
    curves: dict[str, dict[str, list[list[tuple[int, float]]]]]  # domain -> run -> per seed [(step, reward)]
    distillation: dict[str, list[list[tuple[int, float]]]]  # MT-OPD run -> per seed [(step, reverse KL)]
    cosine: dict[tuple[str, str], list[float]]  # expert pair -> per seed
    analysis_source: str | None
    sign_conflict: list[float]
    norms: dict[str, list[float]]
    expert_domain: dict[str, str]  # model name -> benchmark it is the expert of

    @property
    def seeds(self) -> int:
        return len(self.workdirs)

    def model(self, role: str) -> list[Model]:
        return [m for m in self.models if m.role == role]


# ---- reading the workdirs -----------------------------------------------------------------------------


def _records(workdir: Path) -> dict[str, Record]:
    if not (workdir / "run.json").is_file():
        raise ReportError(f"{workdir}: not a `m2rl run` workdir (no run.json)")
    return {f"{r.kind}/{r.name}": r for r in Store(workdir).all()}


def _metrics(path: Path) -> list[dict[str, Any]]:
    """A run's metrics.jsonl, one record per step (a resumed run repeats steps: the last one wins)."""
    by_step: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


def _resource(record: Record) -> Resource:
    return Resource(record.kind, record.name, record.obj, f"{record.kind}/{record.name}")


def _cost(key: str, records: dict[str, Record]) -> float | None:
    """CPU-seconds to make a model: its run's; a merge's or an MT-OPD run's plus those of every run
    and merge it is made from (its references, transitively: a merge's experts, a student's
    teachers), each counted once."""
    if key not in records:
        return None
    made_from, todo = {key}, [key]
    while todo:
        record = records.get(todo.pop())
        for ref in _resource(record).references() if record is not None else []:
            if ref not in made_from:
                made_from.add(ref)
                todo.append(ref)
    return sum(records[k].usage.total_cpu_seconds for k in made_from if k in records)


def _is_mt_opd(spec: RLVRRunSpec) -> bool:
    return spec.algorithm.type == "mt_opd"


def _roles(spec: EvalSuiteSpec, records: dict[str, Record]) -> tuple[list[Model], dict[str, str]]:
    """The suite's models with their roles, and expert model -> the domain (benchmark) it trained."""
    run_bases = {
        RLVRRunSpec.model_validate(r.obj["spec"]).model.uri for r in records.values() if r.kind == "RLVRRun"
    }
    benchmarks = {b.name for b in spec.benchmarks}
    models, experts = [], {}
    evaluated = {(e.run_ref, e.merge_ref): e.name for e in spec.models if e.run_ref or e.merge_ref}
    for m in spec.models:
        if m.run_ref:
            run = RLVRRunSpec.model_validate(records[f"RLVRRun/{m.run_ref}"].obj["spec"])
            domains = [d.name for d in run.domains]
            if _is_mt_opd(run):
                teachers = run.algorithm.teachers or []
                student = Model(m.name, "mt-opd", f"{len(teachers)} teachers")
                for t in teachers:
                    if (t.run_ref, t.merge_ref) in evaluated:  # a teacher the suite evaluates too
                        student.teachers |= dict.fromkeys(t.domains, evaluated[t.run_ref, t.merge_ref])
                models.append(student)
            elif len(domains) == 1:
                models.append(Model(m.name, "expert", domains[0]))
                if domains[0] in benchmarks:
                    experts[m.name] = domains[0]
            else:
                models.append(Model(m.name, "mixed", ", ".join(domains)))
        elif m.merge_ref:
            merge = MergeJobSpec.model_validate(records[f"MergeJob/{m.merge_ref}"].obj["spec"])
            models.append(Model(m.name, "merge", merge.method))
        else:
            models.append(Model(m.name, "sft" if m.model in run_bases else "base", m.model or ""))
    return models, experts


def collect(workdirs: Sequence[Path]) -> Study:
    """Read every workdir; they must hold the same finished EvalSuite."""
    per_seed = [_records(w) for w in workdirs]
    suites = [k for k, r in per_seed[0].items() if r.kind == "EvalSuite"]
    if not suites:
        raise ReportError(f"{workdirs[0]}: no EvalSuite: nothing to report")
    key = suites[0]
    for workdir, records in zip(workdirs, per_seed, strict=True):
        record = records.get(key)
        if record is None or record.phase != "Succeeded":
            phase = record.phase if record else "missing"
            raise ReportError(f"{workdir}: {key} has not succeeded ({phase}); run `m2rl run` to finish it")
    spec = EvalSuiteSpec.model_validate(per_seed[0][key].obj["spec"])
    models, experts = _roles(spec, per_seed[0])
    by_name = {m.name: m for m in models}
    benchmarks = [b.name for b in spec.benchmarks]
    for workdir, records in zip(workdirs, per_seed, strict=True):
        cells = {(c["model"], c["benchmark"]): c for c in records[key].status.get("results") or []}
        for m in spec.models:
            model = by_name[m.name]
            for b in spec.benchmarks:
                cell = cells.get((m.name, b.name))
                if cell is None or not cell.get("metrics"):
                    raise ReportError(f"{workdir}: {key}: no result for model {m.name}, benchmark {b.name}")
                model.scores.setdefault(b.name, []).append(float(cell["metrics"][b.metrics[0]]))
                model.prompts[b.name] = int(cell.get("prompts") or 0)
            ref = f"RLVRRun/{m.run_ref}" if m.run_ref else f"MergeJob/{m.merge_ref}" if m.merge_ref else None
            cost = _cost(ref, records) if ref else None
            if cost is not None:
                model.cost.append(cost)
            if model.role in ("merge", "mt-opd") and ref in records:
                model.own_cost.append(records[ref].usage.total_cpu_seconds)
    study = Study(
        workdirs=list(workdirs),
        suite=key,
        benchmarks=benchmarks,
        metric={b.name: b.metrics[0] for b in spec.benchmarks},
        models=models,
        curves={},
        distillation={},
        cosine={},
        analysis_source=None,
        sign_conflict=[],
        norms={},
        expert_domain=experts,
    )
    for workdir, records in zip(workdirs, per_seed, strict=True):
        _add_curves(study, workdir, records)
        _add_analysis(study, records)
    return study


def _add_curves(study: Study, workdir: Path, records: dict[str, Record]) -> None:
    layout = Layout(workdir, Store(workdir).data_root())
    for record in records.values():
        if record.kind != "RLVRRun":
            continue
        path = output_dir(_resource(record), layout)
        assert path is not None
        index = study.workdirs.index(workdir)
        for step in _metrics(path / "metrics.jsonl"):
            # An MT-OPD run learns from no reward, but its verifiers score its samples all the same:
            # its curves show what the student's answers earn while it imitates its teachers.
            for domain, values in step.get("per_domain", {}).items():
                seeds = study.curves.setdefault(domain, {}).setdefault(record.name, [])
                _seed(seeds, index).append((int(step["step"]), float(values["reward"])))
            if "opd_reverse_kl" in step:  # MT-OPD's own figure: the student's reverse KL to its teachers
                seeds = study.distillation.setdefault(record.name, [])
                _seed(seeds, index).append((int(step["step"]), float(step["opd_reverse_kl"])))


def _seed(seeds: list[list[tuple[int, float]]], index: int) -> list[tuple[int, float]]:
    """The points of seed `index` (earlier seeds that lack the curve stay empty)."""
    while len(seeds) <= index:
        seeds.append([])
    return seeds[index]


def _add_analysis(study: Study, records: dict[str, Record]) -> None:
    """The first merge (by name) with a task-vector analysis: all merge the same experts."""
    for key, record in sorted(records.items()):
        analysis = record.status.get("analysis") if record.kind == "MergeJob" else None
        if not analysis or not analysis.get("pairwiseCosine"):
            continue
        if study.analysis_source not in (None, key):
            continue
        study.analysis_source = key
        for pair in analysis["pairwiseCosine"]:
            study.cosine.setdefault((pair["first"], pair["second"]), []).append(float(pair["cosine"]))
        if analysis.get("signConflictFraction") is not None:
            study.sign_conflict.append(float(analysis["signConflictFraction"]))
        for name, norm in (analysis.get("taskVectorNorms") or {}).items():
            study.norms.setdefault(name, []).append(float(norm))
        return


# ---- numbers for the reading --------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """a - b, with its noise: the seed-to-seed spread, or the standard error with one seed."""

    value: float
    noise: float
    kind: str  # "spread" or "stderr"

    def ratio(self) -> float:
        return abs(self.value) / self.noise if self.noise > 0 else math.inf

    @property
    def clear(self) -> bool:
        """Larger than its noise."""
        return abs(self.value) > self.noise


def difference(a: list[float], b: list[float], prompts: int) -> Difference:
    """Mean of a - b over seeds; noise = std over seeds of a - b (several seeds), else the standard
    error of the difference of two accuracies on `prompts` held-out prompts each."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    if len(diffs) > 1:
        return Difference(statistics.fmean(diffs), statistics.stdev(diffs), "spread")
    pa, pb = statistics.fmean(a), statistics.fmean(b)
    n = max(prompts, 1)
    return Difference(diffs[0], math.sqrt(pa * (1 - pa) / n + pb * (1 - pb) / n), "stderr")


def _per_seed(model: Model, benchmark: str | None) -> list[float]:
    return model.average_per_seed() if benchmark is None else model.scores[benchmark]


def compare(study: Study, a: Model, b: Model, benchmark: str | None) -> Difference:
    """a - b on one benchmark, or on the average (benchmark None)."""
    prompts = (
        a.prompts[benchmark] if benchmark is not None else sum(a.prompts.values())  # the average's prompts
    )
    return difference(_per_seed(a, benchmark), _per_seed(b, benchmark), prompts)


def _points(x: float) -> str:
    return f"{x * 100:+.1f} points"


def _against(d: Difference) -> str:
    noise = "seed-to-seed spread" if d.kind == "spread" else "standard error"
    if d.noise == 0:
        return f"{noise} 0"
    return f"{d.ratio():.1f}x the {noise} ({d.noise * 100:.1f} points)"


PARADIGMS = (("mixed", "mixing"), ("merge", "merging"), ("mt-opd", "MT-OPD"))
"""The study's three ways to one multi-domain model: role of their models -> the paradigm's name."""


def _score(model: Model, benchmark: str | None) -> float:
    return model.average() if benchmark is None else model.mean(benchmark)


def _label(model: Model) -> str:
    if model.role == "merge":
        return f"the best merge {model.name} ({model.detail})"
    if model.role == "mt-opd":
        return f"the MT-OPD student {model.name}"
    return model.name


def _paradigms(study: Study, benchmark: str | None) -> str:
    """Which way to one model wins a column: the best model of each paradigm present, the leader
    against each other one with its noise ("" with fewer than two paradigms)."""
    best = []
    for role, paradigm in PARADIGMS:
        if study.model(role):
            best.append((paradigm, max(study.model(role), key=lambda m: _score(m, benchmark))))
    if len(best) < 2:
        return ""
    best.sort(key=lambda b: -_score(b[1], benchmark))  # stable: ties keep the order of PARADIGMS
    (paradigm, leader), others = best[0], best[1:]
    differences = [compare(study, leader, other, benchmark) for _, other in others]
    tied = [p for (p, _), d in zip(others, differences, strict=True) if not d.clear]
    names = [paradigm, *tied]
    together = f"{', '.join(names[:-1])} and {names[-1]}"
    verdict = f"{together} are within the noise of each other" if tied else f"{paradigm} wins"
    against = "; vs ".join(
        f"{_label(other)} {_score(other, benchmark):.3f}, {_points(d.value)}, {_against(d)}"
        for (_, other), d in zip(others, differences, strict=True)
    )
    return f"; {verdict}: {_label(leader)} {_score(leader, benchmark):.3f} vs {against}"


def _distilled(study: Study, sft: Model) -> list[str]:
    """Per MT-OPD student: the share of each teacher's gain over the SFT model that it kept, on the
    teacher's domain (where the teacher gained at all)."""
    lines = []
    by_name = {m.name: m for m in study.models}
    for student in study.model("mt-opd"):
        shares = []
        for domain, teacher in ((d, by_name[t]) for d, t in student.teachers.items()):
            gain = teacher.mean(domain) - sft.mean(domain) if domain in study.benchmarks else 0.0
            if gain > 0:
                score = student.mean(domain)
                kept = (score - sft.mean(domain)) / gain
                shares.append(f"{kept:.0%} on {domain} ({score:.3f}, its teacher {teacher.mean(domain):.3f})")
        if shares:
            lines.append(
                f"MT-OPD: {student.name} keeps this share of its teachers' gains over {sft.name}: "
                + ", ".join(shares)
                + "."
            )
    return lines


def reading(study: Study) -> list[str]:
    """Sentences computed from the numbers: who wins where, by how much, against the noise."""
    lines: list[str] = []
    sft = (study.model("sft") or study.model("base") or [None])[0]
    mixed = (study.model("mixed") or [None])[0]
    merges = study.model("merge")
    students = study.model("mt-opd")
    columns: list[str | None] = [*study.benchmarks, None]

    for benchmark in columns:
        label = "the average" if benchmark is None else benchmark
        best = max(study.models, key=lambda m: _score(m, benchmark))
        line = f"**{label}**: best is {best.name} ({_score(best, benchmark):.3f})"
        if sft is not None and benchmark is not None:
            experts = [m for m in study.models if study.expert_domain.get(m.name) == benchmark]
            for expert in experts:
                d = compare(study, expert, sft, benchmark)
                verdict = "beats" if d.value > 0 and d.clear else "does not clearly beat"
                line += (f"; the {benchmark} expert {verdict} {sft.name} by {_points(d.value)}, "
                         f"{_against(d)}")  # fmt: skip
        lines.append(line + _paradigms(study, benchmark) + ".")
    if sft is not None:
        above = []
        for model in [m for m in study.models if m.role in ("mixed", "merge", "mt-opd")]:
            d = compare(study, model, sft, None)
            if d.value > 0 and d.clear:
                above.append(f"{model.name} ({_points(d.value)})")
        lines.append(
            f"Above {sft.name} on the average by more than the noise: "
            + (", ".join(above) if above else "none of the mixed, merged and distilled models")
            + "."
        )
        lines += _distilled(study, sft)
    experts = [m for m in study.model("expert") if m.cost]
    if mixed is not None and mixed.cost and experts:
        together = sum(statistics.fmean(m.cost) for m in experts)
        line = (f"Cost: the mixed run took {statistics.fmean(mixed.cost):.0f} CPU-seconds, the "
                f"{len(experts)} experts together {together:.0f}")  # fmt: skip
        own = [statistics.fmean(m.own_cost) for m in merges if m.own_cost]
        if own:
            line += f"; a merge adds {min(own):.0f}-{max(own):.0f} CPU-seconds of its own to its experts'"
        for student in (m for m in students if m.own_cost):
            line += (f"; the MT-OPD student {student.name} adds {statistics.fmean(student.own_cost):.0f} "
                     "of its own to its teachers'")  # fmt: skip
        lines.append(line + ".")
    if study.seeds == 1:
        lines.append(
            "One workdir (one seed): the noise is the standard error of the held-out scores; give "
            "`m2rl report` the workdirs of several seeds for the seed-to-seed spread."
        )
    return lines


# ---- the report ---------------------------------------------------------------------------------------


def _cell(model: Model, benchmark: str | None, best: float, seeds: int) -> str:
    values = model.average_per_seed() if benchmark is None else model.scores[benchmark]
    mean = statistics.fmean(values)
    text = f"{mean:.3f}"
    if seeds > 1:
        text += f" ± {statistics.stdev(values):.3f}"
    return f"**{text}**" if math.isclose(mean, best, abs_tol=1e-9) else text


def table(study: Study) -> str:
    """The study's table: models x benchmarks plus the average, best per column in bold."""
    head = ["model", "kind", *study.benchmarks, "average", "CPU-seconds"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    best = {b: max(m.mean(b) for m in study.models) for b in study.benchmarks}
    best_average = max(m.average() for m in study.models)
    for m in study.models:
        kind = f"{m.role} ({m.detail})" if m.role in ("expert", "merge", "mt-opd") else m.role
        cost = f"{statistics.fmean(m.cost):.0f}" if m.cost else "-"
        cells = [_cell(m, b, best[b], study.seeds) for b in study.benchmarks]
        rows.append(
            "| " + " | ".join([m.name, kind, *cells, _cell(m, None, best_average, study.seeds), cost]) + " |"
        )
    return "\n".join(rows)


def markdown(study: Study, figures: dict[str, str]) -> str:
    seeds = study.seeds
    metric = ", ".join(sorted(set(study.metric.values())))
    prompts = {b: study.models[0].prompts[b] for b in study.benchmarks}
    parts = [
        "# Mix or merge: report",
        "",
        f"{study.suite} from {seeds} workdir{'s' if seeds > 1 else ''} "
        f"({', '.join(str(w) for w in study.workdirs)}). Scores are {metric} on held-out prompts "
        f"({', '.join(f'{b}: {n}' for b, n in prompts.items())})"
        + (f"; each cell is the mean ± standard deviation over {seeds} seeds." if seeds > 1 else "."),
        "",
        table(study),
        "",
        "CPU-seconds: what the local runner measured for each model's processes (a run: trainer, "
        "verifier and vLLM servers; a merge: its own job plus the runs it merged; an MT-OPD "
        "student: its own run plus its teachers' runs); the study's GPU-hours column.",
        "",
        "## Reading",
        "",
        *[f"- {line}" for line in reading(study)],
        "",
    ]
    if "curves" in figures:
        parts += ["## Training reward per domain", ""]
        if study.distillation:
            parts += [
                "MT-OPD runs (dashed) learn from their teachers, not from the reward: their curves are "
                "what the verifiers give the student's samples.",
                "",
            ]
        parts += [f"![reward curves]({figures['curves']})", ""]
    if "distillation" in figures:
        parts += [
            "## MT-OPD: distance to the teachers",
            "",
            "Reverse KL of the student to its teachers per step: the mean over the student's trained "
            "tokens of log pi_student - log pi_teacher on its own samples, each scored by its domain's "
            "teacher (the trainer's `opd_reverse_kl`).",
            "",
            f"![MT-OPD reverse KL]({figures['distillation']})",
            "",
        ]
    if "heatmap" in figures:
        conflict = (f" Sign conflicts: {statistics.fmean(study.sign_conflict):.1%} of the parameters."
                    if study.sign_conflict else "")  # fmt: skip
        parts += [
            "## Task vectors",
            "",
            f"Cosine similarity of the experts' task vectors (expert minus base), from the analysis of "
            f"{study.analysis_source}.{conflict}",
            "",
            f"![task-vector similarity]({figures['heatmap']})",
            "",
        ]
    if "cost" in figures:
        parts += ["## Cost per model", "", f"![CPU-seconds per model]({figures['cost']})", ""]
    return "\n".join(parts)


def write_report(workdirs: Sequence[Path], out: Path) -> Path:
    """Collect, draw, write OUT/report.md (and its PNG figures); returns the report's path."""
    from m2rl_operator.local.figures import draw

    study = collect(workdirs)
    out.mkdir(parents=True, exist_ok=True)
    figures = draw(study, out)
    path = out / "report.md"
    path.write_text(markdown(study, figures))
    return path
