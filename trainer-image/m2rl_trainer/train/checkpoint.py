"""Checkpoints: a Hugging Face model folder (what MergeJob and EvalSuite read) plus everything an
exact resume needs (DeepSpeed optimiser and scheduler state, RNG states, data position, step).

Layout of `<dir>/step-000050/`:
    model/                config, safetensors, tokenizer (rank 0)
    deepspeed/            engine.save_checkpoint (optimiser partitions of every rank, LR scheduler)
    rng/rank-<r>.pt       python, numpy and torch RNG states of each rank
    trainer_state.json    step, mixer state, metrics of the last step, config
    checksums.json        sha256 of every file above (written last)
It is written as `step-000050.tmp` and renamed, so a crash leaves either a whole checkpoint or a
`.tmp` folder that is ignored and removed; loading verifies every checksum (rank 0 reads each file
once and tells the other ranks).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STEP_DIR = re.compile(r"^step-(\d{6,})$")


class CheckpointError(RuntimeError):
    """A checkpoint is incomplete or corrupt; the message names the file."""


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` (with checksums.json), oldest first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = STEP_DIR.match(child.name)
        if match and (child / "checksums.json").is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1][1] if checkpoints else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(folder: Path) -> None:
    sums = {
        str(path.relative_to(folder)): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "checksums.json"
    }
    (folder / "checksums.json").write_text(json.dumps(sums, indent=1, sort_keys=True))


def verify_checksums(folder: Path) -> None:
    """Raise CheckpointError naming the first missing or changed file."""
    try:
        sums: dict[str, str] = json.loads((folder / "checksums.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{folder}/checksums.json: unreadable ({error})") from error
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: listed in checksums.json but missing")
        if _sha256(path) != expected:
            raise CheckpointError(f"{path}: checksum mismatch (file changed or truncated)")


def verify_once(folder: Path, is_main: bool) -> None:
    """`verify_checksums` on rank 0 only, its verdict raised on every rank (collective).

    The checkpoint lives on one shared volume: one rank hashing every file is enough, where each
    rank hashing all of them would read the whole checkpoint `world_size` times at every resume.
    """
    from m2rl_trainer.train.collectives import all_gather_objects

    problem = None
    if is_main:
        try:
            verify_checksums(folder)
        except CheckpointError as error:
            problem = str(error)
    problem = all_gather_objects(problem)[0]  # rank 0's verdict
    if problem is not None:
        raise CheckpointError(problem)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def prune(root: Path, keep: int) -> None:
    """Remove all but the newest `keep` checkpoints (0: keep all) and stale `.tmp` folders."""
    for child in root.glob("step-*.tmp"):
        shutil.rmtree(child, ignore_errors=True)
    if keep <= 0:
        return
    for _, path in list_checkpoints(root)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def finalize(tmp: Path, final: Path) -> None:
    """Checksums, then an atomic rename (same file system)."""
    write_checksums(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
