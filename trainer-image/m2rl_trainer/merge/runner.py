"""One merge: check the config, run mergekit into a temporary folder, analyse, then rename into place.

The output folder appears only complete (merged weights, tokenizer, the analysis report and a
marker file), by one `os.replace` of a sibling folder; any failure removes the sibling and leaves
the output path as it was. A rerun (the Job's retry after an eviction) that finds a finished
output of the same config reuses it instead of failing on the existing folder.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from m2rl_trainer.merge.analysis import AnalysisOptions, analyse_task_vectors, summary_of, write_report
from m2rl_trainer.merge.config import LoadedConfig, MergeConfigError, load_merge_config
from m2rl_trainer.utils.results import MAX_MESSAGE_BYTES

LOG = logging.getLogger(__name__)
ANALYSIS_DIR = "m2rl-analysis"
REPORT_FILE = f"{ANALYSIS_DIR}/report.json"
MARKER_FILE = "m2rl-merge.json"  # written last inside the temporary folder: its presence means "complete"
MAX_NAME = 63  # the MergeJob status' CosinePair.first/second limit


class MergeError(RuntimeError):
    """mergekit failed on the checkpoints (the output path is left untouched)."""


@dataclass(frozen=True)
class MergeRunConfig:
    """Everything one `m2rl-merge` run needs."""

    config: Path
    """mergekit YAML config (merge_method, base_model, models[].parameters, parameters, dtype)."""
    output: Path
    """Folder the merged model is written to; it must not exist (unless it holds this merge)."""
    expert_names: tuple[str, ...] | None = None
    """Names of the models other than the base, in config order, for the analysis. None: the last
    path segment of each model (made unique with -2, -3, ...)."""
    analysis: bool = True
    """Run the weight-space analysis after the merge (needs a base_model)."""
    cuda: bool = False
    """Do mergekit's tensor arithmetic on the GPU."""
    seed: int = 0
    """Random seed for mergekit: DARE and DELLA drop entries at random; a fixed seed makes a rerun
    produce the same weights."""
    analysis_base: str | None = None
    """The base model of the analysis for methods that merge without one (linear, karcher): the
    plain average is analysed against it. None: the config's base_model."""
    analysis_options: AnalysisOptions = field(default_factory=AnalysisOptions)


@dataclass(frozen=True)
class MergeOutcome:
    """What a run produced: the output folder, and the analysis summary or why there is none."""

    output: Path
    analysis: dict[str, Any] | None
    analysis_skipped: str | None
    reused: bool = False

    def result(self) -> dict[str, Any]:
        """The Job's result message for the operator (see m2rl_trainer.utils.results)."""
        if self.analysis is None:
            return {"analysisSkipped": self.analysis_skipped or "no analysis"}
        return {"analysis": fit_summary(self.analysis)}


def fit_summary(summary: dict[str, Any], limit: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """The summary, shortened until {"analysis": summary} fits a termination message.

    16 experts give 120 cosine pairs, which with long names exceed 4096 bytes: numbers are rounded
    to fewer digits first, and as a last resort the pairs are left out (the report keeps them all).
    """

    def fits(candidate: dict[str, Any]) -> bool:
        # The same encoding as utils.results.encode_result, which refuses more than 4096 bytes.
        text = json.dumps({"analysis": candidate}, separators=(",", ":"), sort_keys=True)
        return len(text.encode()) <= limit

    for digits in (6, 4, 3):
        candidate = _rounded(summary, digits)
        if fits(candidate):
            return candidate
    candidate = {k: v for k, v in _rounded(summary, 3).items() if k != "pairwiseCosine"}
    if fits(candidate):
        LOG.warning("result: pairwiseCosine left out of the status to fit %d bytes (see the report)", limit)
        return candidate
    raise MergeError(f"the analysis summary does not fit {limit} bytes even without pairwiseCosine")


def _rounded(summary: dict[str, Any], digits: int) -> dict[str, Any]:
    def r(x: float) -> float:
        return float(f"{x:.{digits}g}")

    out = dict(summary)
    for key in ("taskVectorNorms", "updateFraction"):
        out[key] = {k: r(v) for k, v in summary[key].items()}
    numbers = ("cosine", "projectedCosine", "jaccard", "jaccardRandom")
    out["pairwiseCosine"] = [
        {k: r(v) if k in numbers else v for k, v in p.items()} for p in summary["pairwiseCosine"]
    ]
    out["signConflictFraction"] = r(summary["signConflictFraction"])
    return out


def default_expert_names(models: tuple[str, ...]) -> tuple[str, ...]:
    """Last path segment of each model (Hub ids: the repository name), made unique and label-safe."""
    names: list[str] = []
    for model in models:
        segment = model.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "model"
        name = re.sub(r"[^A-Za-z0-9._-]", "-", segment)[:MAX_NAME]
        unique, k = name, 2
        while unique in names:
            unique = f"{name[: MAX_NAME - len(str(k)) - 1]}-{k}"
            k += 1
        names.append(unique)
    return tuple(names)


def check_expert_names(names: tuple[str, ...], models: tuple[str, ...]) -> list[str]:
    """Problems of names given with --expert-names, for the models other than the base."""
    problems = []
    if len(names) != len(models):
        problems.append(
            f"--expert-names: {len(names)} names for {len(models)} models besides the base "
            f"({', '.join(models)})"
        )
    if len(set(names)) != len(names):
        problems.append(f"--expert-names: names must be unique, got {', '.join(names)}")
    for name in names:
        if not name or len(name) > MAX_NAME:
            problems.append(f"--expert-names: {name!r} must have 1 to {MAX_NAME} characters")
    return problems


def analysis_skip_reason(loaded: LoadedConfig, enabled: bool, analysis_base: str | None = None) -> str | None:
    """Why the analysis cannot or should not run for this config, or None."""
    if not enabled:
        return "analysis disabled (--no-analysis)"
    if not loaded.config.models:
        return "the config uses slices or modules; the analysis compares whole models (models: [...])"
    if loaded.base is None and analysis_base is None:
        return (
            f"merge_method {loaded.method} has no base_model, and task vectors are differences from a "
            "base (give one with --analysis-base)"
        )
    base_model = loaded.config.base_model
    if any(m.model.lora is not None for m in loaded.config.models) or (base_model and base_model.lora):
        return "a model is given as MODEL+LORA; the analysis reads plain checkpoints"
    return None


def run_merge_job(cfg: MergeRunConfig) -> MergeOutcome:
    """Check, merge, analyse, and move the result into `cfg.output` (see the module docstring)."""
    loaded = load_merge_config(cfg.config)  # MergeConfigError, naming the field, before any tensor
    names = cfg.expert_names if cfg.expert_names is not None else default_expert_names(loaded.experts)
    if loaded.config.models and (problems := check_expert_names(names, loaded.experts)):
        raise MergeConfigError("; ".join(problems))
    if cfg.analysis_base is not None and loaded.base is not None:
        raise MergeConfigError(
            f"--analysis-base: merge_method {loaded.method} merges against base_model {loaded.base}; the "
            "analysis uses it (give --analysis-base only for methods without a base, e.g. linear)"
        )
    skip = analysis_skip_reason(loaded, cfg.analysis, cfg.analysis_base)
    out = cfg.output
    if out.exists() or out.is_symlink():
        return _reuse(out, loaded)
    if stale := sorted(out.parent.glob(f".{out.name}.partial-*")):
        LOG.warning("found partial outputs of interrupted runs (remove them to free space): %s", stale)

    experts = ", ".join(f"{n}={m}" for n, m in zip(names, loaded.experts, strict=False))
    LOG.info("merge: %s of %d models (%s), base %s", loaded.method, len(loaded.experts), experts, loaded.base)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; evaluation pods may run as another user
    try:
        started = time.monotonic()
        _mergekit(loaded, tmp, cfg)
        _retitle_card(tmp / "README.md", tmp.name, out.name)
        LOG.info("merge: written in %.1f s", time.monotonic() - started)
        summary = None
        if skip is None:
            summary = _analyse(loaded, names, tmp, out, cfg)
        else:
            LOG.info("analysis: skipped: %s", skip)
        marker = {
            "configSha256": loaded.sha256,
            "method": loaded.method,
            "experts": dict(zip(names, loaded.experts, strict=False)),
            "analysis": summary,
            "analysisSkipped": skip,
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, out)  # atomic on one filesystem; fails if `out` appeared meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    LOG.info("merge: output %s complete", out)
    return MergeOutcome(output=out, analysis=summary, analysis_skipped=skip)


def _reuse(out: Path, loaded: LoadedConfig) -> MergeOutcome:
    """A finished output of the same config is this merge's (a retried Job); anything else is kept."""
    try:
        marker = json.loads((out / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise MergeConfigError(
            f"output {out} already exists and is not a finished m2rl-merge output; "
            "remove it or choose another output path (nothing was overwritten)"
        ) from None
    if marker.get("configSha256") != loaded.sha256:
        raise MergeConfigError(
            f"output {out} already holds a merge of another config; remove it or choose another "
            "output path (nothing was overwritten)"
        )
    LOG.info("merge: output %s already holds this merge (a rerun); reporting its result", out)
    return MergeOutcome(
        output=out,
        analysis=marker.get("analysis"),
        analysis_skipped=marker.get("analysisSkipped"),
        reused=True,
    )


def _mergekit(loaded: LoadedConfig, tmp: Path, cfg: MergeRunConfig) -> None:
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    options = MergeOptions(
        cuda=cfg.cuda,
        lazy_unpickle=True,  # stream .bin checkpoints instead of unpickling them whole
        random_seed=cfg.seed,
        copy_tokenizer=True,
        write_model_card=True,
        quiet=False,  # tqdm's bars are the merge's progress in the log (see cli: one line per 30 s)
    )
    from m2rl_trainer.merge.trim import study_config

    # The study's methods get the run's seed and, for a whole-model TIES trim, the thresholds
    # (a MergeConfigError or an AnalysisError, not mergekit's failure).
    config, source = study_config(loaded, cfg.seed)
    try:
        run_merge(config, str(tmp), options=options, config_source=source)
    except (RuntimeError, ValueError, KeyError, OSError) as error:
        raise MergeError(f"mergekit failed: {type(error).__name__}: {error}") from error


def _retitle_card(readme: Path, old: str, new: str) -> None:
    """mergekit titles its model card after the folder it wrote: the temporary name, not the output's."""
    if readme.is_file():
        readme.write_text(
            readme.read_text(encoding="utf-8").replace(f"# {old}", f"# {new}", 1), encoding="utf-8"
        )


def _analyse(
    loaded: LoadedConfig, names: tuple[str, ...], tmp: Path, out: Path, cfg: MergeRunConfig
) -> dict[str, Any]:
    from mergekit.common import ModelReference

    def local(model: str) -> str:
        return ModelReference.parse(model).local_path()  # Hub ids: mergekit's download cache

    started = time.monotonic()
    report = analyse_task_vectors(
        local(loaded.base) if loaded.base is not None else str(cfg.analysis_base),
        [(name, local(model)) for name, model in zip(names, loaded.experts, strict=True)],
        merged=tmp,
        options=cfg.analysis_options,
    )
    report["mergedModel"] = str(out)  # where it will be, not the temporary folder
    report["method"] = loaded.method
    _, heatmap = write_report(report, tmp / ANALYSIS_DIR)
    summary = summary_of(report, REPORT_FILE)
    s = report["summary"]
    LOG.info(
        "analysis: done in %.1f s: norms %s, update fractions %s, sign conflicts %.4f of %s parameters; "
        "report %s, heatmap %s",
        time.monotonic() - started,
        {k: round(v, 6) for k, v in s["taskVectorNorms"].items()},
        {k: round(v, 6) for k, v in s["updateFraction"].items()},
        s["signConflictFraction"],
        f"{s['parameters']:,}",
        out / REPORT_FILE,
        out / ANALYSIS_DIR / heatmap.name,
    )
    return summary
