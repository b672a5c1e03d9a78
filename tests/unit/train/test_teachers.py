"""MT-OPD teachers loaded by the trainer: a teacher must share the student's tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from m2rl_trainer.config import ConfigError, TeacherConfig
from m2rl_trainer.models.tiny import TinyModelSpec, build_tiny_model, default_corpus
from m2rl_trainer.train.teachers import Teachers

OPTIONS = {"device": "cpu", "dtype": torch.float32, "micro_batch_size": 4, "pad_id": 0}


def test_a_teacher_with_another_tokenizer_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Same size and architecture, merges learned from other text: its forward pass would run on the
    # student's ids without any error, scoring other tokens than the student sampled.
    other = build_tiny_model(tmp_path / "other", TinyModelSpec(seed=0), corpus=default_corpus(1, lines=500))
    student = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert len(AutoTokenizer.from_pretrained(other)) <= len(student)  # loads; nothing else would notice
    Teachers([TeacherConfig(domains=["math"], model=str(tiny_model_dir))], tokenizer=student, **OPTIONS)
    with pytest.raises(ConfigError, match=r"algorithm.teachers\[1\].model: the tokenizer of .*other differs"):
        Teachers(
            [
                TeacherConfig(domains=["math"], model=str(tiny_model_dir)),
                TeacherConfig(domains=["if"], model=str(other)),
            ],
            tokenizer=student,
            **OPTIONS,
        )
