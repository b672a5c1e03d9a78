"""Checkpoint files (atomic, checksummed) and the weight-sync checks (pure parts)."""

from pathlib import Path

import pytest

from m2rl_trainer.train import checkpoint as ckpt
from m2rl_trainer.train.weight_sync import (
    WeightSyncError,
    check_replicas,
)


def _fake_checkpoint(root: Path, step: int) -> Path:
    tmp = root / (ckpt.step_dir_name(step) + ".tmp")
    (tmp / "model").mkdir(parents=True)
    (tmp / "model" / "model.safetensors").write_bytes(b"weights" * 100)
    (tmp / "trainer_state.json").write_text(f'{{"step": {step}}}')
    final = root / ckpt.step_dir_name(step)
    ckpt.finalize(tmp, final)
    return final


def test_latest_ignores_incomplete_and_prune_keeps_newest(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _fake_checkpoint(tmp_path, step)
    (tmp_path / "step-000040.tmp").mkdir()  # a crash mid-write
    (tmp_path / "step-000050").mkdir()  # no checksums.json: never finalised
    assert ckpt.latest_checkpoint(tmp_path) == tmp_path / "step-000030"
    ckpt.prune(tmp_path, keep=2)
    assert [step for step, _ in ckpt.list_checkpoints(tmp_path)] == [20, 30]
    assert not (tmp_path / "step-000040.tmp").exists()


def test_checksums_catch_truncated_and_missing_files(tmp_path: Path) -> None:
    folder = _fake_checkpoint(tmp_path, 1)
    ckpt.verify_checksums(folder)
    weights = folder / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors: checksum mismatch"):
        ckpt.verify_checksums(folder)
    weights.unlink()
    with pytest.raises(ckpt.CheckpointError, match="missing"):
        ckpt.verify_checksums(folder)


def test_check_replicas_names_each_stale_replica() -> None:
    check_replicas({"http://a": "3"}, {"http://a": -2.001}, 3, expected=-2.0, tolerance=0.02)
    with pytest.raises(WeightSyncError) as error:
        check_replicas(
            {"http://a": "3", "http://b": "2"},
            {"http://a": -2.5, "http://b": -2.0},
            3,
            expected=-2.0,
            tolerance=0.02,
        )
    message = str(error.value)
    assert "http://b: weight version '2', expected 3" in message
    assert "http://a: probe logprob -2.5000" in message
    with pytest.raises(WeightSyncError, match="probe logprob nan"):
        check_replicas({"http://a": "3"}, {"http://a": float("nan")}, 3, expected=-2.0, tolerance=0.02)


RANKS_SCRIPT = """
import json, sys
from pathlib import Path
import torch.distributed as dist
from m2rl_trainer.train import checkpoint as ckpt
rank, port, folder = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
hashed = []
real = ckpt._sha256
ckpt._sha256 = lambda path: hashed.append(path.name) or real(path)
verdicts = []
for corrupt in (False, True):
    if corrupt and rank == 0:
        (folder / "trainer_state.json").write_text("changed")
    dist.barrier()
    try:
        ckpt.verify_once(folder, is_main=rank == 0)
        verdicts.append("ok")
    except ckpt.CheckpointError as error:
        verdicts.append(str(error))
dist.barrier()
dist.destroy_process_group()  # a gloo group left to interpreter exit can abort ("terminate called ...")
print(json.dumps({"hashed": hashed, "verdicts": verdicts}))
"""


def test_only_rank_zero_hashes_and_every_rank_gets_its_verdict(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    from m2rl_trainer.utils.processes import free_port

    folder = _fake_checkpoint(tmp_path, 10)
    port, env = free_port(), {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", RANKS_SCRIPT, str(rank), str(port), str(folder)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for rank in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    rank0, rank1 = (json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert sorted(rank0["hashed"]) == sorted(["model.safetensors", "trainer_state.json"] * 2)
    assert rank1["hashed"] == []  # the shared volume is read once, by rank 0
    for verdicts in (rank0["verdicts"], rank1["verdicts"]):
        assert verdicts[0] == "ok"
        assert "trainer_state.json: checksum mismatch" in verdicts[1]  # every rank stops, naming the file
