"""Command lines of the trainer image: `m2rl-train` (and `m2rl-train data ...`) and `m2rl-tiny-model`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def train_main(argv: list[str] | None = None) -> int:
    """`m2rl-train --config FILE`: run (or resume) a GRPO run; launch with torchrun for several ranks."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["data"]:
        return data_main(argv[1:])
    parser = argparse.ArgumentParser(prog="m2rl-train", description=train_main.__doc__)
    parser.add_argument("--config", required=True, type=Path, help="trainer config (YAML or JSON)")
    parser.add_argument("--check", action="store_true", help="validate the config and datasets, then exit")
    args = parser.parse_args(argv)

    from m2rl_trainer.config import ConfigError, load_config
    from m2rl_trainer.data.datasets import DatasetError, load_domain

    try:
        config = load_config(args.config)
        # Data errors before any GPU work; caps after the run's seeded shuffle, as the trainer loads them.
        counts = {d.name: len(load_domain(d, config.algorithm.seed)) for d in config.data.domains}
    except (ConfigError, DatasetError) as error:
        print(f"m2rl-train: {error}", file=sys.stderr)
        return 2
    if args.check:
        print(json.dumps({"config": str(args.config), "prompts": counts}))
        return 0

    from m2rl_trainer.train.loop import train

    try:
        record = train(config)
    # found once the tokenizer and models are loaded (prompts over the limit, a teacher's tokenizer)
    except (ConfigError, DatasetError) as error:
        print(f"m2rl-train: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"final_step": record.get("step"), "accuracy": record.get("accuracy")}))
    return 0


def data_main(argv: list[str]) -> int:
    """`m2rl-train data inspect|split FILE`: look at and split a Nemotron RL blend file (format nemotron)."""
    parser = argparse.ArgumentParser(prog="m2rl-train data", description=data_main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser(
        "inspect", help="rows per `dataset` value, study domain and verifier; fields seen"
    )
    inspect.add_argument("file", type=Path)
    split = sub.add_parser(
        "split", help="write OUT/<domain>.jsonl per study domain, rows unchanged (as M2RL's process_rl_data)"
    )
    split.add_argument("file", type=Path)
    split.add_argument("--out", required=True, type=Path, help="output folder")
    args = parser.parse_args(argv)

    from m2rl_trainer.data import nemotron
    from m2rl_trainer.data.datasets import DatasetError

    try:
        if args.command == "inspect":
            print(json.dumps(nemotron.inspect(args.file), indent=2))
        else:
            counts = nemotron.split(args.file, args.out)
            print(json.dumps({"out": str(args.out), "rows": counts}))
    except (DatasetError, OSError) as error:
        print(f"m2rl-train data: {error}", file=sys.stderr)
        return 2
    return 0


def tiny_model_main(argv: list[str] | None = None) -> int:
    """`m2rl-tiny-model OUT`: build the project's tiny Qwen2-style model (no download)."""
    parser = argparse.ArgumentParser(prog="m2rl-tiny-model", description=tiny_model_main.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size", choices=["tiny", "small"], default="tiny", help="tiny: ~0.35M, small: ~3M params"
    )
    args = parser.parse_args(argv)

    from m2rl_trainer.models.tiny import SMALL, TinyModelSpec, build_tiny_model, parameter_count

    spec = (
        TinyModelSpec(seed=args.seed)
        if args.size == "tiny"
        else SMALL.__class__(**{**SMALL.__dict__, "seed": args.seed})
    )
    path = build_tiny_model(args.out, spec)
    print(f"{path}: {parameter_count(path):,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
