"""`python -m m2rl_trainer.analysis`: the program of an EvalSuite's pods when the suite has an analysis.

    python -m m2rl_trainer.analysis --config eval.yaml --analysis analysis.yaml --model-index I
                                    --output DIR [--engine vllm|hf]

The Indexed Job has one completion more than the suite has models: index I < len(models) evaluates
model I exactly as `m2rl-eval --config eval.yaml --model-index I --output DIR` does (its termination
message is the evaluation's); the last index waits for the evaluation outputs it needs under DIR, runs
the analyses, writes DIR/_analysis/, and reports {"analysis": summary} in its termination message.
analysis.yaml is checked against eval.yaml in every pod, so a bad one fails the Job at once.
Exit status: 0 done, 1 the analysis failed, 2 bad config or arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

PROG = "m2rl-analysis"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="eval.yaml (rendered by the operator)")
    parser.add_argument(
        "--analysis", required=True, type=Path, help="analysis.yaml (rendered by the operator)"
    )
    parser.add_argument("--model-index", required=True, type=int, help="the Job's completion index")
    parser.add_argument("--output", required=True, type=Path, help="the suite's output folder")
    parser.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="generation engine")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)

    from m2rl_trainer.analysis.config import load_analysis_config
    from m2rl_trainer.config import ConfigError
    from m2rl_trainer.data.datasets import DatasetError
    from m2rl_trainer.eval.config import load_eval_config

    try:
        config = load_eval_config(args.config)
        analysis = load_analysis_config(args.analysis, config)
        if not 0 <= args.model_index <= len(config.models):
            raise ConfigError(
                f"--model-index {args.model_index}: out of range; 0 to {len(config.models) - 1} evaluate a "
                f"model, {len(config.models)} runs the analysis"
            )
    except ConfigError as error:
        return _fail(2, error)
    if args.model_index < len(config.models):
        from m2rl_trainer.eval.cli import main as evaluate

        index, output = str(args.model_index), str(args.output)
        return evaluate(
            [
                "--config",
                str(args.config),
                "--model-index",
                index,
                "--output",
                output,
                "--engine",
                args.engine,
            ]
        )

    from m2rl_trainer.analysis.runner import engine_factory, run_analysis
    from m2rl_trainer.eval.runner import EvalError, RunOptions
    from m2rl_trainer.rollout.base import RolloutError
    from m2rl_trainer.utils.results import write_result

    options = RunOptions(engine=args.engine)
    log_dir = args.output / ".analysis-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        summary = run_analysis(
            config, analysis, args.output, engines=engine_factory(config, options, log_dir)
        )
        write_result(fit(summary))
    except (ConfigError, DatasetError) as error:
        return _fail(2, error)
    except (EvalError, RolloutError, ValueError, OSError) as error:
        return _fail(1, error)
    return 0


def fit(summary: dict[str, object]) -> dict[str, object]:
    """{"analysis": summary}, leaving out the KL pairs, then the judge accuracies, until it fits the
    termination message (report.json keeps everything)."""
    from m2rl_trainer.utils.results import encode_result

    candidate = dict(summary)
    for drop in (None, "kl", "judgeAccuracy", "gainCosine"):
        if drop is not None:
            candidate.pop(drop, None)
        try:
            encode_result({"analysis": candidate})
            return {"analysis": candidate}
        except ValueError:
            continue
    raise ValueError("the analysis summary does not fit a termination message")


def _fail(code: int, error: object) -> int:
    print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
    return code
