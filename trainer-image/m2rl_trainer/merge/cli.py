"""`m2rl-merge`: the program a MergeJob's pod runs.

  m2rl-merge --config merge.yaml --output OUT [--expert-names a,b,...] [--no-analysis] [--cuda]
             [--seed N] [--analysis-base DIR] [--eta E] [--projection-dims D] [--projection-seed S]

Runs the mergekit merge into a temporary sibling of OUT, then the weight-space analysis of the task
vectors (OUT/m2rl-analysis/: report.json, cosine-heatmap.svg, jaccard-heatmap.svg), and renames the
sibling to OUT.
The summary goes to the container's termination message for the operator.
Exit codes: 0 done (or OUT already held this merge); 2 invalid input: the config, the expert
names, or an OUT that holds something else (found before any tensor is read; a retry cannot help);
1 the merge or the analysis failed. OUT is untouched whenever the exit code is not 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="m2rl-merge",
        description="Merge expert checkpoints with mergekit and analyse their task vectors.",
    )
    parser.add_argument("--config", required=True, type=Path, help="mergekit YAML config")
    parser.add_argument("--output", required=True, type=Path, help="output folder (must not exist)")
    parser.add_argument(
        "--expert-names",
        type=lambda text: tuple(text.split(",")),
        help="comma-separated names of the models other than the base, in config order "
        "(default: the last path segment of each)",
    )
    parser.add_argument(
        "--no-analysis", action="store_true", help="merge only; skip the weight-space analysis"
    )
    parser.add_argument("--cuda", action="store_true", help="do mergekit's arithmetic on the GPU")
    parser.add_argument("--seed", type=int, default=0, help="random seed (DARE, DELLA); default 0")
    parser.add_argument(
        "--analysis-base",
        help="base model of the analysis for methods that merge without one (linear, karcher)",
    )
    parser.add_argument(
        "--eta",
        type=float,
        default=1e-3,
        help="analysis: a weight counts as changed when |delta| > eta * max(|w|, |w_base|); default 1e-3",
    )
    parser.add_argument(
        "--projection-dims", type=int, default=256, help="analysis: random projection size; default 256"
    )
    parser.add_argument("--projection-seed", type=int, default=0, help="analysis: projection seed; default 0")
    return parser


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # An evicted pod gets SIGTERM: unwind through the runner's cleanup instead of dying mid-write.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not sys.stderr.isatty():
        # mergekit's tqdm bars are the merge's progress; in a pod's log, one update per 30 s is plenty.
        # (tqdm reads this when it is first imported, i.e. just below.)
        os.environ.setdefault("TQDM_MININTERVAL", "30")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    from m2rl_trainer.merge.analysis import AnalysisError, AnalysisOptions
    from m2rl_trainer.merge.config import MergeConfigError
    from m2rl_trainer.merge.runner import MergeError, MergeRunConfig, run_merge_job
    from m2rl_trainer.utils.results import write_result

    options = AnalysisOptions(
        eta=args.eta, projection_dims=args.projection_dims, projection_seed=args.projection_seed
    )
    if problems := options.problems():
        return _fail(2, "; ".join(f"--{p.replace('_', '-')}" for p in problems))
    cfg = MergeRunConfig(
        config=args.config,
        output=args.output,
        expert_names=args.expert_names,
        analysis=not args.no_analysis,
        cuda=args.cuda,
        seed=args.seed,
        analysis_base=args.analysis_base,
        analysis_options=options,
    )
    log = logging.getLogger("m2rl-merge")
    log.info("m2rl-merge: %s", cfg)
    try:
        outcome = run_merge_job(cfg)
        written = write_result(outcome.result())
    except MergeConfigError as error:
        return _fail(2, error)
    except MergeError as error:
        return _fail(1, error)
    except AnalysisError as error:
        return _fail(1, f"analysis failed: {error}")
    if written is not None:
        log.info("m2rl-merge: result written to %s", written)
    return 0


def _fail(code: int, error: object) -> int:
    # The last line of the log: with FallbackToLogsOnError it becomes the pod's termination message.
    print(f"m2rl-merge: error: {error}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
