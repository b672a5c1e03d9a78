"""Run an EvalSuite's analyses once its models are evaluated: read their per-sample outputs, generate
what the analyses need (trajectories, judgements), score, and write one report with its pictures.

    eval outputs (OUTPUT/MODEL/BENCHMARK.samples.jsonl) --+--> prediction behaviour (gains)
                                                          +--> self-verification (judges' replies)
    each information model: trajectories per domain ------+--> log-probs under every model --> KL

Generation reuses the evaluation's engines (`eval.runner.open_engine`: a vLLM server per model, or
Hugging Face `generate`); log-probabilities come from `information.SequenceScorer`. One model is
loaded at a time. The outputs appear whole under OUTPUT/_analysis/ (a hidden sibling renamed into
place; `_` cannot begin a model name, so it never collides with a model's folder).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from m2rl_trainer.analysis.config import AnalysisConfig
from m2rl_trainer.analysis.information import SequenceScorer, Trajectory, kl_matrix, same_tokenizer
from m2rl_trainer.analysis.prediction import accuracies, prediction_behaviour
from m2rl_trainer.analysis.selfverify import Judged, by_domain, judge_prompt, parse_verdict, question_text
from m2rl_trainer.data.datasets import Prompt, render_prompt
from m2rl_trainer.eval.config import EvalConfig, ModelConfig
from m2rl_trainer.eval.runner import EvalError, RunOptions, load_benchmark, load_tokenizer, open_engine
from m2rl_trainer.rollout.base import RolloutEngine, SamplingParams
from m2rl_trainer.rollout.server import derive_seed

log = logging.getLogger("m2rl.analysis")
ANALYSIS_DIR = "_analysis"
REPORT_FILE = f"{ANALYSIS_DIR}/report.json"

EngineFactory = Callable[[ModelConfig, list[str], int], Any]
"""(model, prompt texts, max new tokens) -> a context manager yielding a RolloutEngine."""


def needed_outputs(config: AnalysisConfig) -> list[str]:
    """The models whose evaluation outputs the analyses read."""
    names: list[str] = []
    if config.prediction is not None:
        names += [config.sft or "", *config.experts.values(), *([config.mixed] if config.mixed else [])]
        names += config.merged
    if config.self_verification is not None:
        names.append(config.self_verification.responses_from)
    return list(dict.fromkeys(n for n in names if n))


def wait_for_outputs(
    output: Path,
    models: Sequence[str],
    *,
    wait_s: float,
    poll_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Until OUTPUT/MODEL/results.json exists for every model (an evaluation's outputs appear whole)."""
    deadline = time.monotonic() + wait_s
    while missing := [m for m in models if not (output / m / "results.json").is_file()]:
        if time.monotonic() >= deadline:
            raise EvalError(
                f"the evaluation outputs of {', '.join(missing)} did not appear in {output} within "
                f"{wait_s:.0f} s (did their evaluation fail?)"
            )
        log.info("waiting for the evaluation outputs of %s in %s", ", ".join(missing), output)
        sleep(poll_s)


def read_samples(output: Path, model: str, benchmark: str) -> list[dict[str, Any]]:
    path = output / model / f"{benchmark}.samples.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EvalError(
            f"model {model!r} has no samples for benchmark {benchmark!r}: {path}: {error.strerror}"
        ) from None
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            raise EvalError(f"{path}:{number}: not a JSON line") from None
    return records


def engine_factory(config: EvalConfig, options: RunOptions, log_dir: Path) -> EngineFactory:
    """Engines as the evaluation opens them, sized for the analysis' prompts and response lengths."""

    @contextmanager
    def factory(model: ModelConfig, texts: list[str], max_tokens: int) -> Iterator[RolloutEngine]:
        tokenizer = load_tokenizer(model)
        # open_engine sizes a vLLM server from the config's benchmarks: one stands for all prompts here.
        sized = dataclasses.replace(
            config,
            benchmarks=[
                dataclasses.replace(config.benchmarks[0], name="_analysis", max_response_tokens=max_tokens)
            ],
        )
        with open_engine(model, sized, options, tokenizer, {"_analysis": texts}, log_dir) as engine:
            yield engine

    return factory


def run_analysis(
    config: EvalConfig,
    analysis: AnalysisConfig,
    output: Path,
    *,
    engines: EngineFactory,
    scorer: Callable[[str], SequenceScorer] = SequenceScorer,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Every configured analysis; writes OUTPUT/_analysis/ and returns the status summary."""
    wait_for_outputs(
        output, needed_outputs(analysis), wait_s=analysis.wait_s, poll_s=analysis.poll_s, sleep=sleep
    )
    models = {m.name: m for m in config.models}
    used = list(dict.fromkeys(b for d in analysis.domains for b in d.benchmarks))
    prompts = {b.name: load_benchmark(b) for b in config.benchmarks if b.name in used}
    domains = {d.name: list(d.benchmarks) for d in analysis.domains}
    report: dict[str, Any] = {"version": 1, "domains": domains, "experts": analysis.experts}
    extra: dict[str, Any] = {}
    if analysis.prediction is not None:
        report["prediction"] = _prediction(analysis, output, domains)
    if analysis.information is not None:
        report["information"], extra["trajectories"] = _information(
            analysis, models, prompts, engines, scorer
        )
    if analysis.self_verification is not None:
        report["selfVerification"], extra["judgements"] = _self_verification(
            config, analysis, output, models, prompts, engines
        )
    folder = _write(output, report, extra)
    log.info("analysis: report %s", folder / "report.json")
    return summary_of(report)


# ---- the three analyses -----------------------------------------------------------------------------


def _prediction(analysis: AnalysisConfig, output: Path, domains: dict[str, list[str]]) -> dict[str, Any]:
    names = [analysis.sft or "", *analysis.experts.values(), *([analysis.mixed] if analysis.mixed else [])]
    names = list(dict.fromkeys([*names, *analysis.merged]))
    table: dict[str, dict[str, dict[str, float]]] = {}
    for model in names:
        table[model] = {}
        for benchmark in dict.fromkeys(b for bs in domains.values() for b in bs):
            table[model][benchmark] = accuracies(read_samples(output, model, benchmark))
    sft = analysis.sft or ""
    for model in names:
        for benchmark, acc in table[model].items():
            if set(acc) != set(table[sft][benchmark]):
                raise EvalError(
                    f"prediction: {model!r} and the SFT model {sft!r} were evaluated on different prompts "
                    f"of {benchmark!r}; evaluate them in one suite"
                )
    result = prediction_behaviour(
        table, sft=sft, experts=list(dict.fromkeys(analysis.experts.values())), domains=domains
    )
    log.info("prediction: gain cosine with the experts' union %s", result["overall"]["gainCosine"])
    return result


def _domain_prompts(
    domains: Sequence[Any], prompts: dict[str, list[Prompt]], count: int
) -> dict[str, list[tuple[str, Prompt]]]:
    out = {}
    for d in domains:
        items = [(b, p) for b in d.benchmarks for p in prompts[b]]
        out[d.name] = items[:count]
    return out


def _information(
    analysis: AnalysisConfig,
    models: dict[str, ModelConfig],
    prompts: dict[str, list[Prompt]],
    engines: EngineFactory,
    scorer: Callable[[str], SequenceScorer],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    info = analysis.information
    assert info is not None
    names = analysis.information_models()
    tokenizers = {n: load_tokenizer(models[n]) for n in names}
    if different := same_tokenizer(tokenizers):
        raise EvalError(
            f"information: {', '.join(different)} tokenize differently from {names[0]}; the KL compares "
            "log-probabilities of the same tokens"
        )
    per_domain = _domain_prompts(analysis.domains, prompts, info.prompts)
    trajectories: list[Trajectory] = []
    for a_index, a in enumerate(names):
        model = models[a]
        texts = {
            domain: [render_prompt(p, tokenizers[a], model.chat_template) for _, p in items]
            for domain, items in per_domain.items()
        }
        everything = [t for domain_texts in texts.values() for t in domain_texts]
        with engines(model, everything, info.max_response_tokens) as engine:  # one server per model
            for d_index, (domain, items) in enumerate(per_domain.items()):
                params = SamplingParams(
                    n=info.samples,
                    max_tokens=info.max_response_tokens,
                    temperature=1.0,  # the policy itself: a KL of pi_A needs samples of pi_A, untruncated
                    top_p=1.0,
                    seed=derive_seed(derive_seed(info.seed, a_index), d_index),
                )
                groups = engine.generate(texts[domain], params)
                for (_, prompt), group in zip(items, groups, strict=True):
                    for j, c in enumerate(group):
                        trajectories.append(
                            Trajectory(
                                domain, a, prompt.id, j, list(c.prompt_token_ids), list(c.token_ids), {}
                            )
                        )
        log.info("information: %s sampled %d trajectories", a, sum(t.sampler == a for t in trajectories))
    for b in names:
        loaded = scorer(models[b].path)
        try:
            for t in trajectories:
                t.logprob[b] = loaded.logprob(t.prompt_ids, t.response_ids)
        finally:
            loaded.close()
        log.info("information: scored %d trajectories under %s", len(trajectories), b)
    result = kl_matrix(trajectories, names, info.epsilon)
    rows = [dataclasses.asdict(t) for t in trajectories]
    log.info("information: mean KL (nats per trajectory) %s", result["meanKl"])
    return result, rows


def _self_verification(
    config: EvalConfig,
    analysis: AnalysisConfig,
    output: Path,
    models: dict[str, ModelConfig],
    prompts: dict[str, list[Prompt]],
    engines: EngineFactory,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sv = analysis.self_verification
    assert sv is not None
    items: list[Judged] = []
    for d in analysis.domains:
        chosen: list[Judged] = []
        for benchmark in d.benchmarks:
            by_id = {p.id: p for p in prompts[benchmark]}
            for r in read_samples(output, sv.responses_from, benchmark):
                if len(chosen) == sv.responses:
                    break
                prompt = by_id.get(str(r["prompt_id"]))
                if prompt is None:
                    raise EvalError(
                        f"self_verification: {sv.responses_from}'s sample of prompt {r['prompt_id']!r} is "
                        f"not in benchmark {benchmark!r} as loaded now; evaluate it again"
                    )
                chosen.append(
                    Judged(
                        d.name, benchmark, prompt.id, int(r["sample"]), question_text(prompt.prompt),
                        str(r["response"]), r.get("answer"), float(r["reward"]) >= 1.0,
                    )
                )  # fmt: skip
        items += chosen
    s = config.sampling
    result: dict[str, Any] = {"responsesFrom": sv.responses_from, "modes": list(sv.modes), "judges": {}}
    rows: list[dict[str, Any]] = []
    for j_index, judge in enumerate(analysis.judges(config)):
        model = models[judge]
        tokenizer = load_tokenizer(model)
        work = [(item, mode) for mode in sv.modes for item in items]
        texts = [
            render_prompt(
                Prompt(item.domain, item.prompt_id, judge_prompt(item, mode), "", ""),
                tokenizer,
                model.chat_template,
            )
            for item, mode in work
        ]
        params = SamplingParams(
            n=1,
            max_tokens=sv.max_response_tokens,
            temperature=s.temperature,  # the suite's own sampling settings
            top_p=s.top_p,
            seed=derive_seed(s.seed, 1000 + j_index),
        )
        with engines(model, texts, sv.max_response_tokens) as engine:
            replies = [group[0].text for group in engine.generate(texts, params)]
        verdicts = [parse_verdict(reply) for reply in replies]
        result["judges"][judge] = {
            mode: by_domain(
                [i for (i, m) in work if m == mode],
                [v for (_, m), v in zip(work, verdicts, strict=True) if m == mode],
                [d.name for d in analysis.domains],
            )
            for mode in sv.modes
        }
        for (item, mode), reply, verdict in zip(work, replies, verdicts, strict=True):
            rows.append(
                {"judge": judge, "mode": mode, **dataclasses.asdict(item), "reply": reply, "verdict": verdict}
            )
        log.info(
            "self-verification: %s judge accuracy %s",
            judge,
            {mode: result["judges"][judge][mode]["all"]["accuracy"] for mode in sv.modes},
        )
    return result, rows


# ---- outputs ----------------------------------------------------------------------------------------


def _write(output: Path, report: dict[str, Any], extra: dict[str, Any]) -> Path:
    """OUTPUT/_analysis/: report.json, the trajectories and judgements as JSONL, the PNGs; all or nothing."""
    from m2rl_trainer.analysis.charts import draw

    output.mkdir(parents=True, exist_ok=True)
    final = output / ANALYSIS_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{ANALYSIS_DIR}.partial-", dir=output))
    tmp.chmod(0o755)
    try:
        (tmp / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        for name, rows in extra.items():
            with (tmp / f"{name}.jsonl").open("w") as out:
                for row in rows:
                    out.write(json.dumps(row) + "\n")
        report["pictures"] = [p.name for p in draw(report, tmp)]
        (tmp / "report.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
        if final.exists():
            old = tmp.with_name(tmp.name.replace(".partial-", ".old-"))
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def summary_of(report: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """The status summary: mean KL per ordered pair, gain cosines, judge accuracies, the report file."""

    def r(x: float) -> float:
        return round(x, digits)

    summary: dict[str, Any] = {"reportFile": REPORT_FILE}
    if info := report.get("information"):
        summary["kl"] = [
            {"sampler": a, "scorer": b, "kl": r(v), "neighbour": b in info["meanNeighbours"][a]}
            for a, row in info["meanKl"].items()
            for b, v in row.items()
            if a != b
        ]
        summary["epsilon"] = info["epsilon"]
    if prediction := report.get("prediction"):
        summary["gainCosine"] = {m: r(v) for m, v in prediction["overall"]["gainCosine"].items()}
    if sv := report.get("selfVerification"):
        summary["judgeAccuracy"] = [
            {"model": judge, "mode": mode, "accuracy": r(domains["all"]["accuracy"])}
            for judge, modes in sv["judges"].items()
            for mode, domains in modes.items()
        ]
    return summary
