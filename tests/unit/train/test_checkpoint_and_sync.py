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
