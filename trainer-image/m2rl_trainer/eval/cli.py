"""`m2rl-eval`: the program an EvalSuite's Job pods run, plus the comparison table.

    m2rl-eval --config eval.yaml --model-index I [--engine vllm|hf] [--server-url URL]
              [--output DIR] [--check]
    m2rl-eval check --config eval.yaml
    m2rl-eval table RESULTS.json|DIR ...

The first form evaluates model I on every benchmark and reports the summary the operator reads
(the termination message); `check` loads and validates every benchmark without a model and prints
the prompts per benchmark; `table` prints a Markdown table of several models' results.
Exit status: 0 done, 1 the evaluation failed, 2 bad config, data or arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

PROG = "m2rl-eval"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["table"]:
        return table_main(args[1:])
    if args[:1] == ["check"]:
        return check_main(args[1:])
    return eval_main(args)


def check_main(argv: list[str]) -> int:
    """Validate the config and every benchmark file (no model); print the prompts per benchmark."""
    parser = argparse.ArgumentParser(prog=f"{PROG} check", description=check_main.__doc__)
    parser.add_argument("--config", required=True, type=Path, help="eval.yaml")
    args = parser.parse_args(argv)

    from m2rl_trainer.config import ConfigError
    from m2rl_trainer.data.datasets import DatasetError
    from m2rl_trainer.eval.benchmarks import verifier_of
    from m2rl_trainer.eval.config import load_eval_config
    from m2rl_trainer.eval.runner import load_benchmark

    try:
        config = load_eval_config(args.config)
        report = {}
        for benchmark in config.benchmarks:
            prompts = load_benchmark(benchmark)
            report[benchmark.name] = {
                "format": benchmark.format,
                "verifier": verifier_of(benchmark),
                "prompts": len(prompts),
                "samples": benchmark.samples,
            }
    except (ConfigError, DatasetError) as error:
        print(f"{PROG} check: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"config": str(args.config), "benchmarks": report}, indent=2))
    return 0


def eval_main(argv: list[str]) -> int:
    """Evaluate one model of an eval config on all its benchmarks."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate model --model-index of an EvalSuite config on every benchmark. "
        f"`{PROG} check --config FILE` validates every benchmark without a model; "
        f"`{PROG} table FILE...` renders results as a Markdown table.",
    )
    parser.add_argument("--config", required=True, type=Path, help="eval.yaml (rendered by the operator)")
    parser.add_argument(
        "--model-index", required=True, type=int, help="which model (the Job's completion index)"
    )
    parser.add_argument(
        "--engine", choices=["vllm", "hf"], default="vllm", help="generation engine (default vllm)"
    )
    parser.add_argument("--server-url", help="vllm: use this running server instead of starting one")
    parser.add_argument(
        "--output", type=Path, help="write OUTPUT/MODEL/{results.json,BENCHMARK.samples.jsonl}"
    )
    parser.add_argument("--check", action="store_true", help="validate the config and datasets, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress

    from m2rl_trainer.config import ConfigError
    from m2rl_trainer.data.datasets import DatasetError
    from m2rl_trainer.eval.config import load_eval_config
    from m2rl_trainer.eval.runner import EvalError, RunOptions, evaluate_model, load_benchmarks
    from m2rl_trainer.eval.table import render_table
    from m2rl_trainer.rollout.base import RolloutError
    from m2rl_trainer.utils.results import write_result

    try:
        config = load_eval_config(args.config)
        model = config.model(args.model_index)
        if args.server_url and args.engine != "vllm":
            raise ConfigError("--server-url needs --engine vllm")
        if args.check:
            counts = {name: len(prompts) for name, prompts in load_benchmarks(config).items()}
            print(json.dumps({"config": str(args.config), "model": model.name, "prompts": counts}))
            return 0
        options = RunOptions(engine=args.engine, server_url=args.server_url, output_dir=args.output)
        result = evaluate_model(config, args.model_index, options)
    except (ConfigError, DatasetError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except (EvalError, RolloutError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    try:
        cells = [r.summary() for r in result.results]
        message = termination_result(result.model, cells)
    except ValueError as error:  # too many cells for 4096 bytes; results.json has them all
        print(f"{PROG}: cannot report to the operator: {error}", file=sys.stderr)
        return 1
    write_result(message)  # the operator fills the EvalSuite's results table from this
    print(render_table([{"model": result.model, "results": cells}]), end="")
    return 0


def termination_result(model: str, cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary for the termination message: {"model": name, "cells": [[prompts, value, ...]]}.

    Positional, to fit the API's largest suite (32 benchmarks x 8 metrics) in 4096 bytes: one row
    per benchmark in the suite's order, its metric values in the benchmark's `metrics` order (the
    operator renders eval.yaml from the spec in that order and reads the row back the same way).
    Values are rounded to 6 decimals, fewer (4, then 3) only when the message would not fit.
    """
    from m2rl_trainer.utils.results import encode_result

    for digits in (6, 4, 3):
        rows = [[cell["prompts"], *(round(v, digits) for v in cell["metrics"].values())] for cell in cells]
        result = {"model": model, "cells": rows}
        try:
            encode_result(result)
        except ValueError:
            continue
        return result
    encode_result(result)  # raises, with the size in the message
    raise AssertionError("unreachable")


def table_main(argv: list[str]) -> int:
    """Print a Markdown table of several models' results."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} table", description="Markdown table of m2rl-eval results (models x benchmark metrics)."
    )
    parser.add_argument("results", nargs="+", type=Path, help="results.json files or --output directories")
    parser.add_argument("--digits", type=int, default=3, help="decimals shown (default 3)")
    args = parser.parse_args(argv)

    from m2rl_trainer.eval.table import load_results, render_table

    try:
        results = load_results(args.results)
    except ValueError as error:
        print(f"{PROG} table: {error}", file=sys.stderr)
        return 2
    if not results:
        print(f"{PROG} table: no results.json found in {', '.join(map(str, args.results))}", file=sys.stderr)
        return 2
    print(render_table(results, args.digits), end="")
    return 0
