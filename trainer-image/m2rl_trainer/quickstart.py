"""The quickstart's data and starting models: `python -m m2rl_trainer.quickstart prepare --data-root R`.

Writes what examples/quickstart/ reads through `pvc://m2rl-data/quickstart/...` (with `m2rl run
--data-root R`, pvc://CLAIM/PATH is R/CLAIM/PATH; on a cluster, run it in a pod that mounts the
claim):

    m2rl-data/quickstart/sft/{math,code,science,if}.jsonl        warm-up prompts and target answers
    m2rl-data/quickstart/train/{math,code,science,if}.jsonl      RL prompts (other prompts)
    m2rl-data/quickstart/heldout/{math,code,science,if}.jsonl    evaluation prompts, never trained on
    m2rl-data/quickstart/models/base    the tiny Qwen2-style model, seeded, tokenizer from the data
    m2rl-data/quickstart/models/sft     base after a short supervised warm-up on all four domains

The warm-up ("SFT") teaches the answer formats and gets some answers right, so every GRPO group
has rewards to compare; every RLVRRun of the quickstart starts from it, and the merges take their
task vectors against it. Its rows per domain differ (`sft_rows`): each domain is left about as far
from solved as the others, so RL has room on all four. Everything is deterministic: the same
options give byte-identical files, and a second call with the same options does nothing. The
four domains are described in m2rl_trainer.data.toy_tasks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from m2rl_trainer.data.toy_tasks import DOMAINS, curriculum_corpus, curriculum_splits, write_jsonl

PREFIX = Path("m2rl-data") / "quickstart"
STAMP = "quickstart.json"


@dataclass(frozen=True)
class PrepareOptions:
    """What `prepare` makes; the defaults are the quickstart's (the test suite uses smaller ones)."""

    seed: int = 0  # data, model initialisation and warm-up order
    train: int = 600  # RL prompts per domain
    heldout: int = 256  # evaluation prompts per domain: a standard error of about 3 points
    # Warm-up rows per domain (math, code, science, if): few, so that the warm-up leaves every
    # domain partly solved (with hundreds of rows it solves the formats outright).
    sft_rows: tuple[int, int, int, int] = (40, 24, 50, 60)
    sft_steps: int = 300  # warm-up steps of 32 examples drawn from all sft rows
    sft_learning_rate: float = 3e-3


def _log(message: str) -> None:
    print(f"[quickstart] {message}", flush=True)


def prepare(data_root: Path, options: PrepareOptions = PrepareOptions()) -> Path:
    """Write the datasets and the two models under DATA_ROOT/m2rl-data/quickstart; returns that folder.

    Idempotent: the folder's stamp records the options, and matching options skip the work. Other
    options rebuild everything (into a temporary sibling, renamed at the end: never half a folder).
    """
    import torch

    from m2rl_trainer.models.tiny import TinyModelSpec, build_tiny_model, parameter_count
    from m2rl_trainer.train.sft import supervised_warmup

    # A 128-wide model's matmuls are too small to share: on 2 busy cores two threads took 8x the
    # CPU-seconds of one for the same warm-up steps (measured here).
    torch.set_num_threads(1)

    root = data_root / PREFIX
    wanted = asdict(options)
    stamp = root / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()).get("options") == wanted:
        _log(f"{root}: already prepared with these options, nothing to do")
        return root
    started = time.process_time()
    tmp = root.with_name(f".{root.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    splits = {
        d: curriculum_splits(d, n_sft, options.train, options.heldout, options.seed)
        for d, n_sft in zip(DOMAINS, options.sft_rows, strict=True)
    }
    for domain, (sft, train, heldout) in splits.items():
        write_jsonl(sft, tmp / "sft" / f"{domain}.jsonl")
        write_jsonl(train, tmp / "train" / f"{domain}.jsonl")
        write_jsonl(heldout, tmp / "heldout" / f"{domain}.jsonl")
    _log(f"datasets: {options.train} RL + {options.heldout} held-out prompts per domain, "
         f"warm-up rows {dict(zip(DOMAINS, options.sft_rows, strict=True))}")  # fmt: skip
    rows = [row for sft, _, _ in splits.values() for row in sft]
    corpus = curriculum_corpus([row for split in splits.values() for row in [*split[0], *split[1]]])
    base = build_tiny_model(tmp / "models" / "base", TinyModelSpec(seed=options.seed), corpus)
    _log(f"tiny model: {parameter_count(base):,} parameters (seed {options.seed}, no download)")
    pairs = [(row["prompt"], row["completion"]) for row in rows]
    supervised_warmup(base, tmp / "models" / "sft", pairs, steps=options.sft_steps,
                      learning_rate=options.sft_learning_rate, seed=options.seed)  # fmt: skip
    cpu = time.process_time() - started
    _log(f"supervised warm-up: {options.sft_steps} steps of 32 examples ({cpu:.0f} CPU-seconds in all)")
    (tmp / STAMP).write_text(json.dumps({"options": wanted, "cpu_seconds": round(cpu, 1)}, indent=2) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(root)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2rl_trainer.quickstart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the quickstart's datasets and models")
    p.add_argument("--data-root", type=Path, required=True, help="the folder that stands for the volumes")
    defaults = PrepareOptions()
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--train", type=int, default=defaults.train, help="RL prompts per domain")
    p.add_argument("--heldout", type=int, default=defaults.heldout, help="evaluation prompts per domain")
    p.add_argument("--sft-steps", type=int, default=defaults.sft_steps, help="supervised warm-up steps")
    p.add_argument("--sft-rows", type=lambda text: tuple(int(x) for x in text.split(",")),
                   default=defaults.sft_rows, help="warm-up rows of math,code,science,if")  # fmt: skip
    args = parser.parse_args(argv)
    if len(args.sft_rows) != len(DOMAINS):
        parser.error(f"--sft-rows: give {len(DOMAINS)} numbers ({','.join(DOMAINS)})")
    options = PrepareOptions(seed=args.seed, train=args.train, heldout=args.heldout,
                             sft_rows=args.sft_rows, sft_steps=args.sft_steps)  # fmt: skip
    try:
        prepare(args.data_root, options)
    except ValueError as error:  # e.g. more prompts asked for than a domain has
        print(f"quickstart: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
